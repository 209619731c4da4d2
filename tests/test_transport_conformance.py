"""One conformance suite for every `Transport`, over real sockets, under asyncio and trio.

Each case runs once per `Kind`: a transport (named in `TRANSPORT_FACTORIES`) on an event
loop.  The peer is `tests.support.scripted_http`: a small h11 server in the test's own
task group, whose routes script framing, flushing and pacing, and which records what
arrived (byte for byte, per connection) and whether the client hung up.  Routes that
stream wait on the test's events between writes, so nothing here synchronises by
sleeping; the only waits on a clock are the time limits under test.

Adding a transport is one entry in `TRANSPORT_FACTORIES` and one or more in `KINDS`.
The `replay` kind is a record-then-replay round trip: each call goes to the live server
through `RecordingTransport`, and the caller gets what `ReplayTransport` answers from
that recording.  Cases that need the live peer to see the caller's pacing (chunk
acknowledgements, a hang-up, connection reuse) are marked `live_peer`.
"""

from __future__ import annotations

import random
import select
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress

import anyio
import attrs
import httpx
import pytest
import trustme

from tests.support.scripted_http import Exchange, ScriptedServer, serving
from transports import (
    BackendRequest,
    BackendResponse,
    BackendStream,
    ConnectError,
    ProtocolError,
    Timeout,
    Transport,
    TransportError,
    TransportTimeout,
)
from transports.h11_transport import H11Transport
from transports.httpx_transport import HttpxTransport

pytestmark = pytest.mark.anyio

QUICK = Timeout(connect=5, read=5, total=20)
SSE = ("content-type", "text/event-stream")

# -- the transports under test --------------------------------------------------------------

Factory = Callable[[ssl.SSLContext | None], AbstractAsyncContextManager[Transport]]


@asynccontextmanager
async def _httpx(ssl_context: ssl.SSLContext | None) -> AsyncIterator[Transport]:
    client = None if ssl_context is None else httpx.AsyncClient(verify=ssl_context)
    transport = HttpxTransport(client)
    try:
        yield transport
    finally:
        await transport.aclose()
        if client is not None:
            await client.aclose()


@asynccontextmanager
async def _h11(ssl_context: ssl.SSLContext | None) -> AsyncIterator[Transport]:
    transport = H11Transport(ssl_context=ssl_context)
    try:
        yield transport
    finally:
        await transport.aclose()


class _RecordThenReplay:
    """Each call is recorded through a live transport, then answered by a replay of it.

    The recording and replay modules are imported where used, so that if they break
    only the `replay` cases fail, not the whole suite.
    """

    def __init__(self, live: Transport) -> None:
        from transports.recording import RecordingTransport

        self._recording = RecordingTransport(live)

    async def send(self, request: BackendRequest) -> BackendResponse:
        from transports.recording import capture
        from transports.replay import ReplayTransport

        with capture() as exchanges, suppress(TransportError):
            await self._recording.send(request)
        return await ReplayTransport(exchanges).send(request)

    async def open_stream(self, request: BackendRequest) -> BackendStream:
        from transports.recording import capture
        from transports.replay import ReplayTransport

        with capture() as exchanges, suppress(TransportError):
            stream = await self._recording.open_stream(request)
            try:
                async for _ in stream.chunks():
                    pass
            finally:
                await stream.aclose()
        return await ReplayTransport(exchanges).open_stream(request)

    async def aclose(self) -> None:
        await self._recording.aclose()


@asynccontextmanager
async def _replay(ssl_context: ssl.SSLContext | None) -> AsyncIterator[Transport]:
    async with _h11(ssl_context) as live:
        round_trip = _RecordThenReplay(live)
        try:
            yield round_trip
        finally:
            await round_trip.aclose()


TRANSPORT_FACTORIES: dict[str, Factory] = {"httpx": _httpx, "h11": _h11, "replay": _replay}


@attrs.frozen
class Kind:
    transport: str
    loop: str
    live: bool = True  # the caller's reads reach the peer as they happen

    @property
    def id(self) -> str:
        return f"{self.transport}-{self.loop}"

    def open(
        self, ssl_context: ssl.SSLContext | None = None
    ) -> AbstractAsyncContextManager[Transport]:
        return TRANSPORT_FACTORIES[self.transport](ssl_context)


