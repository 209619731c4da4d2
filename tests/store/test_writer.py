"""The log writer: never blocks or raises on the request path, writes in batches off
the loop, survives database errors, and flushes on a graceful stop; under asyncio and
trio alike."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import anyio
import pytest

from frontends.store import LogWriter, RequestRecord, Store, create_store_engine, open_log_writer
from tests.store.factories import record
from tests.support.databases import POSTGRES_URL

pytestmark = pytest.mark.anyio

WAIT = 10.0  # seconds a test waits for a thread before it calls the writer stuck


class HeldSink:
    """Holds the writer inside its first batch until the test lets go."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.batches: list[list[str]] = []

    def write_batch(self, records: Sequence[RequestRecord]) -> int:
        self.entered.set()
        assert self.release.wait(WAIT), "the test never released the writer"
        self.batches.append([r.id for r in records])
        return len(records)


class FailingSink:
    """Raises (with a secret in the message) for the first `failures` calls."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.batches: list[list[str]] = []

    def write_batch(self, records: Sequence[RequestRecord]) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError("connect to postgresql://gw:hunter2@db failed; prompt: my secret")
        self.batches.append([r.id for r in records])
        return len(records)


async def test_a_full_queue_drops_and_counts_without_blocking_the_request_path() -> None:
    sink = HeldSink()
    async with open_log_writer(sink, queue_size=100, batch_size=10) as writer:
        assert writer.submit(record(0))
        # The writer is now inside write_batch, on its thread, and stays there; the
        # event loop is free (this very wait runs on it).
        assert await anyio.to_thread.run_sync(sink.entered.wait, WAIT)

        accepted = [writer.submit(record(n)) for n in range(1, 151)]

        assert accepted == [True] * 100 + [False] * 50
        assert (writer.queue_depth, writer.dropped, writer.written) == (100, 50, 0)
        sink.release.set()
    assert (writer.queue_depth, writer.dropped, writer.written, writer.failed) == (0, 50, 101, 0)
    # Batches in order, none larger than asked; the dropped are the last fifty.
    assert sink.batches[0] == ["log-000000"]
    assert all(len(batch) <= 10 for batch in sink.batches)
    assert [i for batch in sink.batches for i in batch] == [f"log-{n:06d}" for n in range(101)]


async def test_aclose_flushes_five_thousand_queued_records(database_url: str) -> None:
    store = await Store.open(database_url)
    try:
        writer = LogWriter(store, queue_size=5000, batch_size=500)
        async with anyio.create_task_group() as tasks:
            await tasks.start(writer.run)
            for n in range(5000):
                assert writer.submit(record(n))
            assert writer.queue_depth >= 4999
            await writer.aclose()
        counters = (writer.written, writer.dropped, writer.failed, writer.queue_depth)
        assert counters == (5000, 0, 0, 0)
        assert await anyio.to_thread.run_sync(store.count) == 5000
        assert writer.submit(record(5000)) is False  # closed: counted, never raised
        assert writer.dropped == 1
    finally:
        await store.aclose()


async def test_a_writer_that_was_never_started_flushes_on_aclose(sqlite_url: str) -> None:
    store = await Store.open(sqlite_url)
    writer = LogWriter(store, batch_size=7)
    for n in range(20):
        writer.submit(record(n))
    await writer.aclose()
    assert writer.written == 20
    assert await anyio.to_thread.run_sync(store.count) == 20
    await store.aclose()


async def test_a_cancelled_scope_still_flushes_on_the_way_out(database_url: str) -> None:
    store = await Store.open(database_url)
    with anyio.CancelScope() as scope:
        async with open_log_writer(store) as writer:
            for n in range(300):
                writer.submit(record(n))
            scope.cancel()  # as Ctrl-C or SIGTERM does to the server's task group
            await anyio.sleep_forever()
    assert writer.written == 300
    assert await anyio.to_thread.run_sync(store.count) == 300
    await store.aclose()


async def test_a_failing_batch_is_retried_then_counted_and_logged_without_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = FailingSink(failures=3)
    with caplog.at_level(logging.WARNING, logger="frontends.store"):
        async with open_log_writer(sink, attempts=3, retry_delay=0) as writer:
            for n in range(5):
                writer.submit(record(n))
            # Let the first batch fail all three attempts before more arrive.
            while writer.failed == 0:
                await anyio.sleep(0)
            for n in range(5, 8):
                writer.submit(record(n))
    assert sink.calls == 4
    assert (writer.failed, writer.written) == (5, 3)
    assert sink.batches == [["log-000005", "log-000006", "log-000007"]]
    assert "5 records lost after 3 attempts (RuntimeError)" in caplog.text
    assert "hunter2" not in caplog.text and "secret" not in caplog.text


async def test_a_passing_failure_costs_nothing() -> None:
    sink = FailingSink(failures=2)
    async with open_log_writer(sink, attempts=3, retry_delay=0) as writer:
        for n in range(4):
            writer.submit(record(n))
    assert (writer.written, writer.failed) == (4, 0)


async def test_an_unreachable_database_loses_the_batch_but_never_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A real server refusing a database that does not exist: what an operator sees.
    url = POSTGRES_URL.replace("postgres@", "postgres:pw-hunter2@", 1).rsplit("/", 1)[0]
    store = Store(create_store_engine(f"{url}/igw_no_such_database"))
    try:
        with caplog.at_level(logging.WARNING, logger="frontends.store"):
            async with open_log_writer(store, attempts=2, retry_delay=0) as writer:
                writer.submit(record(1))
        assert (writer.failed, writer.written) == (1, 0)
        assert "OperationalError" in caplog.text
        assert "hunter2" not in caplog.text
    finally:
        await store.aclose()


async def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        LogWriter(HeldSink(), queue_size=0)


class CountingSink:
    def __init__(self) -> None:
        self.stored = 0

    def write_batch(self, records: Sequence[RequestRecord]) -> int:
        self.stored += len(records)
        return len(records)


async def test_a_flush_that_runs_out_of_time_counts_what_it_left() -> None:
    sink = CountingSink()
    async with open_log_writer(sink, batch_size=10, flush_timeout=0) as writer:
        for n in range(100):
            writer.submit(record(n))
    assert writer.failed > 0
    assert writer.written == sink.stored
    assert writer.written + writer.failed == 100
    assert writer.dropped == 0


async def test_a_writer_cancelled_between_attempts_counts_its_batch_failed() -> None:
    sink = FailingSink(failures=100)
    with anyio.CancelScope() as scope:
        async with open_log_writer(sink, attempts=5, retry_delay=3600, flush_timeout=0) as writer:
            for n in range(4):
                writer.submit(record(n))
            while sink.calls == 0:
                await anyio.sleep(0)
            scope.cancel()
    assert (writer.written, writer.failed, writer.dropped) == (0, 4, 0)


async def test_records_arriving_one_by_one_gather_into_one_batch_and_a_close_cuts_the_wait() -> (
    None
):
    sink = CountingBatches()
    # A linger of an hour: the records gather for that long, unless the writer closes.
    async with open_log_writer(sink, linger=3600) as writer:
        for n in range(5):
            writer.submit(record(n))
            await anyio.lowlevel.checkpoint()  # the writer runs between the records
    assert sink.batches == [[f"log-{n:06d}" for n in range(5)]]
    assert (writer.written, writer.failed, writer.dropped) == (5, 0, 0)


class CountingBatches:
    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def write_batch(self, records: Sequence[RequestRecord]) -> int:
        self.batches.append([r.id for r in records])
        return len(records)


async def test_flushed_cuts_a_long_linger_short_and_returns_once_the_records_are_written() -> (
    None
):
    sink = CountingBatches()
    async with open_log_writer(sink, linger=3600) as writer:
        assert await writer.flushed()  # nothing submitted: nothing to wait for
        for n in range(3):
            writer.submit(record(n))
        assert await writer.flushed()
        assert sink.batches == [[f"log-{n:06d}" for n in range(3)]]
        writer.submit(record(3))  # the writer lingers again, and is hurried again
        assert await writer.flushed()
        assert sink.batches[1:] == [["log-000003"]]
    assert (writer.written, writer.failed, writer.dropped) == (4, 0, 0)


async def test_flushed_waits_for_a_record_submitted_while_a_batch_is_being_written() -> None:
    sink = HeldSink()
    flushed: list[bool] = []
    async with open_log_writer(sink, linger=3600) as writer:

        async def flush() -> None:
            flushed.append(await writer.flushed())

        writer.submit(record(0))
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(flush)  # hurries the first record into the sink
            await anyio.to_thread.run_sync(sink.entered.wait, WAIT)
            writer.submit(record(1))  # while the first batch is held in the sink
            tasks.start_soon(flush)
            await anyio.lowlevel.checkpoint()
            assert flushed == []
            sink.release.set()
        assert flushed == [True, True]
        assert sink.batches == [["log-000000"], ["log-000001"]]


async def test_flushed_gives_up_after_its_timeout_and_says_so() -> None:
    sink = HeldSink()
    async with open_log_writer(sink, linger=3600) as writer:
        writer.submit(record(0))
        assert not await writer.flushed(timeout=0)
        await anyio.to_thread.run_sync(sink.entered.wait, WAIT)  # hurried all the same
        sink.release.set()
        assert await writer.flushed()


async def test_flushed_does_not_wait_for_a_writer_that_is_not_running() -> None:
    writer = LogWriter(CountingBatches())
    writer.submit(record(0))
    assert not await writer.flushed()
    await writer.aclose()
    assert await writer.flushed()
