"""Choosing among several endpoints of one model, and when a failed call may try another.

Theory of operation
-------------------
A model may be served by several endpoints (on several clusters, or URLs).  The request
machine first finds those the caller may use (both levels of rules, as selection always
did: `permitted_candidates`), then asks the driver how they are doing (`AssessHealth`)
and hears back `HealthAssessed`: for each, the calls it has outstanding (the driver's
count), what its circuit breaker would do now (`core._breaker`'s view) and the model's
state in its cluster's cached job report.  `choose` is the pure decision: among the
candidates that are neither refused by their breaker nor reported stopped or queued, the
one with the fewest outstanding calls (ties: fixture order).  When none is left, the
answer is an immediate 503 with `Retry-After`, saying each endpoint's state.

A call that failed before any byte went to the client (no connection, reset, no answer
in time, or the backend's own 502/503/504: `is_retriable`) may be tried once more on
another candidate, chosen the same way among those left; a stream that has started is
never tried again.  The same classification tells the breaker which calls failed.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence

import attrs

from core._authorization import Allowed, authorize
from core._breaker import BreakerState
from core._catalog import Catalog
from core._errors import BackendError
from core._events import AdaptorFailed, AdaptorReturned
from core._records import EndpointRecord, Identity, OpenAIRoute, checked, non_empty

__all__ = [
    "RETRIABLE_STATUSES",
    "AssessHealth",
    "EndpointHealth",
    "HealthAssessed",
    "ModelState",
    "choose",
    "is_retriable",
    "model_state",
    "model_states",
    "permitted_candidates",
]

# The backend's own answers that say "not me, not now": a proxy that could not reach it,
# a server that is unavailable, a time-out before the first byte.
RETRIABLE_STATUSES = frozenset({502, 503, 504})


class ModelState(enum.Enum):
    """A model's state in its cluster's job report; UNKNOWN when there is no fresh report
    or the report does not list it (then the backend itself is asked)."""

    RUNNING = "running"
    QUEUED = "queued"
    STOPPED = "stopped"
    UNKNOWN = "unknown"


_REFUSING_STATES = frozenset({ModelState.QUEUED, ModelState.STOPPED})


def model_states(jobs: Mapping[str, object] | None) -> dict[str, ModelState]:
    """Every model a cluster's job report (the seed's `Jobs` as a dict) lists, by its
    case-folded name: running wins over queued, queued over stopped."""
    states: dict[str, ModelState] = {}
    if jobs is None:
        return states
    for name, state in (
        ("stopped", ModelState.STOPPED),
        ("queued", ModelState.QUEUED),
        ("running", ModelState.RUNNING),
    ):
        entries = jobs.get(name)
        if not isinstance(entries, list):
            continue
        for job in entries:
            if isinstance(job, Mapping):
                states[str(job.get("Models", "")).casefold()] = state
    return states


def model_state(jobs: Mapping[str, object] | None, model: str) -> ModelState:
    """Where `model` appears in a cluster's job report; not listed, or no report: UNKNOWN
    (then the backend itself is asked)."""
    return model_states(jobs).get(model.casefold(), ModelState.UNKNOWN)


def is_retriable(event: AdaptorFailed | AdaptorReturned) -> bool:
    """Whether a call's outcome says its backend could not serve it (no connection, no
    answer in time, 502/503/504): such a call may go to another endpoint, and it counts
    as a failure for the endpoint's breaker."""
    if isinstance(event, AdaptorFailed):
        return True
    return event.error_code in RETRIABLE_STATUSES


# -- the effect and the event ---------------------------------------------------------


def _slugs(value: Iterable[str]) -> tuple[str, ...]:
    slugs = tuple(value)
    if not slugs or not all(isinstance(s, str) and s for s in slugs):
        raise ValueError("AssessHealth needs at least one endpoint slug, each non-empty")
    return slugs


@attrs.frozen(kw_only=True)
class AssessHealth:
    """Report how these endpoints are doing now, as `HealthAssessed`."""

    slugs: tuple[str, ...] = attrs.field(converter=_slugs)


def _health_fields(health: EndpointHealth) -> None:
    if health.outstanding < 0:
        raise ValueError("outstanding calls cannot be negative")
    if health.retry_after < 0:
        raise ValueError("retry_after cannot be negative")


@attrs.frozen(kw_only=True)
class EndpointHealth:
    """One endpoint as the driver sees it now.  `admits` and `retry_after` are the
    breaker's own view; `status_retry_after` is when the job report is read again."""

    slug: str
    outstanding: int = 0
    breaker: BreakerState = BreakerState.CLOSED
    admits: bool = True
    retry_after: int = 0
    model_state: ModelState = ModelState.UNKNOWN
    status_retry_after: int = 1

    __attrs_post_init__ = checked(
        non_empty("slug"),
        _health_fields,
        slug=str,
        outstanding=int,
        breaker=BreakerState,
        admits=bool,
        retry_after=int,
        model_state=ModelState,
        status_retry_after=int,
    )


