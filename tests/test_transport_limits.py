"""What both live transports (h11 and httpx) promise about time, connections and size.

* Each time limit ends a call with its own error: `FirstByteTimeout` for an answer (or a
  stream's first bytes) that never comes, `IdleTimeout` for a started stream gone
  silent, `TotalTimeout` for a call past its total; a stream with no total that keeps
  sending is read to its end however long it takes.
* Connections are limited per backend and in all: a call that finds its backend's (or
  every) permit in use waits `pool_wait`, then fails as `Saturated`, which is no
  timeout; a backend whose permits are all held never delays a call to another.
* A whole answer past `max_answer_bytes` is refused as `AnswerTooLarge`, read no further
  than the cap, and its connection closed.

Run on trio and asyncio against scripted servers in the test's own loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import anyio
import pytest

from tests.support.scripted_http import Exchange, ScriptedServer, chunks_until, serving
from transports import (
    AnswerTooLarge,
    BackendRequest,
    ConnectionLimits,
    FirstByteTimeout,
    IdleTimeout,
    Saturated,
    Timeout,
    TotalTimeout,
    Transport,
    TransportTimeout,
)
from transports.h11_transport import H11Transport
from transports.httpx_transport import HttpxTransport

pytestmark = pytest.mark.anyio

Build = Callable[..., Transport]
BUILDERS: dict[str, Build] = {"h11": H11Transport, "httpx": HttpxTransport}


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=sorted(BUILDERS))
def build(request: pytest.FixtureRequest) -> Build:
    return BUILDERS[request.param]


@pytest.fixture
async def transport(build: Build) -> AsyncIterator[Transport]:
    transport = build(
        limits=ConnectionLimits(per_backend=2, total=3, pool_wait=0.3),
        max_answer_bytes=64 * 1024,
    )
    try:
        yield transport
    finally:
        await transport.aclose()


def _get(server: ScriptedServer, path: str, timeout: Timeout | None = None) -> BackendRequest:
    return BackendRequest(
        method="GET", url=f"{server.url}{path}", timeout=timeout or Timeout(connect=5, read=5)
    )


async def _ok(exchange: Exchange) -> None:
    await exchange.respond(200, body=b"ok")


async def _silent(exchange: Exchange) -> None:
    await exchange.wait_disconnect()


async def _head_then_silence(exchange: Exchange) -> None:
    await exchange.start(200, [("content-type", "text/event-stream")])
    await exchange.wait_disconnect()


async def _one_chunk_then_silence(exchange: Exchange) -> None:
    await exchange.start(200, [("content-type", "text/event-stream")])
    await exchange.send(b"data: 1\n\n")
    await exchange.wait_disconnect()


async def _slow_but_steady(exchange: Exchange) -> None:
    """Eight events 0.1 s apart: longer than the first-byte and idle limits together."""
    await exchange.start(200, [("content-type", "text/event-stream")])
    for index in range(8):
        await anyio.sleep(0.1)  # the backend's pace, not a synchronisation
        await exchange.send(b"data: %d\n\n" % index)
    await exchange.end()


async def _huge_chunked(exchange: Exchange) -> None:
    await exchange.start(200, [("content-type", "application/json")])
    piece = b"x" * 16 * 1024
    try:
        for _ in range(1024):  # 16 MiB, unless the client stops reading first
            await exchange.send(piece)
        await exchange.end()
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        exchange.record.client_gone.set()


async def _huge_declared(exchange: Exchange) -> None:
    await exchange.start(200, [("content-length", str(16 * 1024 * 1024))])
    await exchange.wait_disconnect()


async def _gone(server: ScriptedServer) -> None:
    with anyio.fail_after(10):
        for record in server.connections:
            await record.client_gone.wait()


# -- time ---------------------------------------------------------------------------------


async def test_no_answer_is_a_first_byte_timeout(transport: Transport) -> None:
    timeout = Timeout(connect=5, read=5, first_byte=0.2)
    async with serving({"/silent": _silent}) as server:
        for call in (transport.send, transport.open_stream):
            with pytest.raises(FirstByteTimeout):
                await call(_get(server, "/silent", timeout))
        await _gone(server)


async def test_a_stream_whose_first_bytes_never_come_is_a_first_byte_timeout(
    transport: Transport,
) -> None:
    timeout = Timeout(connect=5, read=5, first_byte=0.3, idle=5)
    async with serving({"/head": _head_then_silence}) as server:
        stream = await transport.open_stream(_get(server, "/head", timeout))
        try:
            with pytest.raises(FirstByteTimeout):
                async for _ in stream.chunks():
                    pass
        finally:
            await stream.aclose()
        await _gone(server)


async def test_a_started_stream_gone_silent_is_an_idle_timeout(transport: Transport) -> None:
    timeout = Timeout(connect=5, read=5, first_byte=5, idle=0.2)
    async with serving({"/stall": _one_chunk_then_silence}) as server:
        stream = await transport.open_stream(_get(server, "/stall", timeout))
        received = await chunks_until(stream, IdleTimeout)
        await _gone(server)
    assert received == [b"data: 1\n\n"]


async def test_a_stream_that_keeps_sending_is_never_cut_for_its_length(
    transport: Transport,
) -> None:
    # 0.8 s in all, more than first byte and idle together; no total limit.
    timeout = Timeout(connect=5, read=0.4, first_byte=0.4, idle=0.4, total=None)
    async with serving({"/steady": _slow_but_steady}) as server:
        stream = await transport.open_stream(_get(server, "/steady", timeout))
        try:
            body = b"".join([chunk async for chunk in stream.chunks()])
        finally:
            await stream.aclose()
    assert body == b"".join(b"data: %d\n\n" % i for i in range(8))


async def _gap_longer_than_the_first_byte_limit(exchange: Exchange) -> None:
    await exchange.start(200, [("content-type", "text/event-stream")])
    await exchange.send(b"data: 1\n\n")
    await anyio.sleep(0.6)  # the backend's pace: past first byte, within idle
    await exchange.send(b"data: 2\n\n")
    await exchange.end()


async def test_after_the_first_bytes_only_the_idle_limit_applies(transport: Transport) -> None:
    timeout = Timeout(connect=5, read=5, first_byte=0.3, idle=3)
    async with serving({"/gap": _gap_longer_than_the_first_byte_limit}) as server:
        stream = await transport.open_stream(_get(server, "/gap", timeout))
        try:
            body = b"".join([chunk async for chunk in stream.chunks()])
        finally:
            await stream.aclose()
    assert body == b"data: 1\n\ndata: 2\n\n"


async def test_a_whole_answer_past_its_total_is_a_total_timeout(transport: Transport) -> None:
    timeout = Timeout(connect=5, read=5, first_byte=5, total=0.3)
    async with serving({"/steady": _slow_but_steady}) as server:
        with pytest.raises(TotalTimeout):
            await transport.send(_get(server, "/steady", timeout))
        await _gone(server)


async def test_a_stream_past_its_total_is_a_total_timeout_though_it_keeps_sending(
    transport: Transport,
) -> None:
    # Each event comes well within the idle limit; the total limit ends the stream.
    timeout = Timeout(connect=5, read=5, first_byte=5, idle=5, total=0.35)
    async with serving({"/steady": _slow_but_steady}) as server:
        stream = await transport.open_stream(_get(server, "/steady", timeout))
        received = await chunks_until(stream, TotalTimeout)
        await _gone(server)
    assert len(received) < 8


# -- connections --------------------------------------------------------------------------


async def test_a_full_backend_is_saturated_not_timed_out_and_delays_no_other(
    transport: Transport,
) -> None:
    routes = {"/hang": _one_chunk_then_silence, "/ok": _ok}
    async with serving(routes) as busy, serving(routes) as other:
        held = [await transport.open_stream(_get(busy, "/hang")) for _ in range(2)]
        try:
            with pytest.raises(Saturated, match="to this backend") as caught:
                await transport.send(_get(busy, "/ok"))
            assert not isinstance(caught.value, TransportTimeout)
            with anyio.fail_after(2):  # another backend: no wait at all
                assert (await transport.send(_get(other, "/ok"))).body == b"ok"
        finally:
            for stream in held:
                await stream.aclose()
        assert (await transport.send(_get(busy, "/ok"))).body == b"ok"


async def test_the_global_limit_bounds_every_backend_together(transport: Transport) -> None:
    routes = {"/hang": _one_chunk_then_silence, "/ok": _ok}
    async with serving(routes) as first, serving(routes) as second:
        held = [await transport.open_stream(_get(first, "/hang")) for _ in range(2)]
        held.append(await transport.open_stream(_get(second, "/hang")))
        try:
            with pytest.raises(Saturated, match="to all backends together"):
                await transport.send(_get(second, "/ok"))
        finally:
            for stream in held:
                await stream.aclose()
        assert (await transport.send(_get(second, "/ok"))).body == b"ok"


async def test_a_failed_call_gives_its_permits_back(transport: Transport) -> None:
    timeout = Timeout(connect=5, read=5, first_byte=0.1)
    async with serving({"/silent": _silent, "/ok": _ok}) as server:
        for _ in range(5):  # more than the permits: each failure must have returned its own
            with pytest.raises(FirstByteTimeout):
                await transport.send(_get(server, "/silent", timeout))
        assert (await transport.send(_get(server, "/ok"))).body == b"ok"


# -- size ---------------------------------------------------------------------------------


@pytest.mark.parametrize("route", [_huge_chunked, _huge_declared], ids=["chunked", "declared"])
async def test_an_answer_past_the_cap_is_refused_and_its_connection_closed(
    transport: Transport, route: Callable[[Exchange], object]
) -> None:
    async with serving({"/huge": route, "/ok": _ok}) as server:  # type: ignore[dict-item]
        with pytest.raises(AnswerTooLarge) as caught:
            await transport.send(_get(server, "/huge"))
        assert caught.value.limit == 64 * 1024
        assert "65536 bytes" in str(caught.value)
        await _gone(server)
        assert (await transport.send(_get(server, "/ok"))).body == b"ok"


async def test_a_stream_is_not_capped(transport: Transport) -> None:
    async with serving({"/huge": _huge_chunked}) as server:
        stream = await transport.open_stream(_get(server, "/huge"))
        size = 0
        try:
            async for chunk in stream.chunks():
                size += len(chunk)
        finally:
            await stream.aclose()
    assert size == 16 * 1024 * 1024
