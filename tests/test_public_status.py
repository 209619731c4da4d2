"""`GET /resource_server/status`'s answer, under asyncio and trio: the clusters open to
everyone, each true when its status service answered the last reading with a job report,
read through the health book's cache, so many callers at once cost one `get_jobs` per
cluster per TTL, never one each.

Time is a `ManualClock` the test moves; a reading in progress is held open by a gate the
test lets go of, so "many callers while nothing is cached" is a state, not a race.
"""

from __future__ import annotations

import json

import anyio
import pytest

from adaptors.clusters.cluster import BaseCluster, GetJobsResponse, Jobs
from core import Catalog, ClusterRecord
from frontends.endpoint_health import HealthBook, HealthPolicy
from frontends.identity import StaticKeys
from frontends.listings import Listings
from tests.support.clock import ManualClock


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class GatedCluster(BaseCluster):
    """Answers `get_jobs` once the gate opens; counts its readings."""

    def __init__(self, name: str, *, fails: bool = False) -> None:
        super().__init__("1", name, "x", ["vllm"], ["chat/completions"])
        self.calls = 0
        self.fails = fails
        self.gate = anyio.Event()
        self.entered = anyio.Event()

    async def get_jobs(self) -> GetJobsResponse:
        self.calls += 1
        self.entered.set()
        await self.gate.wait()
        if self.fails:
            return GetJobsResponse(error_message="status service down", error_code=503)
        return GetJobsResponse(jobs=Jobs())


def cluster(name: str, **rules: list[str]) -> ClusterRecord:
    return ClusterRecord(
        id=name,
        cluster_name=name,
        cluster_adapter="x",
        frameworks=["vllm"],
        openai_endpoints=["chat/completions"],
        **rules,
    )


CATALOG = Catalog.build(
    [
        cluster("up"),
        cluster("down"),
        cluster("staff", allowed_globus_groups=["staff"]),
        cluster("anl", allowed_domains=["anl.gov"]),
    ],
    [],
)
TTL = 10.0


def listings() -> tuple[Listings, dict[str, GatedCluster], ManualClock, HealthBook]:
    clock = ManualClock(1000.0)
    adaptors = {
        "up": GatedCluster("up"),
        "down": GatedCluster("down", fails=True),
        "staff": GatedCluster("staff"),
        "anl": GatedCluster("anl"),
    }
    health = HealthBook(CATALOG, adaptors, HealthPolicy(status_ttl=TTL), clock=clock)
    served = Listings(
        catalog=CATALOG, clusters=adaptors, identity=StaticKeys(keys=()), health=health
    )
    return served, adaptors, clock, health


async def answer(served: Listings) -> dict[str, bool]:
    response = await served.public_status()
    assert response.status == 200
    decoded: dict[str, bool] = json.loads(response.body)
    return decoded


@pytest.mark.anyio
async def test_many_callers_while_nothing_is_cached_cost_one_reading_per_cluster() -> None:
    served, adaptors, clock, _ = listings()
    answers: list[dict[str, bool]] = []

    async def ask() -> None:
        answers.append(await answer(served))

    async with anyio.create_task_group() as callers:
        for _ in range(25):
            callers.start_soon(ask)
        await adaptors["up"].entered.wait()
        await adaptors["down"].entered.wait()
        for adaptor in adaptors.values():
            adaptor.gate.set()
    assert answers == [{"up": True, "down": False}] * 25
    assert (adaptors["up"].calls, adaptors["down"].calls) == (1, 1)
    # Restricted clusters are neither shown nor read.
    assert (adaptors["staff"].calls, adaptors["anl"].calls) == (0, 0)

    # Within the TTL the cache answers; after it, one caller reads again for everyone.
    clock.advance(TTL / 2)
    for _ in range(10):
        assert await answer(served) == {"up": True, "down": False}
    assert (adaptors["up"].calls, adaptors["down"].calls) == (1, 1)
    clock.advance(TTL)
    adaptors["down"].fails = False
    assert await answer(served) == {"up": True, "down": True}
    assert (adaptors["up"].calls, adaptors["down"].calls) == (2, 2)


@pytest.mark.anyio
async def test_the_background_refresher_s_reports_answer_without_a_reading() -> None:
    served, adaptors, _, health = listings()
    for adaptor in adaptors.values():
        adaptor.gate.set()
    await health.refresh()  # what the served app's refresher does
    calls = {name: adaptor.calls for name, adaptor in adaptors.items()}
    for _ in range(10):
        assert await answer(served) == {"up": True, "down": False}
    assert {name: adaptor.calls for name, adaptor in adaptors.items()} == calls
