"""The data the core decides on: endpoints, clusters, identities and routes, as records.

The core never sees adaptor classes; it sees what the fixtures say about them.  Records
are frozen and validate in their constructors, so a record that exists is a valid one.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import attrs

__all__ = [
    "ClusterRecord",
    "EndpointRecord",
    "Identity",
    "OpenAIRoute",
]


class OpenAIRoute(enum.Enum):
    """The OpenAI operations the gateway forwards; the value is the seed's spelling."""

    CHAT_COMPLETIONS = "chat/completions"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"

    @classmethod
    def from_path(cls, path: str) -> OpenAIRoute | None:
        try:
            return cls(path.strip("/"))
        except ValueError:
            return None


def _strings(value: Iterable[str] | None) -> tuple[str, ...]:
    return tuple(str(v) for v in (value or ()))


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


@attrs.frozen(kw_only=True)
class EndpointRecord:
    """One fixture entry of `endpoints.json`: a model served by one adaptor on one cluster."""

    id: str = attrs.field(converter=str)
    endpoint_slug: str
    cluster: str
    framework: str
    model: str
    endpoint_adapter: str
    allowed_globus_groups: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    allowed_domains: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    config: Mapping[str, Any] = attrs.field(
        factory=dict, converter=_frozen_mapping, eq=False, hash=False
    )


@attrs.frozen(kw_only=True)
class ClusterRecord:
    """One fixture entry of `clusters.json`: where endpoints run and what they accept."""

    id: str = attrs.field(converter=str)
    cluster_name: str
    cluster_adapter: str
    frameworks: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    openai_endpoints: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    allowed_globus_groups: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    allowed_domains: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    config: Mapping[str, Any] = attrs.field(
        factory=dict, converter=_frozen_mapping, eq=False, hash=False
    )

    def accepts(self, route: OpenAIRoute) -> bool:
        return route.value in self.openai_endpoints


def _group_set(value: Iterable[str]) -> frozenset[str]:
    return frozenset(value)


def _domain_of(username: str) -> str | None:
    _, at, domain = username.rpartition("@")
    return domain.lower() if at and domain else None


@attrs.frozen(kw_only=True)
class Identity:
    """Who is calling, as an identity provider vouched for it (never the token itself)."""

    username: str
    groups: frozenset[str] = attrs.field(factory=frozenset, converter=_group_set)
    provider: str = "static"
    subject: str | None = None
    # When the provider stops vouching for this identity (epoch seconds); None: no expiry.
    expires_at: float | None = None

    @property
    def domain(self) -> str | None:
        """The part after `@` of the username, lower-cased; None when there is none."""
        return _domain_of(self.username)
