"""Recording and replaying: cassettes, `RecordingTransport`, `ReplayTransport`, and
`inference-gateway replay` over our own cassettes and the real OpenAI traffic in
tests/cassettes/openai-go-vcr (go-vcr v2 YAML)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import yaml

from core import OpenAIRoute
from frontends.assembly import build_gateway
from frontends.gateway import GatewayRequest
from frontends.replay import ConversationRecorder, replay_cassette
from tests.support.cassettes import (
    BACKEND_KEY,
    CASSETTES,
    CLIENT_TOKEN,
    FAKE_MODELS,
    FAKE_REQUESTS,
    GO_VCR,
    GO_VCR_COUNT,
    GO_VCR_DIR,
    KEY_ENV,
    Tokens,
    drain,
    fake_backend_fixtures,
    record,
)
from tests.support.fake_openai import running_fake_openai
from transports import BackendRequest, BackendResponse, ConnectError, TransportError
from transports.cassette import (
    REDACTED,
    Chunk,
    Exchange,
    RecordedRequest,
    RecordedResponse,
    load_cassette,
    split_sse,
    write_records,
)
from transports.recording import RecordingTransport, capture
from transports.replay import ReplayMismatch, ReplayStream, ReplayTransport

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "frontends.cli"]
URL = "https://api.example.test/v1/chat/completions"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _chat_body(content: str, **extra: object) -> bytes:
    return json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": content}], **extra}
    ).encode()


def _exchange(body: bytes, answer: bytes = b'{"ok": true}', url: str = URL) -> Exchange:
    return Exchange(
        request=RecordedRequest(method="POST", url=url, body=body),
        response=RecordedResponse(status=200, body=answer),
    )


def _request(body: bytes, url: str = URL, method: str = "POST") -> BackendRequest:
    return BackendRequest(method=method, url=url, body=body)


# -- round trip against a live backend ----------------------------------------------------


@pytest.fixture
def backend_env() -> Iterator[None]:
    os.environ[KEY_ENV] = BACKEND_KEY
    try:
        yield
    finally:
        os.environ.pop(KEY_ENV, None)


@pytest.mark.anyio
async def test_record_then_replay_without_the_backend(tmp_path: Path, backend_env: None) -> None:
    cassette = tmp_path / "round-trip.jsonl"
    with running_fake_openai(models=FAKE_MODELS, api_key=BACKEND_KEY) as (fake, url):
        fixtures = fake_backend_fixtures(tmp_path / "fixtures", url)
        live = await record(fixtures, cassette, FAKE_REQUESTS)
        calls = len(fake.requests)
    # The backend is gone: replay must need no network at all.
    assert calls == 6  # every request but the one without a token reached the backend
    with anyio.fail_after(30):
        replayed = await replay_cassette(cassette)
    assert [r.differences for r in replayed] == [()] * len(FAKE_REQUESTS)
    for (status, headers, body), result in zip(live, replayed, strict=True):
        assert result.actual.status == status
        assert result.actual.headers == headers
        if result.actual.chunks is None:
            assert [result.actual.body] == body
        else:
            assert [c.data for c in result.actual.chunks] == body
    # The stream really was a stream, event by event, and the backend's 400 came through.
    assert len(live[1][2]) > 3 and live[1][2][-1] == b"data: [DONE]\n\n"
    assert live[4][0] == 400


@pytest.mark.anyio
async def test_replay_transport_answers_a_gateway_built_by_hand(tmp_path: Path) -> None:
    """`ReplayTransport.from_file` is enough for an embedder: no runner involved."""
    source = load_cassette(CASSETTES / "fake-backend.jsonl")
    assert source.fixtures is not None
    folder = tmp_path / "fixtures"
    folder.mkdir()
    (folder / "clusters.json").write_text(source.fixtures.clusters)
    (folder / "endpoints.json").write_text(source.fixtures.endpoints)
    gateway = build_gateway(
        folder,
        identity=Tokens(),
        transport=ReplayTransport.from_file(CASSETTES / "fake-backend.jsonl"),
    )
    try:
        for conversation in source.conversations:
            request = conversation.request
            route = OpenAIRoute.from_path(request.route)
            assert route is not None
            response = await gateway.handle(
                GatewayRequest(
                    route=route,
                    body=request.body,
                    content_type=request.content_type,
                    authorization=None
                    if request.authorization is None
                    else f"Bearer {CLIENT_TOKEN}",
                )
            )
            status, _, body = await drain(response)
            assert status == conversation.response.status
            recorded = conversation.response
            expected = (
                [recorded.body] if recorded.chunks is None else [c.data for c in recorded.chunks]
            )
            assert body == expected
    finally:
        await gateway.aclose()


def _replay_all(backend: str) -> list[RecordedResponse]:
    async def run() -> list[RecordedResponse]:
        results = []
        for path in [*sorted(CASSETTES.glob("*.jsonl")), *GO_VCR]:
            results += [r.actual for r in await replay_cassette(path)]
        return results

    return anyio.run(run, backend=backend)


def test_asyncio_and_trio_give_byte_identical_gateway_responses() -> None:
    on_asyncio, on_trio = _replay_all("asyncio"), _replay_all("trio")
    assert len(on_asyncio) == len(on_trio) >= len(GO_VCR) + 2
    for a, t in zip(on_asyncio, on_trio, strict=True):
        assert (a.status, a.headers, a.body) == (t.status, t.headers, t.body)
        assert [c.data for c in a.chunks or ()] == [c.data for c in t.chunks or ()]


@pytest.mark.anyio
async def test_a_backend_request_no_record_answers_is_reported_as_such(tmp_path: Path) -> None:
    lines = (CASSETTES / "fake-backend.jsonl").read_text().splitlines()
    conversation = json.loads(lines[1])
    exchange = conversation["exchanges"][0]
    exchange["request"]["body"] = exchange["request"]["body"].replace("Hello there", "Bye")
    lines[1] = json.dumps(conversation)
    altered = tmp_path / "altered.jsonl"
    altered.write_text("\n".join(lines) + "\n")
    first, *rest = await replay_cassette(altered)
    assert all(r.passed for r in rest)
    assert first.actual.status == 502  # what the client would see: an adaptor failure
    assert first.differences[0].startswith("the gateway sent a backend request no record")
    assert "body field messages[0].content" in first.differences[0]


@pytest.mark.anyio
async def test_recorder_marks_a_stream_the_client_left(tmp_path: Path) -> None:
    """Recorded offline (the fake backend's stream, replayed), then replayed again."""
    source = CASSETTES / "fake-backend.jsonl"
    fixtures = load_cassette(source).fixtures
    assert fixtures is not None
    folder = tmp_path / "fixtures"
    folder.mkdir()
    (folder / "clusters.json").write_text(fixtures.clusters)
    (folder / "endpoints.json").write_text(fixtures.endpoints)
    path = tmp_path / "left.jsonl"
    recorder = ConversationRecorder.from_fixtures(
        folder, identity=Tokens(), transport=ReplayTransport.from_file(source), path=path
    )
    route, body, authorization = FAKE_REQUESTS[1]
    response = await recorder.handle(
        GatewayRequest(
            route=route, body=body, content_type="application/json", authorization=authorization
        )
    )
    assert response.stream is not None
    first = await response.stream.__anext__()
    await response.stream.aclose()
    await recorder.aclose()
    [conversation] = load_cassette(path).conversations
    assert conversation.response.cancelled
    assert [c.data for c in conversation.response.chunks or ()] == [first]
    assert conversation.exchanges[0].response.cancelled  # the backend stream was cut too
    assert conversation.request.caller is not None
    assert conversation.request.authorization == f"Bearer {REDACTED}"
    assert CLIENT_TOKEN not in path.read_text()
    # Replayed, the client leaves after as many events again.
    [replayed] = await replay_cassette(path)
    assert replayed.passed, replayed.differences
    assert replayed.actual.cancelled


# -- matching and mismatches -----------------------------------------------------------------


@pytest.mark.anyio
async def test_mismatch_names_the_first_differing_body_field() -> None:
    replay = ReplayTransport([_exchange(_chat_body("Hello!")), _exchange(b"not json")])
    with pytest.raises(ReplayMismatch) as caught:
        await replay.send(_request(_chat_body("Hi!")))
    assert "body field messages[0].content" in str(caught.value)
    assert "record #0" in str(caught.value)
    assert not isinstance(caught.value, TransportError)
    assert replay.mismatches == [caught.value]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (_request(_chat_body("Hello!"), method="GET"), "method"),
        (_request(_chat_body("Hello!"), url="https://api.example.test/v1/completions"), "path"),
        (_request(_chat_body("Hello!"), url=URL + "?api-version=2"), "query"),
        (_request(_chat_body("Hello!", stream=True, n=2)), "body field n"),
        (_request(_chat_body("Hello!", stream=1)), "body field stream"),
    ],
)
async def test_mismatch_field_order(request_: BackendRequest, field: str) -> None:
    replay = ReplayTransport([_exchange(_chat_body("Hello!", stream=True))])
    with pytest.raises(ReplayMismatch) as caught:
        await replay.send(request_)
    assert f"differing first at {field}:" in str(caught.value)


