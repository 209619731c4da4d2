"""`FunctionTransport`: a `Transport` whose answers come from a plain function.

As httpx's `MockTransport`: the handler takes the `BackendRequest` and returns the
`BackendResponse` (or awaits to get it), or raises a `TransportError` to act out a
failure.  `open_stream` is derived from the same answer, its body cut into chunks (by
default one chunk per server-sent event, so a stream arrives event by event).  Nothing
touches a socket: for tests of adaptors and identity providers, and for embedders who
answer some calls in process.  End-to-end behaviour (framing, pacing, hang-ups) is
tested against real local servers instead.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

from anyio.lowlevel import checkpoint

from transports._base import BackendRequest, BackendResponse, Headers, ProtocolError

__all__ = ["FunctionStream", "FunctionTransport", "sse_events"]

Handler = Callable[[BackendRequest], BackendResponse | Awaitable[BackendResponse]]


def sse_events(body: bytes) -> list[bytes]:
    """The body cut after each blank line: one piece per server-sent event."""
    pieces: list[bytes] = []
    rest = body
    while rest:
        end = rest.find(b"\n\n")
        cut = len(rest) if end < 0 else end + 2
        pieces.append(rest[:cut])
        rest = rest[cut:]
    return pieces


class FunctionTransport:
    """Answers every call with `handler(request)`; `requests` keeps what was sent."""

    def __init__(
        self, handler: Handler, *, chunks: Callable[[bytes], Iterable[bytes]] = sse_events
    ) -> None:
        self._handler = handler
        self._chunks = chunks
        self.requests: list[BackendRequest] = []

    async def send(self, request: BackendRequest) -> BackendResponse:
        self.requests.append(request)
        answer = self._handler(request)
        if inspect.isawaitable(answer):
            answer = await answer
        await checkpoint()
        return answer

    async def open_stream(self, request: BackendRequest) -> FunctionStream:
        response = await self.send(request)
        return FunctionStream(response, self._chunks(response.body))

    async def aclose(self) -> None:
        return None


class FunctionStream:
    """A `BackendStream` over pieces already in memory."""

    def __init__(self, response: BackendResponse, pieces: Iterable[bytes]) -> None:
        self.status: int = response.status
        self.headers: Headers = response.headers
        self._pieces = [p for p in pieces if p]
        self._consumed = False

    async def chunks(self) -> AsyncIterator[bytes]:
        if self._consumed:
            raise ProtocolError("the stream was already read")
        self._consumed = True
        for piece in self._pieces:
            await checkpoint()
            yield piece

    async def aread(self) -> bytes:
        return b"".join([piece async for piece in self.chunks()])

    async def aclose(self) -> None:
        self._consumed = True
