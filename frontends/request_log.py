"""The request log, wired in: the driver's records go to the store, through its writer.

`StoreSink` is a `LogSink`: it maps the core's `LogEntry` and the edge's `Timing` to a
`RequestRecord` and submits it to the `LogWriter`'s queue (never blocking, never
raising).  `RequestLog` holds the store and runs the writer for a server's (or an
embedding program's) lifetime: `RequestLog.open(url)` opens the database and applies
the migrations at start; `async with request_log.running():` runs the writer and, on
leaving (a graceful stop included), flushes everything queued.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from core import ConfigurationError, LogEntry
from frontends.log_sink import Timing
from frontends.store import LINGER, LogWriter, RequestRecord, Store, open_log_writer

__all__ = ["DATABASE_SETTING", "RequestLog", "StoreSink", "record_of"]

log = logging.getLogger("inference_gateway")

DATABASE_SETTING = "INFERENCE_GATEWAY_DATABASE_URL"


def record_of(
    entry: LogEntry, timing: Timing, *, capture_limit: int | None = None
) -> RequestRecord:
    """The store's record of one finished request.  Its id is the entry's request id,
    the gateway's own (the seed's `request_log_id`); `request_id` is the HTTP one.  The
    prompt and response are kept only with a `capture_limit` (characters)."""
    usage = entry.usage
    capturing = capture_limit is not None
    first_byte = timing.first_byte_at
    return RequestRecord(
        id=entry.request_id,
        request_id=timing.request_id or entry.request_id,
        received_at=datetime.fromtimestamp(timing.received_at, UTC),
        first_byte_at=None if first_byte is None else datetime.fromtimestamp(first_byte, UTC),
        done_at=datetime.fromtimestamp(timing.done_at, UTC),
        route=entry.route,
        status=entry.status,
        streamed=entry.stream,
        username=entry.username,
        identity_provider=entry.provider,
        cluster=entry.cluster,
        framework=entry.framework,
        model=entry.model,
        endpoint_slug=entry.endpoint_slug,
        error_code=entry.error_code,
        backend_task_id=entry.task_id,
        prompt_tokens=usage.prompt_tokens if usage else None,
        completion_tokens=usage.completion_tokens if usage else None,
        total_tokens=usage.total_tokens if usage else None,
        tokens_estimated=entry.estimated,
        bytes_in=entry.bytes_in,
        bytes_out=entry.bytes_out,
        client_address=entry.client,
        prompt=_captured(timing.prompt, capture_limit) if capturing else None,
        response=_captured(timing.response, capture_limit) if capturing else None,
        cancelled=entry.cancelled,
        detail=entry.detail,
    )


def _captured(data: bytes | None, limit: int | None) -> str | None:
    if data is None or limit is None:
        return None
    return data.decode("utf-8", errors="replace")[:limit]


class StoreSink:
    """Each record into a `LogWriter`'s queue: a `LogSink` that never blocks or raises."""

    def __init__(self, writer: LogWriter, *, capture_limit: int | None = None) -> None:
        self._writer = writer
        self._capture_limit = capture_limit

    def write(self, entry: LogEntry, timing: Timing) -> None:
        try:
            record = record_of(entry, timing, capture_limit=self._capture_limit)
        except Exception:  # a value the record refuses: a bug of ours, never the request's
            log.exception("request log: entry %s could not be recorded", entry.request_id)
            return
        self._writer.submit(record)


class RequestLog:
    """The request log of one gateway: its store, and the writer while it runs.

    A `LogSink` itself: before `running()` starts (or after it ends) a record has
    nowhere to go and is counted in `dropped`, as the writer counts a full queue."""

    def __init__(
        self,
        store: Store,
        *,
        capture_limit: int | None = None,
        flush_timeout: float = 30.0,
        queue_size: int = 10_000,
        linger: float = LINGER,
        own_store: bool = False,
    ) -> None:
        self.store = store
        self.capture_limit = capture_limit
        self._flush_timeout = flush_timeout
        self._queue_size = queue_size
        self._linger = linger
        self._own_store = own_store
        self._sink: StoreSink | None = None
        self._writer: LogWriter | None = None
        self._last: dict[str, int] = {"written": 0, "dropped": 0, "failed": 0}
        self._unqueued = 0

    @classmethod
    def open(
        cls, url: str, *, capture_limit: int | None = None, linger: float = LINGER
    ) -> RequestLog:
        """Open the database at `url` and migrate it (blocking: call it at start, before
        the event loop, or on a worker thread).  A bad URL or a database that does not
        answer is a ConfigurationError naming INFERENCE_GATEWAY_DATABASE_URL."""
        from frontends.store._engine import safe_url

        try:
            store = Store.connect(url)
        except ValueError as exc:
            raise ConfigurationError(str(exc), file="settings", field=DATABASE_SETTING) from None
        except Exception as exc:
            where = _safe(url, safe_url)
            raise ConfigurationError(
                f"cannot open the request log's database {where} ({type(exc).__name__}); "
                f"check {DATABASE_SETTING} and that the database answers",
                file="settings",
                field=DATABASE_SETTING,
            ) from None
        return cls(store, capture_limit=capture_limit, linger=linger, own_store=True)

    # -- the request path ---------------------------------------------------------------

    def write(self, entry: LogEntry, timing: Timing) -> None:
        sink = self._sink
        if sink is None:
            self._unqueued += 1
            log.warning("request log: not running, record %s dropped", entry.request_id)
            return
        sink.write(entry, timing)

    # -- the lifetime -------------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[RequestLog]:
        """Run the writer; on leaving, even cancelled, flush what is queued (for up to
        `flush_timeout` seconds) and close the store if `open` opened it."""
        try:
            async with open_log_writer(
                self.store,
                flush_timeout=self._flush_timeout,
                queue_size=self._queue_size,
                linger=self._linger,
            ) as writer:
                self._writer = writer
                self._sink = StoreSink(writer, capture_limit=self.capture_limit)
                self.store.attach(writer)  # its readers see what it has submitted
                try:
                    yield self
                finally:
                    self._sink = None
                    self.store.detach(writer)
            self._last = {
                "written": writer.written,
                "dropped": writer.dropped,
                "failed": writer.failed,
            }
            log.info(
                "request log flushed: %d written, %d dropped, %d failed",
                writer.written,
                writer.dropped + self._unqueued,
                writer.failed,
            )
        finally:
            self._writer = None
            if self._own_store:
                await self.store.aclose()

    @property
    def queue_depth(self) -> int:
        """Records waiting to be written (for metrics: a `RequestLog` is their log queue)."""
        return int(self.status()["queue_depth"])

    @property
    def dropped(self) -> int:
        """Records dropped so far: the queue was full, or the log was not running."""
        return int(self.status()["dropped"])

    def status(self) -> dict[str, Any]:
        """For health and metrics: records waiting, written, dropped and failed so far."""
        writer = self._writer
        if writer is None:
            dropped = self._last["dropped"] + self._unqueued
            return {"queue_depth": 0, **self._last, "dropped": dropped}
        return {
            "queue_depth": writer.queue_depth,
            "written": writer.written,
            "dropped": writer.dropped + self._unqueued,
            "failed": writer.failed,
        }


def _safe(url: str, render: Any) -> str:
    try:
        return str(render(url))
    except Exception:
        return "(unreadable URL)"
