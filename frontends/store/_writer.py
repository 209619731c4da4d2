"""The log writer: records go into a bounded queue on the request path and reach the
database in batches, from one worker thread, never blocking the event loop.

Theory of operation.  `submit()` is a plain function: it puts the record in the queue
(an anyio memory stream of `queue_size` records) and returns at once; when the queue is
full, or the writer is closed, the record is counted in `dropped` and nothing is raised.
`run()`, a task, takes the first record waiting, lets more gather for up to `linger`
seconds (`LINGER` by default: a batch costs a thread hand-off and a transaction whatever
its size, and the thread competes with the event loop for the GIL, so at low load one
batch per request would cost more than the request's own work), then takes whatever is
queued (up to `batch_size`) and hands the batch to the sink's blocking `write_batch` on
a worker thread of its own (a capacity limiter of one, so the writer never waits for
threads other work holds, and batches are written in order).  While a batch is being
written, the next one gathers.  A batch that fails is retried `attempts` times in all,
with a doubling pause; after that its records are counted in `failed` and a log line
says how many and the error's type, never its message (which could quote a prompt or a
URL with a password).  `aclose()` stops the queue and waits until everything queued is
written: a graceful stop loses nothing while the database answers (and lingers no more).

Reading one's own writes.  Whoever reads the log in this process (the usage route, the
status page) first awaits `flushed()`: it cuts the linger short and waits until every
record submitted before the call has been written (or has failed), for at most a
timeout.  Records count in order: `_submitted` when queued, `_settled` when their batch
is done, so a waiter needs only the number it must reach.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from frontends.store._records import RequestRecord

__all__ = ["FLUSH_WAIT", "LINGER", "BatchSink", "LogWriter", "open_log_writer"]

log = logging.getLogger("frontends.store")

# How long records gather into one batch by default (measured: see the commit that set
# it).  With no linger, at low load every request was a batch of its own.
LINGER = 0.020
# How long a reader waits, at most, for the records submitted before it.
FLUSH_WAIT = 5.0


class BatchSink(Protocol):
    """Where the writer's batches go: `Store`, or a test's stand-in.  (Not the driver's
    `frontends.log_sink.LogSink`, which takes one `LogEntry`; the wiring maps entries to
    records and submits them to a `LogWriter`.)  Blocking; called on the
    writer's worker thread.  Returns how many of the records were stored (the others
    were refused for their content); raises when the batch as a whole could not be
    written, so that it is retried."""

    def write_batch(self, records: Sequence[RequestRecord], /) -> int: ...


def _describe(exc: BaseException) -> str:
    """An error's type (and the database's own error code), never its message."""
    parts = [type(exc).__name__]
    orig = getattr(exc, "orig", None)
    if orig is not None:
        parts.append(f"{type(orig).__module__}.{type(orig).__name__}")
        sqlstate = getattr(orig, "sqlstate", None)
        if isinstance(sqlstate, str):
            parts.append(f"SQLSTATE {sqlstate}")
    return ", ".join(parts)


class LogWriter:
    """The request log's queue and the task that drains it into a `BatchSink`.

    Call `submit()` from the event loop's thread (it neither blocks nor raises); run
    `run()` as a task (or use `open_log_writer`); `aclose()` flushes and stops.
    `queue_depth`, `dropped`, `written` and `failed` are for metrics and health.
    """

    def __init__(
        self,
        sink: BatchSink,
        *,
        queue_size: int = 10_000,
        batch_size: int = 500,
        attempts: int = 3,
        retry_delay: float = 0.5,
        linger: float = LINGER,
    ) -> None:
        if queue_size < 1 or batch_size < 1 or attempts < 1 or retry_delay < 0 or linger < 0:
            raise ValueError(
                "queue_size, batch_size and attempts must be at least 1, "
                "retry_delay and linger at least 0"
            )
        self._sink = sink
        self._batch_size = batch_size
        self._attempts = attempts
        self._retry_delay = retry_delay
        self._linger = linger
        # Set by aclose(): flush now, gather no longer.
        self._flushing = False
        # The linger under way, cut short by aclose() and flushed().
        self._lingering: anyio.CancelScope | None = None
        # Records queued, and records whose batch is done (written or failed), in order;
        # `_wanted` is the highest count a reader waits for.
        self._submitted = 0
        self._settled = 0
        self._wanted = 0
        # Set (and forgotten) when a batch is done, made only when someone waits.
        self._progress: anyio.Event | None = None
        self._send: MemoryObjectSendStream[RequestRecord]
        self._receive: MemoryObjectReceiveStream[RequestRecord]
        self._send, self._receive = anyio.create_memory_object_stream[RequestRecord](queue_size)
        self._dropped = 0
        self._written = 0
        self._failed = 0
        self._stopped: anyio.Event | None = None

    # -- the request path ---------------------------------------------------------------

    def submit(self, record: RequestRecord) -> bool:
        """Queue a record for writing; False (and counted in `dropped`) if the queue is
        full or the writer closed.  Never blocks, never raises."""
        try:
            self._send.send_nowait(record)
        except anyio.WouldBlock:
            self._drop("queue full")
            return False
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._drop("writer closed")
            return False
        self._submitted += 1
        return True

    def _drop(self, why: str) -> None:
        self._dropped += 1
        if self._dropped == 1 or self._dropped % 1000 == 0:
            log.warning("request log: %s, %d records dropped so far", why, self._dropped)

    # -- counters -----------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        """Records waiting to be written (not counting the batch being written)."""
        return self._send.statistics().current_buffer_used

    @property
    def dropped(self) -> int:
        """Records refused at `submit` because the queue was full or the writer closed."""
        return self._dropped

    @property
    def written(self) -> int:
        """Records the sink stored."""
        return self._written

    @property
    def failed(self) -> int:
        """Records lost after they were queued: their batch failed every attempt, or the
        database refused them, or the writer was cancelled before writing them."""
        return self._failed

    # -- the writer task ----------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Write batches until `aclose()` and the queue is empty."""
        if self._stopped is not None:
            raise RuntimeError("a LogWriter runs once")
        self._stopped = anyio.Event()
        limiter = anyio.CapacityLimiter(1)
        task_status.started()
        batch: list[RequestRecord] = []
        try:
            async with self._receive:
                async for first in self._receive:
                    batch = [first]
                    if (
                        self._linger
                        and not self._hurried()
                        and (self.queue_depth + 1 < self._batch_size)
                    ):
                        with anyio.move_on_after(self._linger) as self._lingering:
                            await anyio.sleep_forever()
                        self._lingering = None
                    while len(batch) < self._batch_size:
                        try:
                            batch.append(self._receive.receive_nowait())
                        except (anyio.WouldBlock, anyio.EndOfStream):
                            break
                    await self._write(batch, limiter)
                    batch = []
        finally:
            # Cancelled (not closed): the batch in hand (cancelled between attempts) and
            # what is still queued will not be written.
            self._failed += len(batch) + self.queue_depth
            self._send.close()
            self._stopped.set()
            self._progressed()

    def _hurried(self) -> bool:
        """Closing, or someone waits for a record not yet written: no lingering."""
        return self._flushing or self._wanted > self._settled

    def _hurry(self) -> None:
        if self._lingering is not None:
            self._lingering.cancel()

    def _progressed(self) -> None:
        if self._progress is not None:
            self._progress.set()
            self._progress = None

    async def _write(self, batch: list[RequestRecord], limiter: anyio.CapacityLimiter) -> None:
        try:
            await self._write_attempts(batch, limiter)
        finally:
            self._settled += len(batch)
            self._progressed()

    async def _write_attempts(
        self, batch: list[RequestRecord], limiter: anyio.CapacityLimiter
    ) -> None:
        for attempt in range(1, self._attempts + 1):
            try:
                # The thread cannot be stopped mid-batch; shielded, its result is counted.
                with anyio.CancelScope(shield=True):
                    stored = await anyio.to_thread.run_sync(
                        self._sink.write_batch, batch, limiter=limiter
                    )
            except Exception as exc:
                if attempt < self._attempts:
                    log.warning(
                        "request log: writing %d records failed (%s), attempt %d of %d",
                        len(batch),
                        _describe(exc),
                        attempt,
                        self._attempts,
                    )
                    await anyio.sleep(self._retry_delay * 2 ** (attempt - 1))
                    continue
                self._failed += len(batch)
                log.error(
                    "request log: %d records lost after %d attempts (%s)",
                    len(batch),
                    self._attempts,
                    _describe(exc),
                )
                return
            stored = max(0, min(stored, len(batch)))
            self._written += stored
            self._failed += len(batch) - stored
            return

    async def flushed(self, timeout: float = FLUSH_WAIT) -> bool:
        """Wait until every record submitted before this call has been written (or has
        failed), cutting the linger short, for at most `timeout` seconds.  True when they
        all have; False when the time ran out (the database slow or down) or the writer
        is not running, so the reader goes on with what the database holds."""
        target = self._submitted
        if self._settled >= target:
            return True
        if self._stopped is None or self._stopped.is_set():
            return False
        self._wanted = max(self._wanted, target)
        self._hurry()
        with anyio.move_on_after(timeout):
            while self._settled < target and not self._stopped.is_set():
                if self._progress is None:
                    self._progress = anyio.Event()
                await self._progress.wait()
        return self._settled >= target

    async def aclose(self) -> None:
        """Stop taking records and wait until every queued one is written (or has
        failed every attempt).  If `run()` was never started, drain here."""
        self._send.close()
        self._flushing = True
        self._hurry()
        if self._stopped is None:
            await self.run()
        else:
            await self._stopped.wait()


@asynccontextmanager
async def open_log_writer(
    sink: BatchSink,
    *,
    flush_timeout: float = 30.0,
    queue_size: int = 10_000,
    batch_size: int = 500,
    attempts: int = 3,
    retry_delay: float = 0.5,
    linger: float = LINGER,
) -> AsyncIterator[LogWriter]:
    """A running `LogWriter`; on exit, even when cancelled, the queue is flushed for up
    to `flush_timeout` seconds, then the writer is stopped (the rest counted failed)."""
    writer = LogWriter(
        sink,
        queue_size=queue_size,
        batch_size=batch_size,
        attempts=attempts,
        retry_delay=retry_delay,
        linger=linger,
    )
    # The writer's task is shielded: cancelling the host's scope (SIGTERM, Ctrl-C) must
    # not stop it before the flush; it ends when flushed, or when the flush times out.
    shield = anyio.CancelScope(shield=True)

    async def run_shielded(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        with shield:
            await writer.run(task_status=task_status)

    async with anyio.create_task_group() as tasks:
        await tasks.start(run_shielded)
        try:
            yield writer
        finally:
            with anyio.move_on_after(flush_timeout, shield=True):
                await writer.aclose()
            shield.cancel()
