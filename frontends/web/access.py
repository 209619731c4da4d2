"""The one ASGI layer around the Quart app: request ids, the header limit, the access log.

Every HTTP request gets a request id: the client's `X-Request-ID` when it is printable
ASCII of at most 128 characters, else a new one.  The id is put in the ASGI scope for the
handlers (who hand it to the `Gateway`, which sends it on to the backend and keeps it in
the request log) and returned as `X-Request-ID` on every answer, errors and streams
alike; a backend's own `x-request-id` is relayed beside it as `x-backend-request-id`.

A request whose head (request line and headers) is over the gateway's limit gets an
OpenAI-shaped 431 here and never reaches the app (`frontends.web.limits` says why
Hypercorn cannot give that answer itself).

When the answer's last byte has gone (or the client left), one JSON line goes to the
`inference_gateway.access` logger: time, request id, method, path, status, duration,
and for OpenAI calls user, model and tokens (from the driver's record, which this layer
also receives as a `LogSink`).  Never a header's value, a query string or a body.

One layer, not one per concern: each ASGI layer costs every request a coroutine frame
and a wrapped `send`, and every open stream keeps them alive; here one small object per
request (`Trace`) carries the ids, the status and the wrapped `send`/`receive`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from json.encoder import encode_basestring_ascii
from typing import Any

import anyio

from core import LogEntry, is_plain_value
from frontends.ids import new_id
from frontends.log_sink import Timing
from frontends.web.limits import head_refusal, head_size

__all__ = ["SCOPE_KEY", "AccessLog", "Trace", "access_line", "valid_request_id"]

SCOPE_KEY = "inference_gateway.trace"
HEADER = b"x-request-id"
BACKEND_HEADER = b"x-backend-request-id"

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
    return value if is_plain_value(value) else None


class Trace:
    """One HTTP request as this layer follows it; handlers read `request_id`, `log_id`
    and `body_received` (the client's whole body has reached Quart: nothing is left to
    wait for or to read).  `received` is the wall clock when it arrived, for its line."""

    __slots__ = (
        "_receive",
        "_send",
        "body_received",
        "entry",
        "log_id",
        "received",
        "request_id",
        "status",
    )

    def __init__(
        self, request_id: str, log_id: str, received: float, receive: Receive, send: Send
    ) -> None:
        self.request_id = request_id
        self.log_id = log_id
        self.received = received  # wall clock, epoch seconds
        self.entry: LogEntry | None = None
        self.status: int | None = None
        self.body_received = False
        self._receive = receive
        self._send = send

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request" and not message.get("more_body", False):
            self.body_received = True
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            message = {**message, "headers": _with_id(message.get("headers", ()), self)}
        await self._send(message)

    async def shielded_send(self, message: Message) -> None:
        """`send` run to its end even while the app is being cancelled (trio, below)."""
        with anyio.CancelScope(shield=True):
            await self.send(message)


class AccessLog:
    """The ASGI layer (wrap `app.asgi_app`) and the `LogSink` that tells it each OpenAI
    call's user, model and tokens (add it to the gateway's sinks).

    `shield_sends` is a workaround for quart-trio under Hypercorn's trio worker, which
    otherwise never closes a connection.  Hypercorn's trio server does connection work
    inside the app's last `send()` (the one that ends the response): it tells the app's
    request the client is done (`http.disconnect`), then closes the socket when the
    response said `Connection: close`, or starts the keep-alive idle timer.  quart-trio
    answers `http.disconnect` by cancelling its request's task group, which is the very
    task making that `send()`; the close or the timer start is cancelled half-way, and
    the socket stays open until the client goes.  Hypercorn already shields the socket
    writes themselves, so shielding the whole call adds no new way to hang; the
    cancellation still arrives at the app's next checkpoint after `send()` returns.  The
    fix belongs upstream (Hypercorn's trio server should shield that work, or quart-trio
    should not cancel the task that is sending).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_header_bytes: int,
        shield_sends: bool = False,
        logger: logging.Logger | None = None,
    ) -> None:
        self._app = app
        self._max_header_bytes = max_header_bytes
        self._shield_sends = shield_sends
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
        given = None
        for name, value in scope["headers"]:
            if name == HEADER or name.lower() == HEADER:
                given = value
                break
        trace = Trace(valid_request_id(given) or new_id(), new_id(), time.time(), receive, send)
        started = time.monotonic()
        self._traces[trace.log_id] = trace
        try:
            # Into the request's own scope, not a copy of it that a stream would keep
            # beside it for its whole life.
            scope[SCOPE_KEY] = trace
            traced_send = trace.shielded_send if self._shield_sends else trace.send
            if head_size(scope) > self._max_header_bytes:
                for message in head_refusal(scope, self._max_header_bytes):
                    await traced_send(message)
            else:
                await self._app(scope, trace.receive, traced_send)
        finally:
            del self._traces[trace.log_id]
            self._log(scope, trace, time.monotonic() - started)

    def _log(self, scope: Scope, trace: Trace, seconds: float) -> None:
        logger = self._logger
        if not logger.isEnabledFor(logging.INFO):
            return
        line = access_line(
            trace.received,
            trace.request_id,
            scope.get("method"),
            scope.get("path"),
            trace.status,
            seconds,
            trace.entry,
        )
        # `handle(makeRecord(...))`, not `info()`: the same record for the same handlers,
        # without the walk up the stack that finds the caller's file and line, which an
        # access line never shows.
        logger.handle(logger.makeRecord(logger.name, logging.INFO, "", 0, line, (), None))