KINDS = [
    Kind("httpx", "asyncio"),
    Kind("httpx", "trio"),
    Kind("h11", "trio"),
    Kind("h11", "asyncio"),
    Kind("replay", "trio", live=False),
]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every case over every kind, except that a case marked `live_peer` (it needs the
    server to see the client's reads as they happen) is not generated for replay, which
    answers from a recording and has no peer."""
    if "kind" in metafunc.fixturenames:
        live_only = metafunc.definition.get_closest_marker("live_peer") is not None
        kinds = [k for k in KINDS if k.live or not live_only]
        metafunc.parametrize("kind", kinds, ids=[k.id for k in kinds])


@pytest.fixture
def anyio_backend(kind: Kind) -> str:
    return kind.loop


@pytest.fixture
async def transport(kind: Kind) -> AsyncIterator[Transport]:
    async with kind.open() as opened:
        yield opened


# -- helpers -----------------------------------------------------------------------------------


def _get(server: ScriptedServer, path: str, timeout: Timeout = QUICK) -> BackendRequest:
    return BackendRequest(method="GET", url=f"{server.url}{path}", timeout=timeout)


def _values(headers: tuple[tuple[str, str], ...], name: str) -> list[str]:
    return [v for k, v in headers if k.lower() == name]


def _closed_port() -> int:
    """A port nobody listens on: bound by us, then released."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _assert_clean(exc: BaseException, url: str) -> None:
    """No URL, host or port in what an error says, and no chained original."""
    text = f"{exc} {exc!r}"
    for leak in (url, "127.0.0.1", url.rsplit(":", 1)[-1], "://"):
        assert leak not in text
    assert exc.__cause__ is None
    assert exc.__context__ is None or exc.__suppress_context__


async def _respond_ok(exchange: Exchange) -> None:
    await exchange.respond(200, [("content-type", "text/plain")], b"ok")


async def _silent(exchange: Exchange) -> None:
    await exchange.wait_disconnect()


async def _one_chunk_then_silence(exchange: Exchange) -> None:
    await exchange.start(200, [SSE])
    await exchange.send(b"data: 1\n\n")
    await exchange.wait_disconnect()


async def _gone(server: ScriptedServer, connection: int = 0) -> None:
    """The server saw the client hang up (bounded, so a bug fails instead of hanging)."""
    with anyio.fail_after(10):
        await server.connections[connection].client_gone.wait()


# -- status, headers, bodies -------------------------------------------------------------------


async def test_is_a_transport(transport: Transport) -> None:
    assert isinstance(transport, Transport)


@pytest.mark.parametrize("status", [200, 201, 204, 404, 500])
async def test_status_passes_through(transport: Transport, status: int) -> None:
    body = b"" if status == 204 else f"status {status}".encode()

    async def route(exchange: Exchange) -> None:
        await exchange.respond(status, [("content-type", "text/plain")], body)

    async with serving({"/s": route}) as server:
        response = await transport.send(_get(server, "/s"))
        stream = await transport.open_stream(_get(server, "/s"))
        try:
            streamed = await stream.aread()
        finally:
            await stream.aclose()
    assert (response.status, response.body) == (status, body)
    assert (stream.status, streamed) == (status, body)


async def test_headers_pass_through_both_ways_with_duplicates(transport: Transport) -> None:
    async def route(exchange: Exchange) -> None:
        headers = [("x-dup", "one"), ("content-type", "text/plain"), ("x-dup", "two")]
        await exchange.respond(200, [*headers, ("set-cookie", "a=1"), ("set-cookie", "b=2")])

    async with serving({"/h": route}) as server:
        request = BackendRequest(
            method="GET",
            url=f"{server.url}/h?q=1",
            headers=[("x-trace", "abc"), ("x-multi", "1"), ("x-multi", "2")],
            timeout=QUICK,
        )
        response = await transport.send(request)
    assert _values(response.headers, "x-dup") == ["one", "two"]
    assert _values(response.headers, "set-cookie") == ["a=1", "b=2"]
    assert response.header("Content-Type") == "text/plain"
    seen = server.requests[-1]  # (a replayed call reached the server while recording)
    assert (seen.method, seen.target) == ("GET", "/h?q=1")
    assert seen.header_values("x-trace") == ["abc"]
    assert seen.header_values("x-multi") == ["1", "2"]


_RNG = random.Random(4)
BODIES = {
    "empty": b"",
    "binary": bytes(range(256)) + b"\r\n\r\n0\r\n\x00",
    "1MiB": _RNG.randbytes(1024 * 1024),
}


@pytest.mark.parametrize("name", list(BODIES))
async def test_request_body_arrives_byte_exact(transport: Transport, name: str) -> None:
    body = BODIES[name]

    async def echo(exchange: Exchange) -> None:
        await exchange.respond(200, [("content-type", "application/octet-stream")], body)

    async with serving({"/echo": echo}) as server:
        request = BackendRequest(method="POST", url=f"{server.url}/echo", body=body, timeout=QUICK)
        response = await transport.send(request)
    seen = server.requests[-1]
    assert seen.method == "POST"
    assert seen.body == body
    assert seen.header_values("content-length") == [str(len(body))]
    assert response.body == body


FRAMINGS = ["content-length", "chunked", "close-delimited"]


async def _framed(
    exchange: Exchange,
    framing: str,
    pieces: list[bytes],
    after_piece: Callable[[int], Awaitable[None]] | None = None,
) -> None:
    """Answer with `pieces`, one write each, in the given framing."""
    if framing == "close-delimited":
        await exchange.send_raw(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n")
    elif framing == "chunked":
        await exchange.start(200, [SSE])
    else:
        length = str(sum(map(len, pieces)))
        await exchange.start(200, [SSE, ("content-length", length)])
    for index, piece in enumerate(pieces):
        if framing == "close-delimited":
            await exchange.send_raw(piece)
        else:
            await exchange.send(piece)
        if after_piece is not None:
            await after_piece(index)
    if framing != "close-delimited":
        await exchange.end()


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_response_bodies_in_every_framing(transport: Transport, framing: str) -> None:
    pieces = [b"first piece;", b"second piece;", b"last"]

    async def route(exchange: Exchange) -> None:
        await _framed(exchange, framing, pieces)

    async with serving({"/f": route}) as server:
        whole = await transport.send(_get(server, "/f"))
        stream = await transport.open_stream(_get(server, "/f"))
        try:
            streamed = b"".join([chunk async for chunk in stream.chunks()])
        finally:
            await stream.aclose()
    assert (whole.status, whole.body) == (200, b"".join(pieces))
    assert streamed == b"".join(pieces)
    assert _values(whole.headers, "transfer-encoding") == (
        ["chunked"] if framing == "chunked" else []
    )


@pytest.mark.live_peer
@pytest.mark.parametrize("framing", FRAMINGS)
async def test_stream_chunk_boundaries_are_preserved(
    kind: Kind, transport: Transport, framing: str
) -> None:
    pieces = [b"data: %d\n\n" % i + b"x" * (i * 100) for i in range(6)]
    received_piece = [anyio.Event() for _ in pieces]

    async def wait_for_client(index: int) -> None:
        await received_piece[index].wait()

    async def route(exchange: Exchange) -> None:
        await _framed(exchange, framing, pieces, wait_for_client)

    received: list[bytes] = []
    async with serving({"/chunks": route}) as server:
        stream = await transport.open_stream(_get(server, "/chunks"))
        try:
            async for chunk in stream.chunks():
                received.append(chunk)
                received_piece[min(len(received), len(pieces)) - 1].set()
        finally:
            await stream.aclose()
    assert received == pieces


# -- broken peers ------------------------------------------------------------------------------


async def test_garbage_instead_of_http_is_a_protocol_error(transport: Transport) -> None:
    async def route(exchange: Exchange) -> None:
        await exchange.send_raw(b"this is not HTTP at all\r\n\r\n")

    async with serving({"/g": route}) as server:
        with pytest.raises(ProtocolError) as caught:
            await transport.send(_get(server, "/g"))
    _assert_clean(caught.value, server.url)


async def test_a_body_cut_short_is_a_protocol_error_while_iterating(transport: Transport) -> None:
    async def route(exchange: Exchange) -> None:
        head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 100\r\n\r\n"
        await exchange.send_raw(head + b"data: 1\n\n")

    async with serving({"/cut": route}) as server:
        stream = await transport.open_stream(_get(server, "/cut"))
        received = []
        try:
            with pytest.raises(ProtocolError) as caught:
                async for chunk in stream.chunks():
                    received.append(chunk)
        finally:
            await stream.aclose()
    assert received == [b"data: 1\n\n"]
    _assert_clean(caught.value, server.url)


async def test_a_header_that_cannot_be_sent_is_a_protocol_error(transport: Transport) -> None:
    async with serving({"/ok": _respond_ok}) as server:
        request = BackendRequest(
            method="GET",
            url=f"{server.url}/ok",
            headers=[("x-key", "sk-secret\r\ninjected: yes")],
            timeout=QUICK,
        )
        with pytest.raises(ProtocolError) as caught:
            await transport.send(request)
        assert server.requests == []
    _assert_clean(caught.value, server.url)
    assert "secret" not in f"{caught.value!r}"


# -- connection failures and time limits -------------------------------------------------------


async def test_connection_refused_is_a_connect_error(transport: Transport) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    request = BackendRequest(method="GET", url=f"{url}/x", timeout=QUICK)
    with pytest.raises(ConnectError) as refused_send:
        await transport.send(request)
    with pytest.raises(ConnectError) as refused_stream:
        await transport.open_stream(request)
    _assert_clean(refused_send.value, url)
    _assert_clean(refused_stream.value, url)


@pytest.fixture(scope="session")
def saturated_port() -> Iterator[int]:
    """A loopback port whose accept queue is full, so a new connect hangs in SYN_SENT.

    A listener with backlog 0 that never accepts: once its queue holds what the kernel
    allows, further SYNs are dropped.  The premise is checked with a probe (the one
    clock-bounded wait here, once per session) and the case skipped where it fails.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    fillers: list[socket.socket] = []
    try:
        for _ in range(4):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            filler.connect_ex(address)
            fillers.append(filler)
        probe = fillers[-1]
        _, connected, _ = select.select([], [probe], [], 0.3)
        if connected:
            pytest.skip("this kernel does not drop SYNs to a full accept queue on loopback")
        yield int(address[1])
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_connect_timeout_is_a_transport_timeout(
    transport: Transport, saturated_port: int
) -> None:
    url = f"http://127.0.0.1:{saturated_port}"
    request = BackendRequest(method="GET", url=f"{url}/x", timeout=Timeout(connect=0.2, read=5))
    with pytest.raises(TransportTimeout) as caught:
        await transport.send(request)
    _assert_clean(caught.value, url)


@pytest.mark.parametrize(
    "timeout",
    [Timeout(connect=5, read=0.2), Timeout(connect=5, read=None, total=0.3)],
    ids=["read", "total"],
)
async def test_a_silent_server_times_out(
    kind: Kind, transport: Transport, timeout: Timeout
) -> None:
    async with serving({"/silent": _silent}) as server:
        with pytest.raises(TransportTimeout) as caught:
            await transport.send(_get(server, "/silent", timeout))
        await _gone(server)  # the abandoned connection is closed, not kept
    _assert_clean(caught.value, server.url)


@pytest.mark.parametrize(
    "timeout",
    [Timeout(connect=5, read=0.2), Timeout(connect=5, read=None, total=0.4)],
    ids=["read", "total"],
)
async def test_a_stream_that_stalls_times_out_while_iterating(
    transport: Transport, timeout: Timeout
) -> None:
    async with serving({"/stall": _one_chunk_then_silence}) as server:
        stream = await transport.open_stream(_get(server, "/stall", timeout))
        received = []
        try:
            with pytest.raises(TransportTimeout) as caught:
                async for chunk in stream.chunks():
                    received.append(chunk)
        finally:
            await stream.aclose()
        await _gone(server)
    assert received == [b"data: 1\n\n"]
    _assert_clean(caught.value, server.url)


# -- cancellation, closing and reuse -----------------------------------------------------------


@pytest.mark.live_peer
async def test_cancellation_mid_stream_closes_the_upstream_connection(
    kind: Kind, transport: Transport
) -> None:
    received: list[bytes] = []
    async with serving({"/hang": _one_chunk_then_silence}) as server:
        async with anyio.create_task_group() as tg:

            async def consume() -> None:
                stream = await transport.open_stream(_get(server, "/hang"))
                try:
                    async for chunk in stream.chunks():
                        received.append(chunk)
                        tg.cancel_scope.cancel()
                finally:
                    await stream.aclose()

            tg.start_soon(consume)
        await _gone(server)
    assert received == [b"data: 1\n\n"]


@pytest.mark.live_peer
async def test_aclose_mid_stream_closes_the_upstream_connection(
    kind: Kind, transport: Transport
) -> None:
    async with serving({"/hang": _one_chunk_then_silence}) as server:
        stream = await transport.open_stream(_get(server, "/hang"))
        first = await stream.chunks().__anext__()
        assert not server.connections[0].client_gone.is_set()
        await stream.aclose()
        await stream.aclose()  # idempotent
        await _gone(server)
    assert first == b"data: 1\n\n"


@pytest.mark.live_peer
async def test_a_connection_is_reused_after_a_complete_answer(
    kind: Kind, transport: Transport
) -> None:
    async with serving({"/ok": _respond_ok}) as server:
        first = await transport.send(_get(server, "/ok"))
        second = await transport.send(_get(server, "/ok"))
        stream = await transport.open_stream(_get(server, "/ok"))
        try:
            third = await stream.aread()
        finally:
            await stream.aclose()
        fourth = await transport.send(_get(server, "/ok"))
    assert [first.body, second.body, third, fourth.body] == [b"ok"] * 4
    assert len(server.connections) == 1
    assert len(server.connections[0].requests) == 4


# -- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def test_tls_with_a_trusted_ca_is_verified_and_works(
    kind: Kind, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    async def route(exchange: Exchange) -> None:
        await _framed(exchange, "chunked", [b"data: 1\n\n", b"data: 2\n\n"])

    async with serving({"/ok": _respond_ok, "/s": route}, tls=server_tls) as server:
        assert server.url.startswith("https://")
        async with kind.open(client_tls) as transport:
            response = await transport.send(_get(server, "/ok"))
            stream = await transport.open_stream(_get(server, "/s"))
            try:
                streamed = b"".join([chunk async for chunk in stream.chunks()])
            finally:
                await stream.aclose()
    assert (response.status, response.body) == (200, b"ok")
    assert streamed == b"data: 1\n\ndata: 2\n\n"
    assert server.handshake_failures == 0


async def test_tls_without_the_ca_is_refused_as_a_connect_error(
    transport: Transport, server_tls: ssl.SSLContext
) -> None:
    async with serving({"/ok": _respond_ok}, tls=server_tls) as server:
        with pytest.raises(ConnectError) as caught:
            await transport.send(_get(server, "/ok"))
        assert server.requests == []
    _assert_clean(caught.value, server.url)


@pytest.mark.parametrize(
    "given",
    [
        [("x-a", "1"), ("x-a", "2"), ("X-B", "3")],
        (("x-a", "1"), ("x-a", "2"), ("X-B", "3")),
        [["x-a", "1"], ("x-a", 2), ("X-B", "3")],
        {"x-a": "1", "X-B": 3},
    ],
    ids=["list", "tuple", "mixed-shapes", "mapping"],
)
def test_request_headers_become_a_tuple_of_string_pairs_in_order(given: object) -> None:
    request = BackendRequest(method="get", url="http://h/", headers=given)  # type: ignore[arg-type]
    assert request.headers.__class__ is tuple
    assert all(pair.__class__ is tuple for pair in request.headers)
    assert request.headers == tuple(
        (str(k), str(v)) for k, v in (given.items() if isinstance(given, dict) else given)
    )
