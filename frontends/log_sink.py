"""Where the driver's `WriteLog` effects go: one finished request, one record.

The driver only needs `write(entry, timing)`, which must not block or await (it is
called on the request path); a store that keeps records elsewhere, or metrics that count
them, implement the same method.  The core's entry says what happened; the `Timing` says
when, by the edge's clocks (the core reads none).
"""

from __future__ import annotations

import json
import logging
from typing import Protocol

import attrs

from core import LogEntry

__all__ = ["FanOut", "LogSink", "LoggerSink", "Timing"]


@attrs.frozen(kw_only=True)
class Timing:
    """When one request's moments happened: wall-clock epoch seconds, measured with the
    monotonic clock from `received_at` so they never run backwards.

    `first_byte_at` is when the answer's first byte was handed to the client (None if
    none was); `upstream_seconds` how long the adaptor took to answer or to open its
    stream (None if it was never called).

    Beside the clocks, what only the edge saw: `request_id`, the HTTP request id (the
    client's `X-Request-ID` or one made for it; the entry's `request_id` is the
    gateway's own unique id, the record's); and, only when capture is on, the first bytes
    of the client's body (`prompt`) and of what was sent back (`response`)."""

    received_at: float
    done_at: float
    first_byte_at: float | None = None
    upstream_seconds: float | None = None
    request_id: str | None = None
    prompt: bytes | None = attrs.field(default=None, repr=False)
    response: bytes | None = attrs.field(default=None, repr=False)

    @property
    def duration(self) -> float:
        return self.done_at - self.received_at

    @property
    def time_to_first_byte(self) -> float | None:
        return None if self.first_byte_at is None else self.first_byte_at - self.received_at


class LogSink(Protocol):
    def write(self, entry: LogEntry, timing: Timing) -> None:
        """Take one finished request's record; never block, never raise."""
        ...


class FanOut:
    """Several sinks as one (the store and the metrics both want every record); a sink
    that raises is logged and does not keep the record from the others."""

    def __init__(self, *sinks: LogSink) -> None:
        self._sinks = sinks

    @property
    def sinks(self) -> tuple[LogSink, ...]:
        return self._sinks

    def write(self, entry: LogEntry, timing: Timing) -> None:
        for sink in self._sinks:
            try:
                sink.write(entry, timing)
            except Exception:
                logging.getLogger("inference_gateway").exception("log sink %r failed", sink)


class LoggerSink:
    """Each record as one JSON line on the `inference_gateway.requests` logger."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger or logging.getLogger("inference_gateway.requests")

    def write(self, entry: LogEntry, timing: Timing) -> None:
        if not self._logger.isEnabledFor(logging.INFO):
            return  # no line will be written: build none
        # Never a body: with capture on, those go to the store alone.
        clocks = attrs.asdict(timing, filter=lambda a, _: a.name not in ("prompt", "response"))
        record = {
            **attrs.asdict(entry),
            **clocks,
            "log_id": entry.request_id,
            "request_id": timing.request_id or entry.request_id,
        }
        self._logger.info(json.dumps(record, default=str))
