"""The Redis counters against the real local Redis: they decide exactly as the core's
`Ledger` does, on asyncio and trio, and fall back to counting in process (never
failing a request) when Redis cannot be reached."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import WINDOW_MS, Ledger, Limit, Refusal, Reservation
from frontends.quota import InProcessCounters, RedisCounters
from tests.support.quota import REDIS_URL, closed_port_url, private_redis, redis_prefix

KEYS = ("a", "b", "c")
IDS = ("r1", "r2", "r3", "r4", "r5")

reservations = st.builds(
    Reservation,
    limit=st.sampled_from(list(Limit)),
    key=st.sampled_from(KEYS),
    amount=st.integers(0, 30),
    capacity=st.integers(20, 60),  # mostly more than one amount, less than several
)
operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("reserve"), st.sampled_from(IDS), st.lists(reservations, min_size=1, max_size=3)
        ),
        st.tuples(
            st.just("settle"),
            st.sampled_from(IDS),
            st.lists(st.sampled_from(KEYS), max_size=3),
            st.integers(-5, 80),
        ),
        st.tuples(st.just("release"), st.sampled_from(IDS), st.lists(st.sampled_from(KEYS))),
        # A little (odd milliseconds, for Retry-After's rounding), past a whole window,
        # and exactly onto its edge.
        st.tuples(
            st.just("advance"),
            st.one_of(st.integers(0, 2_500), st.integers(0, 70_000), st.just(WINDOW_MS)),
        ),
    ),
    max_size=40,
)


async def _same_decisions(steps: list[tuple[Any, ...]]) -> None:
    now = [1_700_000_000_000]
    ledger = Ledger()
    with redis_prefix() as prefix:
        counters = RedisCounters(REDIS_URL, prefix=prefix, clock=lambda: now[0])
        try:
            for step in steps:
                kind = step[0]
                if kind == "reserve":
                    expected = ledger.reserve(step[1], step[2], now[0])
                    assert await counters.reserve(step[1], step[2]) == expected, step
                elif kind == "settle":
                    ledger.settle(step[1], step[2], step[3])
                    counters.settle(step[1], step[2], step[3])
                elif kind == "release":
                    ledger.release(step[1], step[2])
                    counters.release(step[1], step[2])
                else:
                    now[0] += step[1]
                for key in KEYS:
                    assert await counters.used(key) == ledger.used(key, now[0]), (step, key)
            assert counters.status()["redis"] == "ok"
        finally:
            await counters.aclose()


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
@given(steps=operations)
def test_redis_counters_decide_as_the_core_ledger(loop: str, steps: list[tuple[Any, ...]]) -> None:
    anyio.run(_same_decisions, steps, backend=loop)


def _rpm(capacity: int) -> list[Reservation]:
    return [Reservation(limit=Limit.USER_REQUESTS, key="rpm_user:u", amount=1, capacity=capacity)]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_reserve_refuses_atomically_under_concurrency(anyio_backend: str) -> None:
    with redis_prefix() as prefix:
        counters = RedisCounters(REDIS_URL, prefix=prefix)
        results: list[Refusal | None] = []

        async def one(i: int) -> None:
            results.append(await counters.reserve(f"r{i}", _rpm(50)))

        try:
            async with anyio.create_task_group() as tasks:
                for i in range(200):
                    tasks.start_soon(one, i)
            assert await counters.used("rpm_user:u") == 50
        finally:
            await counters.aclose()
    assert results.count(None) == 50
    refusals = [r for r in results if r is not None]
    assert len(refusals) == 150
    assert {r.limit for r in refusals} == {Limit.USER_REQUESTS}
    assert all(1 <= r.retry_after <= 60 for r in refusals)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_settlement_is_seen_by_the_next_reserve_of_the_same_process(
    anyio_backend: str,
) -> None:
    tokens = Reservation(limit=Limit.USER_TOKENS, key="tpm_user:e:u", amount=900, capacity=1000)
    with redis_prefix() as prefix:
        counters = RedisCounters(REDIS_URL, prefix=prefix)
        try:
            assert await counters.reserve("first", [tokens]) is None
            refused = await counters.reserve("second", [tokens])
            assert refused is not None and refused.limit is Limit.USER_TOKENS
            counters.settle("first", ["tpm_user:e:u"], 40)  # queued; the next reserve waits
            assert await counters.reserve("third", [tokens]) is None
            assert await counters.used("tpm_user:e:u") == 940
            counters.release("third", ["tpm_user:e:u"])
            assert await counters.used("tpm_user:e:u") == 40
        finally:
            await counters.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_unreachable_redis_falls_back_to_counting_in_process(anyio_backend: str) -> None:
    counters = RedisCounters(closed_port_url(), timeout=0.5)
    try:
        assert counters.status()["redis"] == "ok"  # nothing tried yet
        assert await counters.reserve("r1", _rpm(1)) is None
        assert counters.status() == {
            "backend": "redis-unreachable, using in-process",
            "redis": "unreachable",
            "pending": 0,
            "lost": 0,
        }
        # Counted in process meanwhile: the limit still holds.
        refused = await counters.reserve("r2", _rpm(1))
        assert refused is not None and refused.limit is Limit.USER_REQUESTS
        counters.release("r1", ["rpm_user:u"])  # reserved in process: released there
        assert await counters.reserve("r3", _rpm(1)) is None
    finally:
        await counters.aclose()
    assert counters.status()["lost"] == 0


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_settlements_queued_while_redis_is_away_are_counted_not_dropped_silently(
    anyio_backend: str,
) -> None:
    counters = RedisCounters(closed_port_url(), timeout=0.5)
    try:
        counters.settle("made-in-redis-earlier", ["tpm_user:e:u"], 10)
        assert counters.status()["pending"] == 1
    finally:
        await counters.aclose()  # the drainer tries Redis, cannot reach it, gives up
    assert counters.status() == {
        "backend": "redis-unreachable, using in-process",
        "redis": "unreachable",
        "pending": 0,
        "lost": 1,  # and says so
    }


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_counting_returns_to_redis_when_it_answers_again(anyio_backend: str) -> None:
    key = "tpm_user:e:u"
    tokens = Reservation(limit=Limit.USER_TOKENS, key=key, amount=900, capacity=1000)
    with tempfile.TemporaryDirectory() as folder:  # short: a socket path has a small limit
        socket_path = Path(folder) / "redis.sock"
        # retry_interval 0: every reserve tries Redis while it is away (no waiting here).
        counters = RedisCounters(f"unix://{socket_path}", retry_interval=0, timeout=2)
        try:
            with private_redis(socket_path.parent, persist=True):
                assert await counters.reserve("in-redis", [tokens]) is None
            # Redis is down (its counts saved to disk).
            counters.settle("in-redis", [key], 40)  # kept for Redis, not dropped
            assert await counters.reserve("in-process", [tokens]) is None
            assert counters.status()["redis"] == "unreachable"
            assert counters.status()["pending"] == 1
            counters.settle("in-process", [key], 30)  # settled where it was reserved
            # Back, with what it held: 900 for "in-redis".
            with private_redis(socket_path.parent, persist=True):
                # The kept settlement goes first (900 -> 40), so 900 more fit in Redis.
                assert await counters.reserve("back-in-redis", [tokens]) is None
                assert counters.status() == {
                    "backend": "redis",
                    "redis": "ok",
                    "pending": 0,
                    "lost": 0,
                }
                assert await counters.used(key) == 940
        finally:
            await counters.aclose()


# -- what a key holds, read for the status page -------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.parametrize("where", ["in-process", "redis", "redis-unreachable"])
async def test_holding_reads_what_a_key_holds_now(anyio_backend: str, where: str) -> None:
    """Every kind of counter answers `holding`: after its own settlements in Redis, and
    from the in-process fallback while Redis is away."""
    tokens = Reservation(limit=Limit.USER_TOKENS, key="tpm_user:e:u", amount=900, capacity=1000)
    with redis_prefix() as prefix:
        counters: InProcessCounters | RedisCounters
        if where == "in-process":
            counters = InProcessCounters()
        else:
            url = REDIS_URL if where == "redis" else closed_port_url()
            counters = RedisCounters(url, prefix=prefix, timeout=0.5)
        try:
            assert await counters.holding("tpm_user:e:u") == 0
            assert await counters.reserve("first", [tokens]) is None
            assert await counters.holding("tpm_user:e:u") == 900
            counters.settle("first", ["tpm_user:e:u"], 40)
            assert await counters.holding("tpm_user:e:u") == 40
            assert await counters.holding("tpm_user:e:other") == 0
        finally:
            if isinstance(counters, RedisCounters):
                await counters.aclose()
