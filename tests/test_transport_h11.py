"""What only `H11Transport` promises: its pool, its reuse rules, its URL checks.

The behaviour every transport shares is in `test_transport_conformance`; these cases
run on trio and asyncio against the same scripted server.
"""

from __future__ import annotations

import os
import resource
import socket
from collections.abc import AsyncIterator

import anyio
import pytest

from tests.support.scripted_http import Exchange, ScriptedServer, chunks_until, serving
from transports import (
    BackendRequest,
    ConnectionLimits,
    FirstByteTimeout,
    IdleTimeout,
    Saturated,
    Timeout,
    TotalTimeout,
    TransportError,
    TransportTimeout,
)
from transports._loop_stream import HIGH_WATER
from transports.h11_transport import H11Transport

pytestmark = pytest.mark.anyio

QUICK = Timeout(connect=5, read=5, total=20)


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def transport() -> AsyncIterator[H11Transport]:
    transport = H11Transport(max_connections_per_host=2)
    try:
        yield transport
    finally:
        await transport.aclose()


def _get(server: ScriptedServer, path: str, timeout: Timeout = QUICK) -> BackendRequest:
    return BackendRequest(method="GET", url=f"{server.url}{path}", timeout=timeout)


async def _ok(exchange: Exchange) -> None:
    await exchange.respond(200, body=b"ok")


async def _one_chunk_then_silence(exchange: Exchange) -> None:
    await exchange.start(200, [("content-type", "text/event-stream")])
    await exchange.send(b"data: 1\n\n")
    await exchange.wait_disconnect()


async def test_the_pool_bounds_connections_per_host(transport: H11Transport) -> None:
    inside = 0
    two_inside = anyio.Event()
    release = anyio.Event()

    async def held(exchange: Exchange) -> None:
        nonlocal inside
        inside += 1
        if inside == 2:
            two_inside.set()
        await release.wait()
        await exchange.respond(200, body=b"done")

    bodies: list[bytes] = []
    async with serving({"/held": held}) as server:

        async def call() -> None:
            bodies.append((await transport.send(_get(server, "/held"))).body)

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(call)
            await two_inside.wait()
            release.set()
    assert bodies == [b"done"] * 3
    assert len(server.connections) == 2  # the third call waited for a slot, then reused


async def test_waiting_for_a_connection_is_bounded_by_the_pool_wait() -> None:
    transport = H11Transport(limits=ConnectionLimits(per_backend=2, total=4, pool_wait=0.2))
    try:
        async with serving({"/hang": _one_chunk_then_silence, "/ok": _ok}) as server:
            streams = [await transport.open_stream(_get(server, "/hang")) for _ in range(2)]
            with pytest.raises(Saturated, match="to this backend") as caught:
                await transport.send(_get(server, "/ok"))
            assert not isinstance(caught.value, TransportTimeout)  # the gateway's own limit
            for stream in streams:
                await stream.aclose()
            assert (await transport.send(_get(server, "/ok"))).body == b"ok"
    finally:
        await transport.aclose()


async def test_cancellation_alone_closes_the_connection_and_frees_its_slot() -> None:
    transport = H11Transport(max_connections_per_host=1)
    got_first = anyio.Event()
    try:
        async with serving({"/hang": _one_chunk_then_silence, "/ok": _ok}) as server:
            async with anyio.create_task_group() as tg:

                async def consume() -> None:
                    stream = await transport.open_stream(_get(server, "/hang"))
                    async for _ in stream.chunks():  # no aclose: cancellation must do it
                        got_first.set()

                tg.start_soon(consume)
                await got_first.wait()
                tg.cancel_scope.cancel()
            with anyio.fail_after(10):
                await server.connections[0].client_gone.wait()
            assert (await transport.send(_get(server, "/ok"))).body == b"ok"
            assert len(server.connections) == 2
    finally:
        await transport.aclose()


async def test_connection_close_is_honoured(transport: H11Transport) -> None:
    async def closing(exchange: Exchange) -> None:
        await exchange.respond(200, [("connection", "close")], b"bye")

    async with serving({"/bye": closing}) as server:
        for _ in range(2):
            assert (await transport.send(_get(server, "/bye"))).body == b"bye"
    assert len(server.connections) == 2