@pytest.mark.anyio
async def test_json_bodies_match_as_json_and_records_are_used_once() -> None:
    recorded = b'{"model": "m",   "messages": [], "n": 1}'
    replay = ReplayTransport([_exchange(recorded, b"first"), _exchange(recorded, b"second")])
    # Key order and spacing do not matter; the host does not either.
    sent = _request(
        b'{"n":1,"messages":[],"model":"m"}', url="http://elsewhere/v1/chat/completions"
    )
    assert (await replay.send(sent)).body == b"first"
    assert (await replay.send(sent)).body == b"second"
    with pytest.raises(ReplayMismatch, match="already used"):
        await replay.send(sent)
    again = ReplayTransport([_exchange(recorded, b"only")], reuse=True)
    assert [(await again.send(sent)).body for _ in range(3)] == [b"only"] * 3


@pytest.mark.anyio
async def test_streams_replay_chunk_by_chunk_and_failures_replay_as_failures() -> None:
    events = (b"data: 1\n\n", b"data: 2\n\n", b"data: [DONE]\n\n")
    stream_exchange = Exchange(
        request=RecordedRequest(method="POST", url=URL, body=b"{}"),
        response=RecordedResponse(
            status=200,
            headers={"content-type": "text/event-stream"},
            chunks=[Chunk(data=e, at=0.001 * i) for i, e in enumerate(events)],
        ),
    )
    failed = Exchange(
        request=RecordedRequest(method="POST", url=URL, body=b'{"x": 1}'),
        response=RecordedResponse(status=0, error="ConnectError"),
    )
    replay = ReplayTransport([stream_exchange, failed], timing=True)
    stream = await replay.open_stream(_request(b"{}"))
    assert isinstance(stream, ReplayStream)
    assert [chunk async for chunk in stream.chunks()] == list(events)
    await stream.aclose()
    with pytest.raises(ConnectError):
        await replay.send(_request(b'{"x": 1}'))


