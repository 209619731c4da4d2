"""Request ids and the access log: one ASGI layer around the Quart app.

Every HTTP request gets a request id: the client's `X-Request-ID` when it is printable
ASCII of at most 128 characters, else a new one.  The id is put in the ASGI scope for the
handlers (who hand it to the `Gateway`, which sends it on to the backend and keeps it in
the request log) and returned as `X-Request-ID` on every answer, errors and streams
alike; a backend's own `x-request-id` is relayed beside it as `x-backend-request-id`.

When the answer's last byte has gone (or the client left), one JSON line goes to the
`inference_gateway.access` logger: time, request id, method, path, status, duration,
and for OpenAI calls user, model and tokens (from the driver's record, which this layer
also receives as a `LogSink`).  Never a header's value, a query string or a body.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

import attrs

from core import LogEntry
from frontends.ids import new_id
from frontends.log_sink import Timing

__all__ = ["SCOPE_KEY", "AccessLog", "Trace", "valid_request_id"]

SCOPE_KEY = "inference_gateway.trace"
HEADER = b"x-request-id"
BACKEND_HEADER = b"x-backend-request-id"
MAX_REQUEST_ID = 128

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]


def valid_request_id(value: bytes | str | None) -> str | None:
    """The client's request id if it may be kept: printable ASCII (no spaces at the
    ends), 1 to 128 characters; else None (and the gateway makes one)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not 0 < len(value) <= MAX_REQUEST_ID or value.strip() != value:
        return None
    return value if all(" " <= c <= "~" for c in value) else None


@attrs.define
class Trace:
    """One HTTP request as this layer follows it; handlers read `request_id`/`log_id`."""

    request_id: str
    log_id: str
    entry: LogEntry | None = None


class AccessLog:
    """The ASGI layer (wrap `app.asgi_app`) and the `LogSink` that tells it each OpenAI
    call's user, model and tokens (add it to the gateway's sinks)."""

    def __init__(self, app: ASGIApp, logger: logging.Logger | None = None) -> None:
        self._app = app
        self._logger = logger or logging.getLogger("inference_gateway.access")
        self._traces: dict[str, Trace] = {}

    def write(self, entry: LogEntry, timing: Timing) -> None:
        trace = self._traces.get(entry.request_id)
        if trace is not None:
            trace.entry = entry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        given = next((v for k, v in scope.get("headers", ()) if k.lower() == HEADER), None)
        trace = Trace(request_id=valid_request_id(given) or new_id(), log_id=new_id())
        self._traces[trace.log_id] = trace
        received = time.time()
        started = time.monotonic()
        status: list[int] = []

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
                message = {**message, "headers": _with_id(message.get("headers", ()), trace)}
            await send(message)

        try:
            # Into the request's own scope, not a copy of it that a stream would keep
            # beside it for its whole life.
            scope[SCOPE_KEY] = trace
            await self._app(scope, receive, send_with_id)
        finally:
            self._traces.pop(trace.log_id, None)
            self._log(scope, trace, received, time.monotonic() - started, status)

    def _log(
        self, scope: Scope, trace: Trace, received: float, seconds: float, status: list[int]
    ) -> None:
        if not self._logger.isEnabledFor(logging.INFO):
            return
        entry = trace.entry
        usage = entry.usage if entry is not None else None
        line = {
            "time": datetime.fromtimestamp(received, UTC).isoformat(timespec="milliseconds"),
            "request_id": trace.request_id,
            "method": scope.get("method"),
            "path": scope.get("path"),
            "status": status[0] if status else None,
            "duration_ms": round(seconds * 1000, 1),
            "user": entry.username if entry else None,
            "model": entry.model if entry else None,
            "prompt_tokens": usage.prompt_tokens if usage else None,
            "completion_tokens": usage.completion_tokens if usage else None,
            "total_tokens": usage.total_tokens if usage else None,
            "tokens_estimated": entry.estimated if entry else None,
            "error_code": entry.error_code if entry else None,
        }
        self._logger.info(json.dumps(line))


def _with_id(headers: Any, trace: Trace) -> list[tuple[bytes, bytes]]:
    """The answer's headers with our request id; a backend's own id renamed beside it."""
    kept: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        if name.lower() == HEADER:
            kept.append((BACKEND_HEADER, value))
        elif name.lower() != BACKEND_HEADER:
            kept.append((name, value))
    kept.append((HEADER, trace.request_id.encode("ascii")))
    return kept
