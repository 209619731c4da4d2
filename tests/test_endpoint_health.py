"""The driver's side of endpoint health, under asyncio and trio: outstanding calls are
counted for as long as a call lasts, each outcome reaches the endpoint's breaker with the
driver's clock, and cluster status is cached and refreshed in the background.

Time is a `ManualClock` the test moves; the background refresher is waited on through
the cluster adaptor's own calls, never by sleeping.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from adaptors.clusters.cluster import BaseCluster, GetJobsResponse, JobInfo, Jobs
from core import (
    AdaptorFailed,
    AdaptorReturned,
    AssessHealth,
    BreakerPolicy,
    BreakerState,
    Catalog,
    ClusterRecord,
    EndpointRecord,
    ModelState,
    StreamOpened,
)
from frontends.endpoint_health import HealthBook, HealthPolicy
from tests.support.clock import ManualClock

SLUG = "hpc-vllm-m"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class CountingCluster(BaseCluster):
    """Reports `state` for model "m"; counts its calls and lets a test wait for one."""

    def __init__(self) -> None:
        super().__init__("1", "hpc", "x", ["vllm"], ["chat/completions"])
        self.state = "running"
        self.calls = 0
        self.fail = False
        self._waiters: list[tuple[int, anyio.Event]] = []

    async def get_jobs(self) -> GetJobsResponse:
        self.calls += 1
        for wanted, event in self._waiters:
            if self.calls >= wanted:
                event.set()
        if self.fail:
            return GetJobsResponse(error_message="Cluster hpc: unreachable", error_code=503)
        job = JobInfo(Models="m", Framework="vllm", Cluster="hpc")
        return GetJobsResponse(jobs=Jobs(**{self.state: [job]}))

    async def called(self, times: int) -> None:
        event = anyio.Event()
        self._waiters.append((times, event))
        if self.calls >= times:
            event.set()
        await event.wait()


CATALOG = Catalog.build(
    [
        ClusterRecord(
            id="1",
            cluster_name="hpc",
            cluster_adapter="x",
            frameworks=["vllm"],
            openai_endpoints=["chat/completions"],
        )
    ],
    [
        EndpointRecord(
            id="1",
            endpoint_slug=SLUG,
            cluster="hpc",
            framework="vllm",
            model="m",
            endpoint_adapter="x",
        )
    ],
)


def book(clock: ManualClock, cluster: BaseCluster | None = None, **policy: Any) -> HealthBook:
    return HealthBook(
        CATALOG,
        {"hpc": cluster or CountingCluster()},
        HealthPolicy(**policy),
        clock=clock,
    )


def assessed(health: HealthBook) -> Any:
    (entry,) = health.assess(AssessHealth(slugs=[SLUG])).endpoints
    return entry


def test_a_call_counts_until_it_ends_and_a_stream_until_it_closes() -> None:
    health = book(ManualClock())
    with health.leased(SLUG) as call:
        assert assessed(health).outstanding == 1
        call.judge(AdaptorReturned(result="{}"))
    assert assessed(health).outstanding == 0
    stream = health.lease(SLUG)
    stream.judge(StreamOpened())
    assert assessed(health).outstanding == 1
    stream.close()
    stream.close()  # closing twice gives back one count only
    assert assessed(health).outstanding == 0


def test_failures_open_the_breaker_and_the_cool_down_runs_on_the_driver_s_clock() -> None:
    clock = ManualClock(100.0)
    health = book(clock, breaker=BreakerPolicy(failures=2, cooldown=10))
    for failure in (AdaptorFailed(status=502), AdaptorReturned(error_code=503)):
        with health.leased(SLUG) as call:
            call.judge(failure)
    entry = assessed(health)
    assert (entry.breaker, entry.admits, entry.retry_after) == (BreakerState.OPEN, False, 10)
    refused = health.lease(SLUG)
    assert refused.refusal is not None and refused.refusal.status == 503
    assert assessed(health).outstanding == 0  # a refused call is not counted
    clock.advance(10)
    assert assessed(health).admits
    with health.leased(SLUG) as probe:
        assert probe.refusal is None
        probe.judge(AdaptorReturned(result="{}"))
    assert assessed(health).breaker is BreakerState.CLOSED


def test_a_backend_s_own_client_error_is_not_a_failure() -> None:
    health = book(ManualClock(), breaker=BreakerPolicy(failures=1, cooldown=10))
    with health.leased(SLUG) as call:
        call.judge(AdaptorReturned(error_code=400, error_message="bad temperature"))
    assert assessed(health).breaker is BreakerState.CLOSED


@pytest.mark.anyio
async def test_status_is_cached_for_its_ttl_and_read_once_for_many_askers() -> None:
    clock, cluster = ManualClock(), CountingCluster()
    health = book(clock, cluster, status_ttl=5)
    async with anyio.create_task_group() as tasks:
        for _ in range(5):
            tasks.start_soon(health.jobs, "hpc")
    assert cluster.calls == 1
    clock.advance(4.9)
    await health.jobs("hpc")
    assert cluster.calls == 1
    clock.advance(0.2)
    await health.jobs("hpc")
    assert cluster.calls == 2


@pytest.mark.anyio
async def test_the_background_refresh_keeps_the_model_state_current() -> None:
    clock, cluster = ManualClock(), CountingCluster()
    cluster.state = "stopped"
    health = book(clock, cluster, status_ttl=0.05, refresh_status=True)
    with anyio.fail_after(30):
        async with health.refreshing():
            await cluster.called(1)
            entry = assessed(health)
            assert entry.model_state is ModelState.STOPPED
            assert entry.status_retry_after >= 1
            cluster.state = "queued"
            await cluster.called(cluster.calls + 2)  # a whole read after the change
            assert assessed(health).model_state is ModelState.QUEUED
            cluster.fail = True
            await cluster.called(cluster.calls + 2)
            assert assessed(health).model_state is ModelState.UNKNOWN
            report = health.report()["hpc"]
            assert report["status"] == "unavailable"
            assert report["endpoints"][SLUG]["model_status"] == "unknown"


def test_a_report_three_ttls_old_is_no_longer_trusted() -> None:
    clock, cluster = ManualClock(), CountingCluster()
    cluster.state = "stopped"
    health = book(clock, cluster, status_ttl=1)
    anyio.run(health.jobs, "hpc")
    assert assessed(health).model_state is ModelState.STOPPED
    clock.advance(3.5)
    assert assessed(health).model_state is ModelState.UNKNOWN


def test_an_endpoint_is_cleared_only_while_nothing_is_against_it() -> None:
    """`cleared` holds an endpoint exactly while its breaker is closed and its model is
    not reported stopped or queued, kept up to date as breakers and reports change."""
    clock, cluster = ManualClock(), CountingCluster()
    health = book(clock, cluster, breaker=BreakerPolicy(failures=1, cooldown=10), status_ttl=1)
    cleared = health.cleared
    assert SLUG in cleared and "no-such-endpoint" not in cleared
    with health.leased(SLUG) as call:
        call.judge(AdaptorFailed(status=502))
    assert SLUG not in cleared  # open: the long way says when to retry
    clock.advance(10)
    with health.leased(SLUG) as probe:
        probe.judge(AdaptorReturned(result="{}"))
    assert SLUG in cleared
    cluster.state = "stopped"
    anyio.run(health.jobs, "hpc")
    assert SLUG not in cleared
    clock.advance(3.5)  # a stale report: the long way, which no longer trusts it
    assert SLUG not in cleared
    assert assessed(health).admits
    cluster.state = "running"
    anyio.run(health.jobs, "hpc")
    assert SLUG in cleared