# -- recording ------------------------------------------------------------------------------


class _Canned:
    """A function-backed transport: every call answers the same."""

    def __init__(self) -> None:
        self.events = (b"data: a\n\n", b"data: b\n\n", b"data: [DONE]\n\n")

    async def send(self, request: BackendRequest) -> BackendResponse:
        return BackendResponse(
            status=200,
            headers=[("set-cookie", "session=abc"), ("x-request-id", "req_1")],
            body=b'{"ok": true}',
        )

    async def open_stream(self, request: BackendRequest) -> ReplayStream:
        exchange_response = RecordedResponse(
            status=200, chunks=[Chunk(data=e) for e in self.events]
        )
        return ReplayStream(exchange_response)

    async def aclose(self) -> None:
        return None


SECRET_HEADERS = [
    ("Authorization", "Bearer sk-live-SECRET-123"),
    ("api-key", "azure-SECRET-456"),
    ("X-Api-Key", "SECRET-789"),
    ("Cookie", "sid=SECRET-000"),
    ("X-Custom-Token", "Bearer SECRET-abc.def"),
    ("WWW-Authenticate", 'Bearer realm="igw"'),  # a challenge, not a credential
    ("Content-Type", "application/json"),
]


@pytest.mark.anyio
async def test_recording_redacts_secrets_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    transport = RecordingTransport(_Canned(), path)
    request = BackendRequest(method="POST", url=URL, headers=SECRET_HEADERS, body=b"{}")
    with capture() as seen:
        await transport.send(request)
    text = path.read_text()
    assert "SECRET" not in text and "session=abc" not in text
    [exchange] = load_cassette(path).exchanges
    headers = dict(exchange.request.headers)
    assert headers["Authorization"] == f"Bearer {REDACTED}"
    assert headers["X-Custom-Token"] == f"Bearer {REDACTED}"
    assert headers["api-key"] == headers["Cookie"] == REDACTED
    assert headers["Content-Type"] == "application/json"
    assert headers["WWW-Authenticate"] == 'Bearer realm="igw"'
    assert dict(exchange.response.headers) == {"set-cookie": REDACTED, "x-request-id": "req_1"}
    # The in-memory capture is not redacted: it never leaves the process.
    assert seen[0].request.headers == request.headers


