"""Transparent in front of a real backend: OpenAI's own recorded answers through the gateway.

Every go-vcr cassette in tests/cassettes/openai-go-vcr (new files are picked up by the
glob; a missing folder stops the run when the tests are collected) is served by a
DirectAPIEndpoint whose `api_url` is the recorded URL and whose transport replays the
cassette.  The recorded request body goes to the gateway's plain
`/v1/...` route and to the ALCF route, through a real Hypercorn server with raw HTTP and
with the official `openai` client, and through the embedded Gateway under trio.  What the
client sees must be what OpenAI answered: status, JSON body, Content-Type, the SSE events
in order (each relayed as soon as the backend had it), OpenAI's request id; OpenAI's errors
unchanged, and where the gateway's own validation answers first, the same status and
error type.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import openai
import pytest
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from core import ClientError, OpenAIRoute, SSEDecoder, validate_request
from frontends.assembly import build_gateway
from frontends.identity import StaticKeys
from tests.support.cassettes import GO_VCR, GO_VCR_COUNT, GO_VCR_DIR
from tests.support.gateway_server import ALICE, running_gateway, write_fixtures, write_tokens
from transports import BackendRequest, BackendResponse, BackendStream
from transports.cassette import Exchange, load_cassette
from transports.replay import ReplayTransport

pytestmark = pytest.mark.e2e

CASSETTES = GO_VCR
KEY_ENV = "IGW_REAL_TRAFFIC_KEY"
ROUTES = {"plain": None, "alcf": ("openai", "api")}
# Backend headers that describe OpenAI's edge or the gateway's own upstream account.
PRIVATE = (
    "alt-svc",
    "cf-ray",
    "cf-cache-status",
    "strict-transport-security",
    "via",
    "x-envoy-upstream-service-time",
    "openai-project",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-tokens",
    "access-control-expose-headers",
    "set-cookie",
    "x-openai-proxy-wasm",
)
TYPES: dict[str, tuple[type[Any], type[Any] | None]] = {
    "chat/completions": (ChatCompletion, ChatCompletionChunk),
    "completions": (Completion, Completion),
    "embeddings": (CreateEmbeddingResponse, None),
}
STATUS_ERRORS = {400: openai.BadRequestError, 404: openai.NotFoundError}


def test_the_recorded_traffic_is_there() -> None:
    assert len(CASSETTES) == GO_VCR_COUNT == 26, f"expected OpenAI's cassettes in {GO_VCR_DIR}"


class _GatedStream:
    """A replayed stream that hands over event k+1 only once the test has seen event k."""

    def __init__(self, inner: BackendStream, gate: threading.Semaphore) -> None:
        self.status, self.headers = inner.status, inner.headers
        self._inner, self._gate = inner, gate

    async def chunks(self) -> AsyncIterator[bytes]:
        first = True
        async for chunk in self._inner.chunks():
            if not first and not await anyio.to_thread.run_sync(self._gate.acquire, True, 20):
                raise AssertionError("the client never saw the previous event: it was held back")
            first = False
            yield chunk

    async def aread(self) -> bytes:
        return await self._inner.aread()

    async def aclose(self) -> None:
        await self._inner.aclose()


class GatedReplay:
    """ReplayTransport, with streams gated while `gate` is set."""

    def __init__(self, exchanges: tuple[Exchange, ...]) -> None:
        self.replay = ReplayTransport(exchanges, reuse=True)
        self.gate: threading.Semaphore | None = None
        self.calls = 0

    async def send(self, request: BackendRequest) -> BackendResponse:
        self.calls += 1
        return await self.replay.send(request)

    async def open_stream(self, request: BackendRequest) -> BackendStream:
        self.calls += 1
        stream = await self.replay.open_stream(request)
        return stream if self.gate is None else _GatedStream(stream, self.gate)

    async def aclose(self) -> None:
        await self.replay.aclose()


class Case:
    """One recorded exchange and what the client must see for it."""

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self.body: dict[str, Any] = json.loads(exchange.request.body)
        path = httpx.URL(exchange.request.url).path
        self.route = path.split("/v1/", 1)[1]
        self.response = exchange.response
        self.stream = bool(self.body.get("stream"))
        valid = validate_request(OpenAIRoute(self.route), "application/json", exchange.request.body)
        self.refused_by_gateway = isinstance(valid, ClientError)

    @property
    def events(self) -> list[str]:
        return _events([self.response.content])

    def check(self, status: int, headers: httpx.Headers, body: bytes | list[str]) -> None:
        recorded = self.response
        assert status == recorded.status
        if self.refused_by_gateway:
            # Our own validation answered before the backend was asked: OpenAI's status
            # and error type, in our words.
            assert isinstance(body, bytes)
            assert (
                json.loads(body)["error"]["type"] == json.loads(recorded.content)["error"]["type"]
            )
            return
        assert headers["content-type"] == recorded.header("content-type")
        # OpenAI's own request id: over HTTP relayed as `x-backend-request-id` beside the
        # gateway's `x-request-id`; embedded (no HTTP, no gateway id) as `x-request-id`.
        relayed = headers.get("x-backend-request-id") or headers["x-request-id"]
        assert relayed == recorded.header("x-request-id")
        for name in PRIVATE:
            assert name not in headers, f"{name} leaked from the backend"
        if isinstance(body, list):
            assert body == self.events
        else:
            assert json.loads(body) == json.loads(recorded.content)


def _events(chunks: list[bytes]) -> list[str]:
    decoder = SSEDecoder()
    events = [data for chunk in chunks for data in decoder.feed(chunk)]
    return events + decoder.finish()


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tokens(tmp_path_factory.mktemp("tokens"))


@pytest.fixture(scope="module", autouse=True)
def backend_key() -> Iterator[None]:
    os.environ[KEY_ENV] = "sk-replayed-key-never-sent-anywhere-real"
    yield
    os.environ.pop(KEY_ENV, None)


def _fixtures(folder: Path, case: Case) -> Path:
    cluster = {
        "cluster_name": "openai",
        "frameworks": ["api"],
        "openai_endpoints": ["chat/completions", "completions", "embeddings"],
        "cluster_adapter": "adaptors.clusters.openai_compatible.OpenAICompatibleCluster",
        "config": {"api_url": "https://api.openai.com/v1"},
    }
    endpoint = {
        "endpoint_slug": "openai-api-recorded",
        "cluster": "openai",
        "framework": "api",
        "model": case.body["model"],
        "endpoint_adapter": "resource_server_async.endpoints.direct_api.DirectAPIEndpoint",
        "config": {"api_url": case.exchange.request.url, "api_key_env_name": KEY_ENV},
    }
    return write_fixtures(folder, [cluster], [endpoint])


def _cases(path: Path) -> list[Case]:
    return [Case(exchange) for exchange in load_cassette(path).exchanges]


def _base(url: str, route_kind: str) -> str:
    target = ROUTES[route_kind]
    return f"{url}/v1" if target is None else f"{url}/resource_server/{target[0]}/{target[1]}/v1"


@pytest.mark.parametrize("route_kind", ROUTES)
@pytest.mark.parametrize("cassette", CASSETTES, ids=lambda p: p.stem)
def test_through_the_server(cassette: Path, route_kind: str, tokens: Path, tmp_path: Path) -> None:
    for index, case in enumerate(_cases(cassette)):
        transport = GatedReplay((case.exchange,))
        fixtures = _fixtures(tmp_path / f"fixtures-{index}", case)
        with running_gateway(fixtures, tokens, transport=transport) as url:
            base = _base(url, route_kind)
            _raw_http(case, base, transport)
            _official_client(case, base)
        assert transport.calls == (0 if case.refused_by_gateway else 2)
        assert not transport.replay.mismatches


def _raw_http(case: Case, base: str, transport: GatedReplay) -> None:
    headers = {"Authorization": f"Bearer {ALICE}", "Content-Type": "application/json"}
    url = f"{base}/{case.route}"
    if not case.stream or case.refused_by_gateway:
        response = httpx.post(url, content=case.exchange.request.body, headers=headers)
        case.check(response.status_code, response.headers, response.content)
        return
    transport.gate = threading.Semaphore(0)
    try:
        received: list[str] = []
        decoder = SSEDecoder()
        with httpx.stream("POST", url, content=case.exchange.request.body, headers=headers) as r:
            for chunk in r.iter_raw():
                for event in decoder.feed(chunk):
                    received.append(event)
                    transport.gate.release()  # only now may the backend's next event go
            received += decoder.finish()
            case.check(r.status_code, r.headers, received)
    finally:
        transport.gate = None


def _official_client(case: Case, base: str) -> None:
    whole, chunk = TYPES[case.route]
    with openai.OpenAI(base_url=base, api_key=ALICE, max_retries=0) as client:
        send = {"cast_to": whole, "body": case.body}
        if case.response.status >= 400:
            with pytest.raises(STATUS_ERRORS[case.response.status]) as raised:
                client.post(f"/{case.route}", **send)
            if not case.refused_by_gateway:
                assert raised.value.body == json.loads(case.response.content)["error"]
            return
        if case.stream:
            stream = client.post(
                f"/{case.route}", **send, stream=True, stream_cls=openai.Stream[chunk]
            )
            items = list(stream)
            assert len(items) == len([e for e in case.events if e != "[DONE]"])
            return
        answer = client.post(f"/{case.route}", **send)
        assert isinstance(answer, whole)


@pytest.mark.parametrize("route_kind", ROUTES)
@pytest.mark.parametrize("cassette", CASSETTES, ids=lambda p: p.stem)
def test_embedded_under_trio(cassette: Path, route_kind: str, tokens: Path, tmp_path: Path) -> None:
    async def run() -> None:
        for index, case in enumerate(_cases(cassette)):
            fixtures = _fixtures(tmp_path / f"fixtures-{index}", case)
            transport = ReplayTransport((case.exchange,))
            gateway = build_gateway(
                fixtures, identity=StaticKeys.from_file(tokens), transport=transport
            )
            target = ROUTES[route_kind]
            try:
                response = await gateway.request(
                    case.route,
                    case.exchange.request.body,
                    headers={"Authorization": f"Bearer {ALICE}"},
                    cluster=target[0] if target else None,
                    framework=target[1] if target else None,
                )
                headers = httpx.Headers(list(response.headers))
                if response.stream is None:
                    case.check(response.status, headers, response.body)
                else:
                    chunks = [chunk async for chunk in response.stream]
                    # One backend event in, one relayed chunk out: nothing coalesced.
                    assert len(chunks) == len(case.response.chunks or ())
                    case.check(response.status, headers, _events(chunks))
            finally:
                await gateway.aclose()
            assert not transport.mismatches

    anyio.run(run, backend="trio")
