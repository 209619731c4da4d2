"""The driver's side of endpoint health: counts, clocks and cached job reports.

The decisions are the core's (`core._breaker` opens and closes a breaker,
`core._balance` chooses an endpoint and says when a call may go elsewhere); this module
keeps what they decide on, because counting and reading clocks are IO's business:

- each endpoint's outstanding calls (a stream counts until it closes),
- each endpoint's `Breaker`, fed the outcome of every call with a monotonic clock reading,
- each cluster's `get_jobs` report, cached for `status_ttl` seconds and, while
  `refreshing()` runs (the served app runs it), read again in the background before it
  goes stale, so no request ever waits for a status page.

With a `share` (`frontends.status_share`: Redis for replicas, a folder for the workers
of one `serve`), a report is read by one process at a time and shared with the others,
so N processes do not read a cluster N times per TTL.

The cached report is the one way the gateway reads cluster status: the jobs route
(`/resource_server/{cluster}/jobs`) reads through it too.  A report older than three
TTLs (the refresher stopped, or never ran) is not trusted for admission: the model is
then UNKNOWN and the backend itself is asked.

Everything here runs on the event loop without blocking it, under asyncio and trio
(anyio only), and never raises into a request.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from contextlib import asynccontextmanager
from typing import Any

import anyio
import attrs

from adaptors.clusters.cluster import BaseCluster, GetJobsResponse
from core import (
    Abandoned,
    AdaptorFailed,
    AdaptorReturned,
    AssessHealth,
    Breaker,
    BreakerPolicy,
    Catalog,
    Dispatched,
    EndpointHealth,
    Event,
    Failed,
    HealthAssessed,
    ModelState,
    Refused,
    StreamOpened,
    Succeeded,
    is_retriable,
    model_states,
    redact,
)
from frontends.status_share import Reading, StatusShare

__all__ = ["HealthBook", "HealthPolicy", "Lease"]

log = logging.getLogger("inference_gateway")

# A report this many TTLs old is no longer trusted to refuse a model.
_TRUSTED_TTLS = 3
# The states of a model in a job report that refuse it a call (`core._balance`'s).
_REFUSING = frozenset({ModelState.QUEUED, ModelState.STOPPED})


@attrs.frozen(kw_only=True)
class HealthPolicy:
    """The breaker's rule for every endpoint, and how long a cluster's job report is good.

    `refresh_status`: whether `refreshing()` reads the reports in the background (the
    served gateway does; an embedding program may leave it off and never touch a status
    page it did not ask for).  `share`: where the processes of one gateway share their
    readings (None: this process reads every cluster itself)."""

    breaker: BreakerPolicy = attrs.field(factory=BreakerPolicy)
    status_ttl: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    refresh_status: bool = False
    share: StatusShare | None = attrs.field(default=None, eq=False)


@attrs.frozen
class _Report:
    """One reading of a cluster's status: the answer (None if it failed) and when."""

    at: float
    states: dict[str, ModelState]  # by case-folded model name, read once per report
    answer: GetJobsResponse | None
    error: str | None = None
    fetched_at: float | None = None  # wall clock, as every process sharing it says


class _Endpoint:
    """What the book keeps of one endpoint, in one place: a request finds it with one
    look-up (its slug case-folded once), not one per dict (breakers, outstanding calls,
    the catalog's record) per step of its call."""

    __slots__ = ("breaker", "cluster", "model", "outstanding", "slug")

    def __init__(self, slug: str, cluster: str, model: str, breaker: Breaker) -> None:
        self.slug = slug  # as the catalog spells it
        self.cluster = cluster
        self.model = model.casefold()  # as the job reports' states are keyed
        self.breaker = breaker
        self.outstanding = 0


