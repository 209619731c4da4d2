"""Who may use what: the group and domain rules, at cluster level and at endpoint level.

A rule list that is empty restricts nothing.  A non-empty `allowed_globus_groups` needs
at least one of the caller's groups; a non-empty `allowed_domains` needs the caller's
domain (after the `@` of the username, compared case-insensitively) to be listed, so a
caller without a domain is refused only where domains are restricted.  The cluster is
checked first: an endpoint cannot loosen what its cluster forbids.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import attrs

from core._records import ClusterRecord, EndpointRecord, Identity

__all__ = ["Allowed", "Denied", "Level", "Rule", "authorize", "check_rules"]


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


def check_rules(
    identity: Identity, allowed_groups: Sequence[str], allowed_domains: Sequence[str]
) -> Rule | None:
    """The first rule the identity breaks, or None when it passes both."""
    if allowed_groups and identity.groups.isdisjoint(allowed_groups):
        return Rule.GROUP
    if allowed_domains:
        domain = identity.domain
        if domain is None or domain not in {d.strip().lower() for d in allowed_domains}:
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
