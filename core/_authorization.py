"""Who may use what: the group and domain rules, at cluster level and at endpoint level.

A rule list that is empty restricts nothing.  A non-empty `allowed_globus_groups` needs
at least one of the caller's groups; a non-empty `allowed_domains` needs the caller's
domain (after the last `@` of the username) to be listed, so a caller without a domain is
refused only where domains are restricted.  The cluster is checked first: an endpoint
cannot loosen what its cluster forbids.

Domains are compared normalised: lower-case, one trailing dot dropped, and non-ASCII
labels turned into their IDNA A-label (`bücher.example` -> `xn--bcher-kva.example`), so
a name matches only the name it really is.  A domain that is not a valid IDNA name (a
confusable that IDNA 2008 refuses, an empty label) matches nothing.  Matching is exact;
an entry `*.example.org` explicitly allows every subdomain of example.org (but not
example.org itself, which is listed on its own if wanted).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import attrs
import idna

from core._records import ClusterRecord, EndpointRecord, Identity

__all__ = [
    "Allowed",
    "Denied",
    "Level",
    "Rule",
    "authorize",
    "check_rules",
    "domain_allowed",
    "normalise_domain",
]


class Rule(enum.Enum):
    GROUP = "group"
    DOMAIN = "domain"


class Level(enum.Enum):
    CLUSTER = "cluster"
    ENDPOINT = "endpoint"


@attrs.frozen
class Allowed:
    pass


@attrs.frozen
class Denied:
    """Which rule refused, where; never the allowed values, which are not the caller's to see."""

    level: Level
    rule: Rule
    name: str

    @property
    def message(self) -> str:
        what = "group membership" if self.rule is Rule.GROUP else "identity domain"
        return f"Permission denied: {self.level.value} '{self.name}' is restricted by {what}."


Decision = Allowed | Denied


_LABEL_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


def normalise_domain(domain: str | None) -> str | None:
    """The domain as compared: lower-case ASCII (IDNA A-labels); None if it is no name."""
    if domain is None:
        return None
    name = domain.strip().lower()
    if name.endswith("."):
        name = name[:-1]
    if not name:
        return None
    if name.isascii():
        labels = name.split(".")
        if any(not label or not set(label) <= _LABEL_CHARACTERS for label in labels):
            return None
        return name
    try:
        return idna.encode(name, uts46=False).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        return None


def domain_allowed(domain: str | None, allowed_domains: Sequence[str]) -> bool:
    """Exact match, or a strict subdomain of an explicit `*.parent` entry."""
    name = normalise_domain(domain)
    if name is None:
        return False
    for entry in allowed_domains:
        entry = entry.strip()
        if entry.startswith("*."):
            parent = normalise_domain(entry[2:])
            if parent is not None and name.endswith("." + parent):
                return True
        elif normalise_domain(entry) == name:
            return True
    return False


def check_rules(
    identity: Identity, allowed_groups: Sequence[str], allowed_domains: Sequence[str]
) -> Rule | None:
    """The first rule the identity breaks, or None when it passes both."""
    if allowed_groups and identity.groups.isdisjoint(allowed_groups):
        return Rule.GROUP
    if allowed_domains and not domain_allowed(identity.domain, allowed_domains):
        return Rule.DOMAIN
    return None


def authorize(identity: Identity, cluster: ClusterRecord, endpoint: EndpointRecord) -> Decision:
    """Allowed only when the identity passes the cluster's rules and then the endpoint's."""
    broken = check_rules(identity, cluster.allowed_globus_groups, cluster.allowed_domains)
    if broken is not None:
        return Denied(Level.CLUSTER, broken, cluster.cluster_name)
    broken = check_rules(identity, endpoint.allowed_globus_groups, endpoint.allowed_domains)
    if broken is not None:
        return Denied(Level.ENDPOINT, broken, endpoint.endpoint_slug)
    return Allowed()


def may_use_cluster(identity: Identity, cluster: ClusterRecord) -> Denied | None:
    broken = check_rules(identity, cluster.allowed_globus_groups, cluster.allowed_domains)
    return None if broken is None else Denied(Level.CLUSTER, broken, cluster.cluster_name)