def access_line(
    received: float,
    request_id: str,
    method: str | None,
    path: str | None,
    status: int | None,
    seconds: float,
    entry: LogEntry | None,
) -> str:
    """One access line: a JSON object of the request's fields, in a fixed order.

    Written by hand rather than by `json.dumps` of a dict (a third of the cost, and it is
    paid on every request); the strings go through json's own encoder, so the line is
    the same JSON `json.dumps` would write.  A request with no OpenAI call (no `entry`)
    ends in one constant text, and one without counts in another: those nulls are not
    written out field by field on every line.
    """
    head = (
        f'{{"time": "{_utc_iso(received)}", "request_id": {_text(request_id)}, '
        f'"method": {_text(method)}, "path": {_text(path)}, "status": {_number(status)}, '
        f'"duration_ms": {round(seconds * 1000, 1)!r}, '
    )
    if entry is None:
        return head + _NO_ENTRY
    usage = entry.usage
    tokens = (
        _NO_TOKENS
        if usage is None
        else (
            f'"prompt_tokens": {_number(usage.prompt_tokens)}, '
            f'"completion_tokens": {_number(usage.completion_tokens)}, '
            f'"total_tokens": {_number(usage.total_tokens)}, '
        )
    )
    return (
        f'{head}"user": {_text(entry.username)}, "model": {_text(entry.model)}, {tokens}'
        f'"tokens_estimated": {"true" if entry.estimated else "false"}, '
        f'"error_code": {_text(entry.error_code)}}}'
    )


_NO_TOKENS = '"prompt_tokens": null, "completion_tokens": null, "total_tokens": null, '
_NO_ENTRY = (
    f'"user": null, "model": null, {_NO_TOKENS}"tokens_estimated": null, "error_code": null}}'
)


def _text(value: str | None) -> str:
    return "null" if value is None else encode_basestring_ascii(value)


def _number(value: int | None) -> str:
    return "null" if value is None else str(int(value))


_last_second: tuple[int, str] = (-1, "")  # the last whole second formatted, and its text


def _utc_iso(when: float) -> str:
    """`when` as ISO 8601 in UTC to the millisecond (`2026-01-02T03:04:05.678+00:00`);
    the seconds' text is formatted once per second, not once per line."""
    global _last_second
    second = int(when)
    cached = _last_second  # one read: another thread may replace it meanwhile
    if cached[0] != second:
        cached = _last_second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{cached[1]}.{int((when - second) * 1000):03d}+00:00"


def _with_id(headers: Any, trace: Trace) -> list[tuple[bytes, bytes]]:
    """The answer's headers with our request id; a backend's own id renamed beside it.

    Pairs kept as they are go in as the same tuples, not copies: the server keeps the
    answer's start (and so this list) for as long as a stream is open."""
    kept: list[tuple[bytes, bytes]] = []
    for pair in headers:
        name, value = pair
        lowered = name.lower()
        if lowered == HEADER:
            kept.append((BACKEND_HEADER, value))
        elif lowered != BACKEND_HEADER:
            kept.append(pair if type(pair) is tuple else (name, value))
    kept.append((HEADER, trace.request_id.encode("ascii")))
    return kept