@pytest.mark.anyio
async def test_recording_a_stream_keeps_chunks_and_marks_a_cancelled_one(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    transport = RecordingTransport(_Canned(), path)
    whole = await transport.open_stream(_request(b"{}"))
    assert [c async for c in whole.chunks()] == list(_Canned().events)
    await whole.aclose()
    partial = await transport.open_stream(_request(b"{}"))
    chunks = partial.chunks()
    assert await chunks.__anext__() == b"data: a\n\n"
    await chunks.aclose()  # type: ignore[attr-defined]
    await partial.aclose()
    first, second = load_cassette(path).exchanges
    assert [c.data for c in first.response.chunks or ()] == list(_Canned().events)
    assert not first.response.cancelled
    assert [c.data for c in second.response.chunks or ()] == [b"data: a\n\n"]
    assert second.response.cancelled
    assert all(c.at >= 0 for c in first.response.chunks or ())


@pytest.mark.anyio
async def test_recording_a_transport_failure(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    transport = RecordingTransport(ReplayTransport(()), path)
    with pytest.raises(ReplayMismatch):
        await transport.send(_request(b"{}"))
    assert not path.exists()  # a harness error is not a backend exchange
    refused = Exchange(
        request=RecordedRequest(method="POST", url=URL, body=b"{}"),
        response=RecordedResponse(status=0, error="ConnectError"),
    )
    transport = RecordingTransport(ReplayTransport([refused]), path)
    with pytest.raises(ConnectError):
        await transport.send(_request(b"{}"))
    assert load_cassette(path).exchanges[0].response.error == "ConnectError"


# -- go-vcr ----------------------------------------------------------------------------------


def test_the_real_traffic_is_there() -> None:
    assert len(GO_VCR) == GO_VCR_COUNT == 26
    assert all(path.parent == GO_VCR_DIR for path in GO_VCR)
    notice = (GO_VCR_DIR / "NOTICE").read_text()
    assert "envoyproxy/ai-gateway" in notice and "Apache License" in notice
    assert (GO_VCR_DIR / "LICENSE").is_file()


@pytest.mark.parametrize("path", GO_VCR, ids=[p.name for p in GO_VCR])
def test_go_vcr_cassette_loads_with_recorded_status_and_body(path: Path) -> None:
    raw = yaml.safe_load(path.read_text())
    cassette = load_cassette(path)
    assert cassette.format == "go-vcr"
    assert len(cassette.exchanges) == len(raw["interactions"])
    for exchange, interaction in zip(cassette.exchanges, raw["interactions"], strict=True):
        body = (interaction["response"]["body"] or "").encode()
        assert exchange.request.method == interaction["request"]["method"]
        assert exchange.request.url == interaction["request"]["url"]
        assert exchange.request.body == (interaction["request"]["body"] or "").encode()
        assert exchange.response.status == interaction["response"]["code"]
        if exchange.response.is_stream:
            chunks = exchange.response.chunks or ()
            assert len(chunks) > 1
            assert all(c.data.endswith(b"\n\n") for c in chunks)
            assert b"".join(c.data for c in chunks) == b"".join(split_sse(body))
            assert b"".join(c.data for c in chunks).strip() == body.strip()
        else:
            assert exchange.response.body == body


def test_go_vcr_and_jsonl_load_into_the_same_model(tmp_path: Path) -> None:
    source = load_cassette(GO_VCR[0])
    copy = tmp_path / "copy.jsonl"
    write_records(copy, source.exchanges)
    again = load_cassette(copy)
    assert again.format == "jsonl"
    for a, b in zip(source.exchanges, again.exchanges, strict=True):
        assert (a.request.method, a.request.url, a.request.body) == (
            b.request.method,
            b.request.url,
            b.request.body,
        )
        assert a.response == b.response


# -- the command -----------------------------------------------------------------------------


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [*CLI, "replay", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_replay_command_passes_on_our_cassettes(loop: str) -> None:
    cassettes = sorted(CASSETTES.glob("*.jsonl"))
    assert len(cassettes) >= 2
    done = _cli(*cassettes, "--loop", loop)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "DIFF" not in done.stdout
    assert f"0 differed (0 cassette(s) with differences) [loop: {loop}]" in done.stdout


def test_replay_command_reports_an_altered_cassette(tmp_path: Path) -> None:
    lines = (CASSETTES / "fake-backend.jsonl").read_text().splitlines()
    record_ = json.loads(lines[1])
    assert record_["type"] == "conversation"
    record_["response"]["body"] = record_["response"]["body"].replace("fake reply", "fake REPLY")
    lines[1] = json.dumps(record_)
    altered = tmp_path / "altered.jsonl"
    altered.write_text("\n".join(lines) + "\n")
    done = _cli(altered)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "altered.jsonl" in done.stdout and "DIFF" in done.stdout
    assert "body differs" in done.stdout and "fake REPLY" in done.stdout


def test_replay_command_reads_go_vcr_cassettes() -> None:
    done = _cli(*GO_VCR)
    rows = [
        line for line in done.stdout.splitlines() if line.endswith(("pass",)) or " DIFF " in line
    ]
    assert len(rows) == len(GO_VCR), done.stdout + done.stderr
    assert done.returncode == (1 if any(" DIFF " in r for r in rows) else 0)


def test_replay_command_refuses_an_unreadable_cassette(tmp_path: Path) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"type": "exchange"}\n')
    done = _cli(broken)
    assert done.returncode == 2
    assert "broken.jsonl: line 1" in done.stderr
