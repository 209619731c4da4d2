"""What the status page shows, and to whom: pure decisions over data the edge gathers.

Theory of operation
-------------------
The page is public.  Without a key a visitor sees the clusters that carry no group or
domain rule and, on them, the endpoints that carry none either: a restricted model is
never named to a stranger.  With a key the caller sees exactly what they may use (the
two-level rules of `usable_endpoints`), plus their own usage and what is left of their
per-user token quota on each model.

The edge hands in what it read: each model's state from the cluster status cache, the
request log's recent finished requests as `Sample`s (durations already taken), the
caller's usage rows and what their quota counters hold.  This module turns them into the
answer: per endpoint, its state and its figures (median latency, median time to first
token of streams, output tokens per second), and for a caller their usage and remaining
quota.  No clock is read here: the window and every duration arrive as numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from core._balance import ModelState
from core._catalog import Catalog
from core._records import EndpointRecord, Identity
from core._selection import usable_endpoints

__all__ = [
    "Figures",
    "Sample",
    "endpoint_figures",
    "public_endpoints",
    "remaining_tokens",
    "status_summary",
    "visible_endpoints",
]


def public_endpoints(catalog: Catalog) -> tuple[EndpointRecord, ...]:
    """The endpoints anyone may be shown: no group or domain rule on them or their cluster."""
    return tuple(
        e
        for e in catalog.endpoints
        if not (e.allowed_globus_groups or e.allowed_domains)
        and not (
            catalog.cluster_of(e).allowed_globus_groups or catalog.cluster_of(e).allowed_domains
        )
    )


def visible_endpoints(catalog: Catalog, identity: Identity | None) -> tuple[EndpointRecord, ...]:
    """What the page lists: the public endpoints to a visitor without a key, else what
    the caller may use."""
    return public_endpoints(catalog) if identity is None else usable_endpoints(catalog, identity)


def _seconds(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{attribute.name} must be a number of seconds >= 0, got {value!r}")


def _maybe_seconds(
    _: object, attribute: attrs.Attribute[float | None], value: float | None
) -> None:
    if value is not None and not value >= 0:
        raise ValueError(f"{attribute.name} must be a number of seconds >= 0, got {value!r}")


@attrs.frozen(kw_only=True)
class Sample:
    """One finished, successful request as the page counts it.

    `latency`: received to done; `first_token`: received to the first byte of a stream
    (None for an answer sent whole); `generating`: the seconds its output took (a
    stream's first byte to done, an answer's whole latency); `output_tokens`: what it
    generated, when known."""

    slug: str
    latency: float = attrs.field(validator=_seconds)
    first_token: float | None = attrs.field(default=None, validator=_maybe_seconds)
    generating: float = attrs.field(validator=_seconds)
    output_tokens: int | None = None


@attrs.frozen(kw_only=True)
class Figures:
    """One endpoint's recent figures; None where there is nothing to measure."""

    requests: int
    latency_p50: float | None
    first_token_p50: float | None
    output_tokens_per_second: float | None

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "latency_p50_seconds": _round(self.latency_p50),
            "first_token_p50_seconds": _round(self.first_token_p50),
            "output_tokens_per_second": _round(self.output_tokens_per_second, 1),
        }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _median(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def endpoint_figures(samples: Iterable[Sample]) -> dict[str, Figures]:
    """Per endpoint slug (case-folded), the figures of its samples.  Throughput is
    token-weighted: all output tokens over all the seconds spent generating them, among
    the requests that reported tokens."""
    by_slug: dict[str, list[Sample]] = {}
    for sample in samples:
        by_slug.setdefault(sample.slug.casefold(), []).append(sample)
    figures: dict[str, Figures] = {}
    for slug, group in by_slug.items():
        counted = [s for s in group if s.output_tokens is not None]
        tokens = sum(s.output_tokens or 0 for s in counted)
        seconds = sum(s.generating for s in counted)
        figures[slug] = Figures(
            requests=len(group),
            latency_p50=_median([s.latency for s in group]),
            first_token_p50=_median([s.first_token for s in group if s.first_token is not None]),
            output_tokens_per_second=tokens / seconds if counted and seconds > 0 else None,
        )
    return figures


def remaining_tokens(
    endpoint: EndpointRecord, capacity: int | None, used: int | None
) -> int | None:
    """What is left of the caller's tokens-per-minute on an endpoint: `capacity` is this
    gateway's part of `tpm_user` (None: quotas are not counted here, or the limit is
    off), `used` what the counter holds now (None: it could not be read)."""
    if capacity is None or used is None or endpoint.tpm_user == 0:
        return None
    return max(0, capacity - used)


_NO_USAGE: Mapping[str, int] = {
    "requests": 0,
    "prompt_tokens": 0,
    "completion_tokens": 0,
    "total_tokens": 0,
}
_NO_FIGURES = Figures(
    requests=0, latency_p50=None, first_token_p50=None, output_tokens_per_second=None
)


def status_summary(
    catalog: Catalog,
    endpoints: Sequence[EndpointRecord],
    *,
    states: Mapping[str, ModelState],
    figures: Mapping[str, Figures] | None,
    window_seconds: float,
    identity: Identity | None = None,
    usage: Mapping[str, Mapping[str, int]] | None = None,
    remaining: Mapping[str, int | None] | None = None,
    usage_since: str | None = None,
) -> dict[str, Any]:
    """The `GET /status/summary` answer.  `states` by slug (case-folded; missing means
    unknown); `figures` by slug, None when there is no request log; for a caller,
    `usage` by model name (`requests`, `total_tokens`, ...; None: no request log) and
    `remaining` by slug."""
    clusters: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        slug = endpoint.endpoint_slug.casefold()
        entry: dict[str, Any] = {
            "model": endpoint.model,
            "framework": endpoint.framework,
            "endpoint_slug": endpoint.endpoint_slug,
            "state": states.get(slug, ModelState.UNKNOWN).value,
            "figures": None if figures is None else figures.get(slug, _NO_FIGURES).as_json(),
        }
        if identity is not None:
            entry["usage"] = None if usage is None else dict(usage.get(endpoint.model, _NO_USAGE))
            entry["tokens_per_minute_per_user"] = endpoint.tpm_user or None
            entry["remaining_tokens_per_minute"] = (remaining or {}).get(slug)
        cluster = clusters.setdefault(endpoint.cluster, {"name": endpoint.cluster, "models": []})
        cluster["models"].append(entry)
    order = {c.cluster_name: i for i, c in enumerate(catalog.clusters)}
    return {
        "object": "status",
        "window_seconds": window_seconds,
        "request_log": figures is not None,
        "user": None if identity is None else identity.username,
        "usage_since": None if identity is None else usage_since,
        "clusters": sorted(clusters.values(), key=lambda c: order.get(c["name"], len(order))),
    }
