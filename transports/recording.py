"""`RecordingTransport`: any transport, with every exchange written to a cassette.

Theory of operation.  The wrapper passes each call to the inner transport unchanged and
builds an `Exchange` from what went by.  A whole answer is recorded when `send` returns
(or fails: a `TransportError` is recorded by class name, then re-raised).  A stream is
recorded when it is closed: each chunk with its time since the stream opened, marked
`cancelled` when the reader closed it before the end (a client that left) and with
`error` when it broke.  Cancellation of `send` itself is recorded as a cancelled
exchange with status 0.

Each exchange goes to the JSON Lines file `path` (if given; one line appended per
exchange, secrets redacted by the writer) and to every `capture()` scope that was
active in the task that *started* the call.  That scope is how the gateway-level
recorder learns which backend exchanges one client request caused, without the
transport knowing anything about the gateway: the scope is a context variable, so it
follows the request's task under asyncio and trio alike.

The file write is a small synchronous append; this is a diagnostic and testing tool,
not a production log.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import anyio

from transports._base import (
    BackendRequest,
    BackendResponse,
    BackendStream,
    Headers,
    TLSOptions,
    Transport,
    TransportError,
)
from transports.cassette import Chunk, Exchange, RecordedRequest, RecordedResponse, append_record

__all__ = ["RecordingStream", "RecordingTransport", "capture"]

Sink = Callable[[Exchange], None]

_SCOPES: ContextVar[tuple[list[Exchange], ...]] = ContextVar("recording_scopes", default=())


@contextmanager
def capture() -> Iterator[list[Exchange]]:
    """Collect, in a list, the exchanges of every call started inside this block."""
    collected: list[Exchange] = []
    token = _SCOPES.set((*_SCOPES.get(), collected))
    try:
        yield collected
    finally:
        _SCOPES.reset(token)


def _recorded(request: BackendRequest) -> RecordedRequest:
    return RecordedRequest(
        method=request.method, url=request.url, headers=request.headers, body=request.body
    )


@contextmanager
def _noting_failures(sink: Callable[[Exchange], None], request: BackendRequest) -> Iterator[None]:
    """A call that never got an answer is recorded too: cancelled, or the error's class."""
    try:
        yield
    except anyio.get_cancelled_exc_class():
        sink(_failed(request, None, cancelled=True))
        raise
    except TransportError as exc:
        sink(_failed(request, type(exc).__name__))
        raise


class RecordingTransport:
    """A `Transport` that records through `inner`; `path` None records to scopes only."""

    def __init__(self, inner: Transport, path: Path | str | None = None) -> None:
        self._inner = inner
        self._path = None if path is None else Path(path)

    def _sink(self) -> Sink:
        """Where an exchange started now must go, bound now (a stream closes later)."""
        scopes = _SCOPES.get()
        path = self._path

        def write(exchange: Exchange) -> None:
            if path is not None:
                append_record(path, exchange)
            for scope in scopes:
                scope.append(exchange)

        return write

    async def send(self, request: BackendRequest) -> BackendResponse:
        sink = self._sink()
        with _noting_failures(sink, request):
            response = await self._inner.send(request)
        sink(
            Exchange(
                request=_recorded(request),
                response=RecordedResponse(
                    status=response.status, headers=response.headers, body=response.body
                ),
            )
        )
        return response

    async def open_stream(self, request: BackendRequest) -> RecordingStream:
        sink = self._sink()
        with _noting_failures(sink, request):
            stream = await self._inner.open_stream(request)
        return RecordingStream(stream, request, sink)

    async def aclose(self) -> None:
        await self._inner.aclose()

    def check_tls(self, tls: TLSOptions) -> None:
        """The inner transport's start-up check of TLS options, if it has one."""
        check = getattr(self._inner, "check_tls", None)
        if check is not None:
            check(tls)


def _failed(request: BackendRequest, error: str | None, *, cancelled: bool = False) -> Exchange:
    return Exchange(
        request=_recorded(request),
        response=RecordedResponse(status=0, cancelled=cancelled, error=error),
    )


class RecordingStream:
    """A `BackendStream` that remembers each chunk; the exchange is written on `aclose`."""

    def __init__(self, inner: BackendStream, request: BackendRequest, sink: Sink) -> None:
        self._inner = inner
        self._request = request
        self._sink = sink
        self._opened = time.monotonic()
        self._chunks: list[Chunk] = []
        self._finished = False
        self._error: str | None = None
        self._written = False
        self.status: int = inner.status
        self.headers: Headers = inner.headers

    def _keep(self, data: bytes) -> None:
        if data:
            self._chunks.append(Chunk(data=data, at=time.monotonic() - self._opened))

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner.chunks():
                self._keep(chunk)
                yield chunk
        except TransportError as exc:
            self._error = type(exc).__name__
            raise
        self._finished = True

    async def aread(self) -> bytes:
        try:
            body = await self._inner.aread()
        except TransportError as exc:
            self._error = type(exc).__name__
            raise
        self._keep(body)
        self._finished = True
        return body

    async def aclose(self) -> None:
        """Close the inner stream, then write the exchange (once), also after a cancel."""
        try:
            await self._inner.aclose()
        finally:
            if not self._written:
                self._written = True
                self._sink(
                    Exchange(
                        request=_recorded(self._request),
                        response=RecordedResponse(
                            status=self.status,
                            headers=self.headers,
                            chunks=tuple(self._chunks),
                            cancelled=not self._finished and self._error is None,
                            error=self._error,
                        ),
                    )
                )