class Lease:
    """One call to one endpoint, from dispatch to its end: counted while it lasts, its
    outcome told to the breaker once.  `refusal` is set when the breaker refused it."""

    __slots__ = ("_book", "_closed", "_endpoint", "_judged", "_slug", "refusal")

    def __init__(
        self,
        book: HealthBook,
        slug: str,
        endpoint: _Endpoint | None,
        refusal: AdaptorFailed | None,
    ) -> None:
        self._book = book
        self._slug = slug
        self._endpoint = endpoint  # None: not one of the catalog's, nothing to count
        self.refusal = refusal
        self._judged = refusal is not None
        self._closed = refusal is not None

    def judge(self, event: Event) -> None:
        """The call's outcome, as the event the machine is fed: the first one counts."""
        if self._judged:
            return
        self._judged = True
        if self._endpoint is None:
            return
        if isinstance(event, (AdaptorFailed, AdaptorReturned)):  # a tuple: faster than a union
            self._book._outcome(self._slug, self._endpoint, is_retriable(event))
        elif isinstance(event, StreamOpened):
            self._book._outcome(self._slug, self._endpoint, False)

    def close(self) -> None:
        """The call is over (its stream closed, or it was abandoned before an outcome)."""
        if self._closed:
            return
        self._closed = True
        if self._endpoint is not None:
            self._book._release(self._endpoint, abandoned=not self._judged)
        self._judged = True

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class HealthBook:
    """Counts, breakers and job reports for every endpoint and cluster of one gateway."""

    def __init__(
        self,
        catalog: Catalog,
        clusters: Mapping[str, BaseCluster],
        policy: HealthPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy or HealthPolicy()
        self._catalog = catalog
        self._clusters = dict(clusters)
        self._clock = clock
        # The catalog never changes: each endpoint's entry is made once, by case-folded slug.
        self._endpoints = {
            e.endpoint_slug.lower(): _Endpoint(
                e.endpoint_slug, e.cluster, e.model, Breaker(self.policy.breaker)
            )
            for e in catalog.endpoints
        }
        # The endpoints with nothing against them: breaker closed, model not reported
        # stopped or queued (however old the report: a stale one only sends a request the
        # long way, through `assess`), by the catalog's slug.  Kept up to date as each
        # breaker and report changes; the request machine is handed this set (data, read
        # when it chooses) so that a lone candidate in it skips `AssessHealth`.
        self._cleared = {e.slug for e in self._endpoints.values()}
        self._reports: dict[str, _Report] = {}
        self._reading: dict[str, anyio.Event] = {}  # a cluster whose status is being read
        self._turn = 0  # rotates ties between equally loaded endpoints

    # -- the request path (synchronous: never waits) ----------------------------------

    def assess(self, effect: AssessHealth) -> HealthAssessed:
        """The core's `AssessHealth`, answered from what is known now."""
        now = self._clock()
        self._turn = (self._turn + 1) % (1 << 30)
        entries = tuple(self._health(slug, now) for slug in effect.slugs)
        return HealthAssessed(endpoints=entries, turn=self._turn)

    @property
    def cleared(self) -> AbstractSet[str]:
        """The slugs with nothing against them now (a live view, not a copy)."""
        return self._cleared

    def _classify(self, endpoint: _Endpoint) -> None:
        report = self._reports.get(endpoint.cluster)
        if endpoint.breaker.passes and (
            report is None or report.states.get(endpoint.model) not in _REFUSING
        ):
            self._cleared.add(endpoint.slug)
        else:
            self._cleared.discard(endpoint.slug)

    def _health(self, slug: str, now: float) -> EndpointHealth:
        endpoint = self._endpoints.get(slug.lower())
        if endpoint is None:
            return EndpointHealth(slug=slug)
        view = endpoint.breaker.view(now)
        state, status_retry = ModelState.UNKNOWN, 1
        report = self._reports.get(endpoint.cluster)
        ttl = self.policy.status_ttl
        if report is not None and now - report.at <= _TRUSTED_TTLS * ttl:
            state = report.states.get(endpoint.model, ModelState.UNKNOWN)
            status_retry = max(1, math.ceil(report.at + ttl - now))
        return EndpointHealth(
            slug=slug,
            outstanding=endpoint.outstanding,
            breaker=view.state,
            admits=view.admits,
            retry_after=view.retry_after,
            model_state=state,
            status_retry_after=status_retry,
        )

    def lease(self, slug: str) -> Lease:
        """A call to `slug` goes out now: count it and tell its breaker (which may refuse,
        when it opened between the choice and the call)."""
        endpoint = self._endpoints.get(slug.lower())
        if endpoint is None:
            return Lease(self, slug, None, None)
        breaker = endpoint.breaker
        if breaker.passes:
            endpoint.outstanding += 1
            return Lease(self, slug, endpoint, None)
        effects = breaker.receive(Dispatched(at=self._clock()))
        self._classify(endpoint)
        for effect in effects:
            if isinstance(effect, Refused):
                detail = f"circuit breaker open; retry in {effect.retry_after}s"
                return Lease(self, slug, endpoint, AdaptorFailed(status=503, detail=detail))
        endpoint.outstanding += 1
        return Lease(self, slug, endpoint, None)

    def leased(self, slug: str) -> Lease:
        """`lease`, closed when the block ends however it ends (`with` closes a lease;
        a class, not a generator, as it runs on every request)."""
        return self.lease(slug)

    def _outcome(self, slug: str, endpoint: _Endpoint, failed: bool) -> None:
        breaker = endpoint.breaker
        if not failed and breaker.passes and not breaker.failures:
            return  # closed with no failure counted: `Succeeded` would change nothing
        before = breaker.state
        at = self._clock()
        breaker.receive(Failed(at=at) if failed else Succeeded(at=at))
        self._classify(endpoint)
        if breaker.state is not before:
            log.warning(
                "endpoint %s: circuit breaker %s -> %s", slug, before.value, breaker.state.value
            )

    def _release(self, endpoint: _Endpoint, *, abandoned: bool) -> None:
        endpoint.outstanding = max(0, endpoint.outstanding - 1)
        if abandoned:
            endpoint.breaker.receive(Abandoned(at=self._clock()))
            self._classify(endpoint)

    # -- cluster status -----------------------------------------------------------------

    async def jobs(self, cluster: str) -> GetJobsResponse | None:
        """The cluster's `get_jobs` answer, from the cache while it is fresh, else read
        now (one read at a time per cluster: others wait for it).  None: the adaptor
        raised or gave nothing."""
        report = self._reports.get(cluster)
        if report is not None and self._clock() - report.at < self.policy.status_ttl:
            return report.answer
        await self._read(cluster)
        report = self._reports.get(cluster)
        return None if report is None else report.answer

    async def up(self, clusters: Iterable[str]) -> dict[str, bool]:
        """Whether each cluster's status service answered its last reading with a job
        report (False: it failed, or reported an error instead).  Read through the cache
        as `jobs` is, side by side: at most one `get_jobs` per cluster per TTL however
        many callers ask, none while the background refresher keeps it fresh."""
        names = list(clusters)
        answers: dict[str, bool] = {}

        async def read(name: str) -> None:
            answer = await self.jobs(name)
            answers[name] = answer is not None and answer.jobs is not None

        async with anyio.create_task_group() as tasks:
            for name in names:
                tasks.start_soon(read, name)
        return {name: answers[name] for name in names}

    async def _read(self, cluster: str) -> None:
        running = self._reading.get(cluster)
        if running is not None:
            await running.wait()
            return
        done = self._reading[cluster] = anyio.Event()
        try:
            self._reports[cluster] = await self._fetch(cluster)
            for endpoint in self._endpoints.values():
                if endpoint.cluster == cluster:
                    self._classify(endpoint)
        finally:
            del self._reading[cluster]
            done.set()

    async def _fetch(self, cluster: str) -> _Report:
        share = self.policy.share
        if share is None:
            reading = await self._ask(cluster)
            age = 0.0
        else:
            ttl = self.policy.status_ttl
            reading = await share.reading(cluster, ttl, lambda: self._ask(cluster))
            age = max(0.0, time.time() - reading.fetched_at)
        answer, error = reading.answer, reading.error
        jobs = None
        if answer is not None and answer.jobs is not None:
            jobs = answer.jobs.model_dump()
        previous = self._reports.get(cluster)
        if error is not None and (previous is None or previous.error != error):
            log.warning("cluster %s status: %s", cluster, error)
        return _Report(
            at=self._clock() - age,
            states=model_states(jobs),
            answer=answer,
            error=error,
            fetched_at=reading.fetched_at,
        )

    async def _ask(self, cluster: str) -> Reading:
        """The cluster adaptor's `get_jobs`, now, and what went wrong if anything did."""
        adaptor = self._clusters.get(cluster)
        answer: GetJobsResponse | None = None
        error: str | None = None
        try:
            if adaptor is not None:
                answer = await adaptor.get_jobs()
        except Exception as exc:
            log.warning("cluster adaptor %s raised", cluster, exc_info=True)
            error = f"the cluster adaptor failed ({type(exc).__name__})"
        if answer is not None and answer.jobs is None:
            error = redact(answer.error_message or "the cluster reported no jobs")
        return Reading(answer=answer, error=error, fetched_at=time.time())

    async def refresh(self) -> None:
        """Read every cluster's status once, side by side."""
        async with anyio.create_task_group() as tasks:
            for name in self._clusters:
                tasks.start_soon(self._read, name)

    @asynccontextmanager
    async def refreshing(self) -> AsyncIterator[HealthBook]:
        """Keep every report fresh in the background while the block runs (when the
        policy says so): read at the start, then every half TTL."""
        if not self.policy.refresh_status or not self._clusters:
            yield self
            return
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self.refresh_forever)
            try:
                yield self
            finally:
                tasks.cancel_scope.cancel()

    async def refresh_forever(self, stopping: Callable[[], Awaitable[Any]] | None = None) -> None:
        """Read every report now and every half TTL after, until `stopping()` returns (or
        the task is cancelled): a background task of the served app."""
        async with anyio.create_task_group() as tasks:
            if stopping is not None:
                tasks.start_soon(self._cancel_when, stopping, tasks.cancel_scope)
            while True:
                await self.refresh()
                await anyio.sleep(self.policy.status_ttl / 2)

    @staticmethod
    async def _cancel_when(
        stopping: Callable[[], Awaitable[Any]], scope: anyio.CancelScope
    ) -> None:
        await stopping()
        scope.cancel()

    # -- what health shows ----------------------------------------------------------------

    def close(self) -> None:
        """Let go of the share's connections, if there is one."""
        if self.policy.share is not None:
            self.policy.share.close()

    def sharing(self) -> str | None:
        """How cluster status is shared: "redis", "folder", "<medium>-unreachable,
        fetching locally", or None when this process reads every cluster itself."""
        share = self.policy.share
        return None if share is None else share.status()

    def report(self) -> dict[str, Any]:
        """Per cluster, its status report's state; per endpoint, its breaker, outstanding
        calls and model state.  Names only: never a URL or key."""
        now = self._clock()
        clusters: dict[str, Any] = {}
        for cluster in self._catalog.clusters:
            report = self._reports.get(cluster.cluster_name)
            entry: dict[str, Any] = {"status": "unknown", "checked_seconds_ago": None}
            if report is not None:
                entry["status"] = "ok" if report.error is None else "unavailable"
                entry["checked_seconds_ago"] = round(now - report.at, 3)
                entry["fetched_at"] = report.fetched_at
                if report.error is not None:
                    entry["detail"] = report.error
            entry["endpoints"] = {}
            clusters[cluster.cluster_name] = entry
        for endpoint in self._catalog.endpoints:
            health = self._health(endpoint.endpoint_slug, now)
            clusters[endpoint.cluster]["endpoints"][endpoint.endpoint_slug] = {
                "model": endpoint.model,
                "framework": endpoint.framework,
                "breaker": health.breaker.value,
                "outstanding": health.outstanding,
                "model_status": health.model_state.value,
            }
        return clusters
