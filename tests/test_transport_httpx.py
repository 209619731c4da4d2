"""`HttpxTransport` against a realistic OpenAI-compatible backend, under asyncio and trio.

What every transport must do is in test_transport_conformance.py; here are httpx's own
cases (a client passed in, unsupported schemes) and the transport in front of
`FakeOpenAI` under Hypercorn, where the server also sees abandoned requests torn down.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator

import anyio
import httpx
import pytest
from quart import Quart

from tests.support.fake_openai import FakeOpenAI, running_fake_openai
from tests.support.servers import serve_app
from transports import (
    BackendRequest,
    BackendStream,
    Timeout,
    TransportError,
    TransportTimeout,
)
from transports.httpx_transport import HttpxTransport

KEY = "sk-transport-test-key"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def backend() -> Iterator[tuple[FakeOpenAI, str]]:
    with running_fake_openai(models=["m1", "m2"], api_key=KEY) as running:
        yield running


@pytest.fixture
async def transport() -> AsyncIterator[HttpxTransport]:
    transport = HttpxTransport()
    try:
        yield transport
    finally:
        await transport.aclose()


def _auth() -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {KEY}"), ("content-type", "application/json")]


def _chat(
    url: str, model: str, *, stream: bool = False, timeout: Timeout | None = None
) -> BackendRequest:
    body = (
        b'{"model": "%s", "stream": %s, "messages": [{"role": "user", "content": "one two"}]}'
        % (model.encode(), b"true" if stream else b"false")
    )
    return BackendRequest(
        method="POST",
        url=f"{url}/v1/chat/completions",
        headers=_auth(),
        body=body,
        timeout=timeout or Timeout(connect=5, read=10),
    )


def _assert_clean(exc: BaseException, url: str) -> None:
    """No URL, host, port or key in what an error says."""
    text = f"{exc} {exc!r}"
    port = url.rsplit(":", 1)[-1]
    for leak in (url, "127.0.0.1", port, KEY, "http://"):
        assert leak not in text
    assert exc.__cause__ is None and exc.__suppress_context__


async def _wait(event_wait: Callable[[float], bool]) -> bool:
    return await anyio.to_thread.run_sync(event_wait, 10.0)


pytestmark = pytest.mark.anyio


async def test_status_and_headers_pass_through(
    backend: tuple[FakeOpenAI, str], transport: HttpxTransport
) -> None:
    _, url = backend
    ok = await transport.send(BackendRequest(method="GET", url=f"{url}/v1/models", headers=_auth()))
    assert ok.status == 200
    assert ok.header("Content-Type") == "application/json"
    assert [m["id"] for m in httpx.Response(200, content=ok.body).json()["data"]] == ["m1", "m2"]

    refused = await transport.send(BackendRequest(method="GET", url=f"{url}/v1/models"))
    assert refused.status == 401
    assert b"invalid_api_key" in refused.body


async def test_request_body_and_headers_arrive_exactly(
    backend: tuple[FakeOpenAI, str], transport: HttpxTransport
) -> None:
    fake, url = backend
    body = '{"model":"m1",  "messages":[{"role":"user","content":"caf\u00e9 \\u00e9"}]}'.encode()
    request = BackendRequest(
        method="post",
        url=f"{url}/v1/chat/completions",
        headers=[*_auth(), ("x-trace", "abc")],
        body=body,
    )
    response = await transport.send(request)
    assert response.status == 200
    seen = fake.requests[-1]
    assert (seen.method, seen.path, seen.body) == ("POST", "/v1/chat/completions", body)
    assert seen.header("authorization") == f"Bearer {KEY}"
    assert seen.header("x-trace") == "abc"


async def test_stream_chunks_arrive_in_order_and_separately(
    backend: tuple[FakeOpenAI, str], transport: HttpxTransport
) -> None:
    _, url = backend
    stream = await transport.open_stream(_chat(url, "m1", stream=True))
    assert isinstance(stream, BackendStream)
    try:
        assert stream.status == 200
        chunks = [chunk async for chunk in stream.chunks()]
    finally:
        await stream.aclose()
    events = b"".join(chunks).split(b"\n\n")[:-1]
    # The server wrote one SSE event per write; each arrives as its own chunk, in order.
    assert chunks == [event + b"\n\n" for event in events]
    assert chunks[-1] == b"data: [DONE]\n\n"
    deltas = [json.loads(c[len(b"data: ") :])["choices"][0]["delta"] for c in chunks[:-1]]
    assert deltas[0]["role"] == "assistant"
    assert "".join(d.get("content", "") for d in deltas) == "fake reply to: one two"


async def test_a_chunk_arrives_before_the_stream_ends_and_close_reaches_the_server(
    backend: tuple[FakeOpenAI, str], transport: HttpxTransport
) -> None:
    fake, url = backend
    stream = await transport.open_stream(_chat(url, "hang-stream", stream=True))
    chunks = stream.chunks()
    first = await chunks.__anext__()
    assert first.startswith(b"data: {") and first.endswith(b"\n\n")
    assert not fake.stream_cancelled.is_set()
    await stream.aclose()
    await stream.aclose()  # idempotent
    assert await _wait(fake.stream_cancelled.wait)
    assert fake.cancelled == ["hang-stream"]


async def test_aread_returns_the_whole_body(
    backend: tuple[FakeOpenAI, str], transport: HttpxTransport
) -> None:
    _, url = backend
    stream = await transport.open_stream(_chat(url, "reject-400", stream=True))
    try:
        assert stream.status == 400
        assert b'"param": "temperature"' in await stream.aread()
    finally:
        await stream.aclose()


@pytest.mark.parametrize(
    "timeout",
    [Timeout(connect=5, read=0.3), Timeout(connect=5, read=None, total=0.3)],
    ids=["read", "total"],
)
async def test_a_silent_backend_times_out(
    backend: tuple[FakeOpenAI, str], transport: HttpxTransport, timeout: Timeout
) -> None:
    fake, url = backend
    with pytest.raises(TransportTimeout) as caught:
        await transport.send(_chat(url, "slow", timeout=timeout))
    _assert_clean(caught.value, url)
    # The abandoned request is torn down on the server's side too.
    assert await _wait(fake.stream_cancelled.wait)


@pytest.mark.parametrize(
    "timeout",
    [Timeout(connect=5, read=0.3), Timeout(connect=5, read=None, total=0.5)],
    ids=["read", "total"],
)
async def test_a_stream_that_stalls_times_out_while_iterating(
    backend: tuple[FakeOpenAI, str], transport: HttpxTransport, timeout: Timeout
) -> None:
    fake, url = backend
    stream = await transport.open_stream(_chat(url, "hang-stream", stream=True, timeout=timeout))
    received = []
    try:
        with pytest.raises(TransportTimeout) as caught:
            async for chunk in stream.chunks():
                received.append(chunk)
    finally:
        await stream.aclose()
    assert len(received) == 1
    _assert_clean(caught.value, url)
    assert await _wait(fake.stream_cancelled.wait)


async def test_an_unsupported_scheme_is_a_transport_error(transport: HttpxTransport) -> None:
    with pytest.raises(TransportError) as caught:
        await transport.send(BackendRequest(method="GET", url="ftp://user:pw@example.invalid/x"))
    assert "pw" not in str(caught.value) and "example" not in str(caught.value)


async def test_a_client_passed_in_is_left_open(backend: tuple[FakeOpenAI, str]) -> None:
    _, url = backend
    async with httpx.AsyncClient() as client:
        transport = HttpxTransport(client)
        response = await transport.send(
            BackendRequest(method="GET", url=f"{url}/v1/models", headers=_auth())
        )
        assert response.status == 200
        await transport.aclose()
        assert not client.is_closed
    own = HttpxTransport()
    await own.aclose()
    assert own._client.is_closed


# -- the test server harness itself -----------------------------------------------------------


async def test_the_test_server_runs_lifespan_hooks() -> None:
    app = Quart("lifespan")
    events: list[str] = []

    @app.before_serving
    async def start() -> None:
        events.append("started")
        app.config["resource"] = "made-at-startup"

    @app.after_serving
    async def stop() -> None:
        events.append("stopped")

    @app.get("/resource")
    async def resource() -> str:
        return str(app.config["resource"])

    transport = HttpxTransport()
    try:
        with serve_app(app) as url:
            answer = await transport.send(BackendRequest(method="GET", url=f"{url}/resource"))
            assert (answer.status, answer.body) == (200, b"made-at-startup")
    finally:
        await transport.aclose()
    assert events == ["started", "stopped"]


async def test_the_test_server_reports_a_failed_start() -> None:
    app = Quart("broken")

    @app.before_serving
    async def start() -> None:
        raise RuntimeError("no database")

    with pytest.raises(RuntimeError, match="failed"), serve_app(app):
        pass
