"""A scriptable HTTP/1.1 server on anyio, in the test's own event loop (asyncio or trio).

Hypercorn decides framing and flushing for itself; a transport conformance test must
decide them: which framing a response uses (Content-Length, chunked, or none and a
close), where each write ends, and when the next one may go.  So each route here is an
async function that scripts its answer through an `Exchange`, with h11 framing it
(`respond`, `start` / `send` / `end`) or raw bytes written as given (`send_raw`, after
which the server closes the connection).  A route can wait on the test's own events
between writes, which is how tests synchronise with the client without sleeping.

The server records what it saw: every connection (`ConnectionRecord`), the requests on
it byte for byte, and whether the client went away (`client_gone`, an `anyio.Event` set
when a read on that connection meets EOF or a reset).  It listens on 127.0.0.1 on a port
the OS picks, optionally behind TLS with a given server `ssl.SSLContext`.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import attrs
import h11
import pytest
from anyio.streams.tls import TLSStream

from transports import BackendStream

__all__ = [
    "ConnectionRecord",
    "Exchange",
    "Route",
    "ScriptedServer",
    "SeenRequest",
    "chunks_until",
    "serving",
]

READ_SIZE = 64 * 1024


@attrs.frozen(kw_only=True)
class SeenRequest:
    """One request as the server received it; header names lower-case, duplicates kept."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    connection: int

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]


@attrs.define(kw_only=True)
class ConnectionRecord:
    index: int
    requests: list[SeenRequest] = attrs.field(factory=list)
    client_gone: anyio.Event = attrs.field(factory=anyio.Event)
    closed: anyio.Event = attrs.field(factory=anyio.Event)  # by either side


class Exchange:
    """One request and the means to script its answer."""

    def __init__(
        self,
        request: SeenRequest,
        connection: h11.Connection,
        stream: anyio.abc.ByteStream,
        record: ConnectionRecord,
    ) -> None:
        self.request = request
        self.record = record
        self._h11 = connection
        self._stream = stream
        self.raw = False
        self.hang_up = False  # close the connection after this answer, though h11 may keep it

    async def respond(
        self, status: int, headers: Sequence[tuple[str, str]] = (), body: bytes = b""
    ) -> None:
        """A whole answer framed by Content-Length (none for statuses without a body)."""
        framing = [] if status in (204, 304) else [("content-length", str(len(body)))]
        await self.start(status, [*headers, *framing])
        if body:
            await self.send(body)
        await self.end()

    async def start(self, status: int, headers: Sequence[tuple[str, str]] = ()) -> None:
        """The head; without Content-Length, h11 frames the body as chunked."""
        await self._write(h11.Response(status_code=status, headers=list(headers)))

    async def send(self, data: bytes) -> None:
        """One piece of body in one write (one chunk, when chunked)."""
        await self._write(h11.Data(data=data))

    async def end(self) -> None:
        await self._write(h11.EndOfMessage())

    async def send_raw(self, data: bytes) -> None:
        """Bytes as given, bypassing h11; the server closes the connection afterwards."""
        self.raw = True
        await self._stream.send(data)

    async def wait_disconnect(self) -> None:
        """Read until the client goes away (whatever else it sends is dropped)."""
        try:
            while True:
                await self._stream.receive(READ_SIZE)
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            self.record.client_gone.set()

    async def _write(self, event: h11.Event) -> None:
        data = self._h11.send(event)
        if data:
            await self._stream.send(data)


Route = Callable[[Exchange], Awaitable[None]]


async def _not_found(exchange: Exchange) -> None:
    await exchange.respond(404, body=b"no such route")


class ScriptedServer:
    def __init__(self, routes: Mapping[str, Route], tls: ssl.SSLContext | None) -> None:
        self.routes = dict(routes)
        self.tls = tls
        self.connections: list[ConnectionRecord] = []
        self.handshake_failures = 0
        self.url = ""

    @property
    def requests(self) -> list[SeenRequest]:
        return [request for record in self.connections for request in record.requests]

    async def handle(self, client: anyio.abc.SocketStream) -> None:
        stream: anyio.abc.ByteStream = client
        record: ConnectionRecord | None = None
        try:
            if self.tls is not None:
                try:
                    stream = await TLSStream.wrap(
                        client, server_side=True, ssl_context=self.tls, standard_compatible=False
                    )
                except (ssl.SSLError, anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    self.handshake_failures += 1
                    return
            record = ConnectionRecord(index=len(self.connections))
            self.connections.append(record)
            try:
                await self._converse(stream, record)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                record.client_gone.set()  # a write met a client that had gone
        finally:
            await anyio.aclose_forcefully(stream)
            if record is not None:
                record.closed.set()

    async def _converse(self, stream: anyio.abc.ByteStream, record: ConnectionRecord) -> None:
        connection = h11.Connection(our_role=h11.SERVER)
        while True:
            request = await self._read_request(connection, stream, record)
            if request is None:
                return
            record.requests.append(request)
            path = request.target.split("?", 1)[0]
            exchange = Exchange(request, connection, stream, record)
            await self.routes.get(path, _not_found)(exchange)
            if (
                exchange.raw
                or exchange.hang_up
                or not (connection.our_state is h11.DONE and connection.their_state is h11.DONE)
            ):
                return
            connection.start_next_cycle()

    async def _read_request(
        self, connection: h11.Connection, stream: anyio.abc.ByteStream, record: ConnectionRecord
    ) -> SeenRequest | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await stream.receive(READ_SIZE)
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    record.client_gone.set()
                    data = b""
                connection.receive_data(data)
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage) and head is not None:
                return SeenRequest(
                    method=head.method.decode(),
                    target=head.target.decode(),
                    headers=tuple((k.decode(), v.decode()) for k, v in head.headers),
                    body=bytes(body),
                    connection=record.index,
                )
            else:  # ConnectionClosed: the client left between requests
                return None


@asynccontextmanager
async def serving(
    routes: Mapping[str, Route], *, tls: ssl.SSLContext | None = None
) -> AsyncIterator[ScriptedServer]:
    """Serve `routes` in a task group of the caller's loop until the block ends."""
    server = ScriptedServer(routes, tls)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    server.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, server.handle)
        try:
            yield server
        finally:
            tg.cancel_scope.cancel()


async def chunks_until(stream: BackendStream, error: type[BaseException]) -> list[bytes]:
    """What a backend stream gives before it fails with `error`, as it must; the stream
    closed either way."""
    received: list[bytes] = []
    try:
        with pytest.raises(error):
            async for chunk in stream.chunks():
                received.append(chunk)
    finally:
        await stream.aclose()
    return received