def _health_tuple(value: Iterable[EndpointHealth]) -> tuple[EndpointHealth, ...]:
    endpoints = tuple(value)
    if not all(isinstance(e, EndpointHealth) for e in endpoints):
        raise TypeError("HealthAssessed holds EndpointHealth entries only")
    return endpoints


def _not_negative(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    """`attrs.validators.ge(0)`, word for word, as a plain function: the driver makes a
    `HealthAssessed` on every request, and the library's validator is a callable object
    whose call goes through its `__call__` and an operator lookup."""
    if not value >= 0:
        raise ValueError(f"'{attribute.name}' must be >= 0: {value}")


@attrs.frozen(kw_only=True)
class HealthAssessed:
    """The driver's answer to `AssessHealth`: one entry per endpoint it was asked about.

    `turn` is any counter the driver advances per choice: among equally loaded
    candidates it rotates which goes first, so an idle gateway still spreads its calls
    (and a breaker waiting for its probe gets one)."""

    endpoints: tuple[EndpointHealth, ...] = attrs.field(converter=_health_tuple)
    turn: int = attrs.field(default=0, validator=_not_negative)

    def of(self, slug: str) -> EndpointHealth:
        """The entry for `slug`; an endpoint the driver did not report counts as idle
        and healthy (the driver knows nothing against it)."""
        wanted = slug.lower()
        for health in self.endpoints:
            if health.slug.lower() == wanted:
                return health
        return EndpointHealth(slug=slug)


# -- the decisions --------------------------------------------------------------------


def permitted_candidates(
    catalog: Catalog,
    identity: Identity,
    selected: EndpointRecord,
    route: OpenAIRoute,
    *,
    pinned: bool,
) -> tuple[EndpointRecord, ...]:
    """Every endpoint that may serve this request: the one selection found and, when the
    route names no cluster, every other endpoint of the same model whose cluster serves
    the route and whose rules (cluster's, then endpoint's) the caller passes."""
    if pinned:
        return (selected,)
    return tuple(
        e
        for e in catalog.serving(selected.model)
        if e.endpoint_slug == selected.endpoint_slug
        or (
            catalog.cluster_of(e).accepts(route)
            and isinstance(authorize(identity, catalog.cluster_of(e), e), Allowed)
        )
    )


def _refusal_reason(endpoint: EndpointRecord, health: EndpointHealth) -> tuple[str, str, int]:
    """Why this endpoint takes no call now: (code, words, seconds until it might)."""
    where = f"on cluster '{endpoint.cluster}'"
    if health.model_state is ModelState.STOPPED:
        return "model_stopped", f"stopped {where}", health.status_retry_after
    if health.model_state is ModelState.QUEUED:
        return "model_queued", f"queued {where} (still starting)", health.status_retry_after
    state = health.breaker.value.replace("_", "-")
    words = (
        f"failing {where}: its circuit breaker is {state} after repeated failures, "
        f"retry in {health.retry_after}s"
    )
    return "circuit_open", words, health.retry_after


def choose(
    candidates: Sequence[EndpointRecord], health: HealthAssessed
) -> EndpointRecord | BackendError:
    """The permitted candidate with the fewest outstanding calls among those whose breaker
    admits a call and whose model is not reported stopped or queued (ties: the first at
    or after position `turn`, in fixture order, wrapping around); or, when there is none,
    the 503 (with `Retry-After`) that says each one's state.

    Only `candidates` are ever chosen, whatever else `health` holds: the caller's rules
    were applied when the candidates were found.
    """
    if not candidates:
        raise ValueError("choose needs at least one candidate")
    best: EndpointRecord | None = None
    best_rank = (0, 0)
    count = len(candidates)
    for position, endpoint in enumerate(candidates):
        entry = health.of(endpoint.endpoint_slug)
        if not entry.admits or entry.model_state in _REFUSING_STATES:
            continue
        rank = (entry.outstanding, (position - health.turn) % count)
        if best is None or rank < best_rank:
            best, best_rank = endpoint, rank
    if best is not None:
        return best
    reasons = [_refusal_reason(e, health.of(e.endpoint_slug)) for e in candidates]
    codes = {code for code, _, _ in reasons}
    retry_after = max(1, min(seconds for _, _, seconds in reasons))
    model = candidates[0].model
    return BackendError(
        f"Model '{model}' is not available right now: "
        + "; ".join(words for _, words, _ in reasons)
        + f". Try again in {retry_after}s.",
        status=503,
        code=codes.pop() if len(codes) == 1 else "model_unavailable",
        headers=(("retry-after", str(retry_after)),),
    )
