"""Two `serve` processes on one PostgreSQL database, both running the built-in runner:
each batch is held by one of them at a time (a lease taken with `FOR UPDATE SKIP
LOCKED`), so each line reaches the backend exactly once; and when the holder is killed,
the other takes its batch over once the lease has expired and finishes it.

The backend's gate (see `fake_openai`) holds every line until the test has seen who
holds what: two processes running one batch would show as more of its lines in flight
than one process ever sends at once.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from frontends.store import BatchStore, Store
from tests.support.batch_processes import (
    TERMINAL,
    backend_counts,
    client,
    create_batch,
    read_lines,
    start_batch_serve,
    wait_until,
)
from tests.support.fake_openai import running_fake_openai
from tests.support.quota import REDIS_URL, redis_prefix
from tests.support.serve_process import ServeProcess

BATCHES = 4
LINES = 50
CONCURRENCY = 8


@pytest.fixture
def batch_store(postgresql_url: str) -> Iterator[BatchStore]:
    """The database as the test reads it (who holds which batch), beside the gateways."""
    store = Store.connect(postgresql_url)
    try:
        yield BatchStore(store.engine)
    finally:
        store.close()


def holder_pid(batch_store: BatchStore, batch_id: str) -> int | None:
    """The process id of the runner holding the batch now (holders are host:pid:nonce)."""
    batch = batch_store.get_batch(batch_id)
    if batch is None or batch.lease_holder is None:
        return None
    return int(batch.lease_holder.split(":")[-2])


def shared_redis(prefix: str) -> dict[str, str]:
    return {"redis_url": REDIS_URL, "redis_key_prefix": prefix}


def tag_of(line: str) -> str:
    return line.split(" line ")[0]


def test_each_batch_runs_in_one_of_two_processes_and_each_line_once(
    tmp_path: Path, postgresql_url: str, batch_store: BatchStore
) -> None:
    with running_fake_openai(models=["gated"]) as (fake, backend_url), redis_prefix() as prefix:
        # Replicas of one database count quotas in the Redis they share (else they
        # refuse to start beside each other).
        settings = {"batch_concurrency": str(CONCURRENCY), **shared_redis(prefix)}
        servers = [
            start_batch_serve(tmp_path / name, backend_url, postgresql_url, **settings)
            for name in ("a", "b")
        ]
        try:
            clients = [client(served) for served in servers]
            # Created through either process in turn: each wakes its own runner, both
            # poll, so both claim at the same time.
            ids = [create_batch(clients[i % 2], f"b{i}", LINES) for i in range(BATCHES)]
            wait_until(
                lambda: len(fake.held) == BATCHES * CONCURRENCY,
                "every batch taken and its first lines at the backend",
            )
            held = Counter(tag_of(r.json()["messages"][0]["content"]) for r in fake.held)
            assert held == {f"b{i}": CONCURRENCY for i in range(BATCHES)}
            pids = {served.pid for served in servers}
            holders = {batch_id: holder_pid(batch_store, batch_id) for batch_id in ids}
            assert set(holders.values()) <= pids

            fake.allow(None)
            wait_until(
                lambda: all(clients[0].batches.retrieve(i).status in TERMINAL for i in ids),
                "every batch finished",
            )
            done = [clients[0].batches.retrieve(batch_id) for batch_id in ids]
            outputs = [read_lines(clients[0], batch.output_file_id) for batch in done]
        finally:
            codes = [served.stop() for served in servers]
        assert codes == [0, 0], [served.log() for served in servers]

    counts = backend_counts(fake)
    expected = [f"b{b} line {i}" for b in range(BATCHES) for i in range(LINES)]
    assert sorted(counts) == sorted(expected)
    assert [line for line, n in counts.items() if n > 1] == []
    for b, (batch, output) in enumerate(zip(done, outputs, strict=True)):
        assert batch.status == "completed"
        assert batch.error_file_id is None
        assert sorted(item["custom_id"] for item in output) == sorted(
            f"b{b}-{i}" for i in range(LINES)
        )
    ran = Counter(holders.values())
    print(f"\ntwo processes, {BATCHES} batches of {LINES}: held per process {sorted(ran.values())}")


def test_the_other_process_finishes_a_killed_ones_batch_once_its_lease_expires(
    tmp_path: Path, postgresql_url: str, batch_store: BatchStore
) -> None:
    answered = 20
    # A lease long enough that a holder slowed down by a busy machine still renews in
    # time: the batch changes hands because its holder died, not because it was slow.
    with running_fake_openai(models=["gated"]) as (fake, backend_url), redis_prefix() as prefix:
        settings = {
            "batch_concurrency": str(CONCURRENCY),
            "batch_lease_seconds": "5",
            **shared_redis(prefix),
        }
        servers = [
            start_batch_serve(tmp_path / name, backend_url, postgresql_url, **settings)
            for name in ("a", "b")
        ]
        by_pid: dict[int, ServeProcess] = {served.pid: served for served in servers}
        try:
            fake.allow(answered)
            with client(servers[0]) as c:
                batch_id = create_batch(c, "k", 2 * LINES)

                def mid_way() -> bool:
                    counts = c.batches.retrieve(batch_id).request_counts
                    assert counts is not None
                    return counts.completed == answered and len(fake.held) == CONCURRENCY

                wait_until(mid_way, "answered lines recorded, the next ones held")
            pid = holder_pid(batch_store, batch_id)
            assert pid in by_pid, pid
            holder = by_pid[pid]
            (survivor,) = (served for served in servers if served is not holder)
            in_flight = {r.header("x-request-id") for r in fake.held}
            holder.kill()
            killed_at = time.monotonic()
            fake.allow(None)

            with client(survivor) as c:
                wait_until(
                    lambda: c.batches.retrieve(batch_id).status in TERMINAL,
                    "the survivor finished the batch",
                )
                done = c.batches.retrieve(batch_id)
                taken_over_in = time.monotonic() - killed_at
                output = read_lines(c, done.output_file_id)
                errors = read_lines(c, done.error_file_id)
            assert survivor.running
        finally:
            for served in servers:
                if served.running:
                    assert served.stop() == 0, served.log()

    assert done.status == "completed"
    counts = backend_counts(fake)
    assert sorted(counts) == sorted(f"k line {i}" for i in range(2 * LINES))
    assert [line for line, n in counts.items() if n > 1] == []
    # The lines in flight in the killed process: interrupted, not sent again.
    assert {item["id"] for item in errors} == in_flight
    assert {item["error"]["code"] for item in errors} == {"request_interrupted"}
    custom_ids = [item["custom_id"] for item in output + errors]
    assert sorted(custom_ids) == sorted(f"k-{i}" for i in range(2 * LINES))
    assert len(output) == 2 * LINES - CONCURRENCY
    print(f"\nholder killed: the other process finished its batch {taken_over_in:.1f} s later")