async def test_an_answer_to_head_ends_with_its_head_and_its_connection_is_reused(
    transport: H11Transport,
) -> None:
    async def head(exchange: Exchange) -> None:
        await exchange.start(200, [("content-length", "1000")])  # no body follows a HEAD
        await exchange.end()

    async with serving({"/head": head}) as server:
        for _ in range(2):
            request = BackendRequest(method="HEAD", url=f"{server.url}/head", timeout=QUICK)
            response = await transport.send(request)
            assert (response.status, response.body) == (200, b"")
            assert response.header("content-length") == "1000"
    assert len(server.connections) == 1


async def test_an_idle_connection_the_server_closed_is_not_reused(
    transport: H11Transport,
) -> None:
    async def once(exchange: Exchange) -> None:
        exchange.hang_up = True  # keep-alive by its headers, closed all the same
        await exchange.respond(200, body=b"once")

    async with serving({"/once": once}) as server:
        assert (await transport.send(_get(server, "/once"))).body == b"once"
        with anyio.fail_after(10):
            await server.connections[0].closed.wait()
        assert (await transport.send(_get(server, "/once"))).body == b"once"
    assert len(server.connections) == 2


async def test_an_idle_connection_on_a_descriptor_past_1024_is_reused(
    transport: H11Transport,
) -> None:
    # A gateway holding many streams has sockets numbered past select()'s FD_SETSIZE;
    # checking such an idle connection must work, not fail the request.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1100 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1100, hard))
    padding = [os.open(os.devnull, os.O_RDONLY) for _ in range(1030)]
    try:
        async with serving({"/ok": _ok}) as server:
            for _ in range(2):
                assert (await transport.send(_get(server, "/ok"))).body == b"ok"
        assert len(server.connections) == 1
    finally:
        for fd in padding:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_a_half_read_stream_is_not_reused(transport: H11Transport) -> None:
    async def long(exchange: Exchange) -> None:
        await exchange.start(200)
        await exchange.send(b"part one;")
        await exchange.send(b"part two")
        await exchange.end()

    async with serving({"/long": long}) as server:
        stream = await transport.open_stream(_get(server, "/long"))
        await stream.chunks().__anext__()
        await stream.aclose()
        with pytest.raises(TransportError, match="already read or closed"):
            await stream.aread()
        assert (await transport.send(_get(server, "/long"))).body == b"part one;part two"
    assert len(server.connections) == 2


async def test_a_stream_left_at_its_last_chunk_is_reused_when_its_end_came_with_it(
    transport: H11Transport,
) -> None:
    """A relay stops at a stream's last event (`data: [DONE]`) without asking for the
    end; when that end was already received (here: the whole Content-Length body), the
    connection goes back to the pool instead of being closed."""

    async def whole(exchange: Exchange) -> None:
        await exchange.respond(200, [("content-type", "text/event-stream")], b"data: [DONE]\n\n")

    async with serving({"/done": whole}) as server:
        for _ in range(3):
            stream = await transport.open_stream(_get(server, "/done"))
            assert await stream.chunks().__anext__() == b"data: [DONE]\n\n"
            await stream.aclose()
    assert len(server.connections) == 1


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://user:secret@example.invalid/x", "unsupported scheme"),
        ("http://user:secret@example.invalid/x", "credentials"),
        ("http://example.invalid:99999/x", "invalid"),
        ("http:///x", "invalid"),
        ("http://example.invalid/caf\u00e9", "invalid"),
    ],
)
async def test_urls_it_cannot_use_are_refused_without_naming_them(
    transport: H11Transport, url: str, message: str
) -> None:
    with pytest.raises(TransportError, match=message) as caught:
        await transport.send(BackendRequest(method="GET", url=url))
    assert "secret" not in str(caught.value) and "example" not in str(caught.value)


async def test_a_closed_transport_refuses_calls() -> None:
    transport = H11Transport()
    await transport.aclose()
    with pytest.raises(TransportError, match="closed"):
        await transport.send(BackendRequest(method="GET", url="http://127.0.0.1:1/"))


async def test_a_request_the_backend_does_not_read_is_a_write_timeout() -> None:
    """The read limit bounds sending too: a backend that takes the connection and never
    reads it fails the call as a send that timed out, not as a missing answer."""
    listener = socket.create_server(("127.0.0.1", 0))  # never accepted, never read
    port = listener.getsockname()[1]
    body = b"x" * (64 * 1024 * 1024)  # more than the socket buffers on both ends hold
    request = BackendRequest(
        method="POST",
        url=f"http://127.0.0.1:{port}/v1/chat/completions",
        body=body,
        timeout=Timeout(connect=5, read=0.3, first_byte=30),
    )
    transport = H11Transport()
    try:
        for call in (transport.send, transport.open_stream):
            with pytest.raises(TransportTimeout, match="sending the request"):
                await call(request)
    finally:
        await transport.aclose()
        listener.close()


@pytest.mark.parametrize(
    ("timeout", "error"),
    [
        (Timeout(connect=5, read=0.2, first_byte=30), TransportTimeout),
        (Timeout(connect=5, read=None, first_byte=30, total=0.3), TotalTimeout),
        (Timeout(connect=5, read=30, first_byte=0.2), FirstByteTimeout),
    ],
    ids=["read", "total", "first-byte"],
)
async def test_which_limit_ran_out_is_told_for_a_whole_answer(
    transport: H11Transport, timeout: Timeout, error: type[TransportTimeout]
) -> None:
    """A body that stops after the head is the read limit's (or the total's, when it
    comes first); a head that never comes, the first-byte limit's: the same on asyncio's
    own stream (loop timers) as on anyio's (one cancel scope)."""

    async def stall(exchange: Exchange) -> None:
        if exchange.request.target == "/silent":
            await exchange.wait_disconnect()
            return
        await exchange.start(200, [("content-length", "10")])
        await exchange.send(b"half")
        await exchange.wait_disconnect()

    path = "/silent" if error is FirstByteTimeout else "/stall"
    async with serving({path: stall}) as server:
        with pytest.raises(TransportTimeout) as caught:
            await transport.send(_get(server, path, timeout))
    assert type(caught.value) is error


async def test_limits_hold_on_a_connection_that_keeps_being_reused(
    transport: H11Transport,
) -> None:
    """On asyncio's own stream one timer per connection keeps the limits of all its
    waits: a stream that keeps sending within its idle limit for longer than the limit
    is not cut, its later silence is, and a later call on the same connection with a
    shorter limit than the last one is held to its own."""

    async def steady_then_silent(exchange: Exchange) -> None:
        await exchange.start(200, [("content-type", "text/event-stream")])
        for index in range(10):  # 1 s: twice the idle limit, 0.4 s to spare at each
            await anyio.sleep(0.1)  # the backend's pace, not a synchronisation
            await exchange.send(b"data: %d\n\n" % index)
        await exchange.wait_disconnect()

    async def silent(exchange: Exchange) -> None:
        await exchange.wait_disconnect()

    routes = {"/ok": _ok, "/steady": steady_then_silent, "/silent": silent}
    async with serving(routes) as server:
        stream = await transport.open_stream(
            _get(server, "/steady", Timeout(connect=5, read=5, first_byte=5, idle=0.5))
        )
        received = await chunks_until(stream, IdleTimeout)
        assert len(received) == 10
        assert (await transport.send(_get(server, "/ok", Timeout(read=30)))).body == b"ok"
        with anyio.fail_after(5), pytest.raises(FirstByteTimeout):
            await transport.send(_get(server, "/silent", Timeout(read=30, first_byte=0.2)))
    assert len(server.connections) == 2  # the idle timeout's connection was closed


def test_the_pool_size_is_checked() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        H11Transport(max_connections_per_host=0)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the connection of `_loop_stream`
async def test_a_stream_read_late_arrives_whole_and_in_order(transport: H11Transport) -> None:
    """On asyncio a plain connection reads all along and stops past its high-water mark
    until the caller reads: what the backend sent meanwhile is neither lost nor
    reordered."""
    pieces = [bytes([n]) * 16384 for n in range(64)]  # 1 MiB, each piece told apart
    past_high_water = anyio.Event()

    async def flood(exchange: Exchange) -> None:
        await exchange.start(200, [("content-type", "application/octet-stream")])
        sent = 0
        for piece in pieces:
            await exchange.send(piece)
            sent += len(piece)
            if sent > HIGH_WATER + 65536:
                past_high_water.set()
        await exchange.end()

    async with serving({"/flood": flood}) as server:
        stream = await transport.open_stream(_get(server, "/flood"))
        try:
            with anyio.fail_after(10):
                await past_high_water.wait()  # the caller has not read a byte yet
            body = b"".join([chunk async for chunk in stream.chunks()])
        finally:
            await stream.aclose()
    assert body == b"".join(pieces)
