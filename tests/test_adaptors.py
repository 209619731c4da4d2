"""Adaptors: the seed contract, Direct API and OpenAI-compatible over real sockets, the
demo model against the official `openai` types, and the fixture loader's messages."""

from __future__ import annotations

import base64
import json
import logging
import socket
import struct
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import anyio
import openai.types as ot
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from quart import Quart

from adaptors._urls import resolve_url
from adaptors.clusters.cluster import BaseCluster, GetJobsResponse, JobInfo, Jobs
from adaptors.clusters.demo import DemoCluster
from adaptors.clusters.openai_compatible import OpenAICompatibleCluster
from adaptors.endpoints.demo import DemoEndpoint
from adaptors.endpoints.direct_api import DirectAPIEndpoint
from adaptors.endpoints.endpoint import (
    BaseEndpoint,
    StreamingResponse,
    SubmitStreamingTaskResponse,
    unpack_task_data,
)
from adaptors.loading import build_cluster, build_endpoint, import_adaptor
from core import ClusterRecord, ConfigurationError, EndpointRecord
from tests.support.fake_openai import (
    EXACT_BODY,
    SECRET_DETAIL,
    FakeOpenAI,
    running_fake_openai,
)
from tests.support.servers import serve_app
from transports import BackendResponse
from transports.function import FunctionTransport
from transports.httpx_transport import HttpxTransport

SECRET = "sk-VERY-distinctive-secret-0123456789"
KEY_ENV = "INFERENCE_GATEWAY_TEST_DIRECT_KEY"
ENDPOINTS_FILE = "fixtures/endpoints.json"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeOpenAI, str]]:
    monkeypatch.setenv(KEY_ENV, SECRET)
    with running_fake_openai(models=["Llama-Test-8B", "other-model"], api_key=SECRET) as running:
        yield running


@pytest.fixture
async def transport() -> AsyncIterator[HttpxTransport]:
    transport = HttpxTransport()
    try:
        yield transport
    finally:
        await transport.aclose()


def _closed_port_url() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def _direct(
    api_url: str, *, model: str = "Llama-Test-8B", timeout: float = 30
) -> DirectAPIEndpoint:
    return DirectAPIEndpoint(
        "1",
        f"test-api-{model}",
        "test",
        "api",
        model,
        "adaptors.endpoints.direct_api.DirectAPIEndpoint",
        None,
        None,
        {"api_url": api_url, "api_key_env_name": KEY_ENV, "api_request_timeout": timeout},
    )


def _openai_cluster(api_url: str) -> OpenAICompatibleCluster:
    return OpenAICompatibleCluster(
        "1",
        "test",
        "adaptors.clusters.openai_compatible.OpenAICompatibleCluster",
        ["vllm"],
        ["chat/completions"],
        config={"api_url": api_url, "api_key_env_name": KEY_ENV},
    )


def _chat_envelope(
    model: str, *, stream: bool = False, text: str = "hello there"
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}]}
    if stream:
        body["stream"] = True
    return {"model_params": body, "openai_endpoint": "chat/completions", "request_id": "r-1"}


def _assert_no_leaks(text: str, url: str) -> None:
    assert SECRET not in text
    assert url not in text
    assert "127.0.0.1" not in text
    assert "http://" not in text


pytestmark = pytest.mark.anyio


# -- URL resolution ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api_url", "route", "expected"),
    [
        ("https://h/v1/chat/completions", "chat/completions", "https://h/v1/chat/completions"),
        ("https://h/v1/chat/completions", "completions", "https://h/v1/completions"),
        ("https://h/v1/chat/completions", "embeddings", "https://h/v1/embeddings"),
        ("https://h/v1/chat/completions/", "embeddings", "https://h/v1/embeddings"),
        ("https://h/v1/completions", "chat/completions", "https://h/v1/chat/completions"),
        ("https://h/v1/embeddings", "completions", "https://h/v1/completions"),
        ("https://h/v1", "chat/completions", "https://h/v1/chat/completions"),
        ("https://h/v1/", "embeddings", "https://h/v1/embeddings"),
        ("http://h:8000", "completions", "http://h:8000/completions"),
        (
            "https://your-targetted-api.com/v1/your-model/chat/completions",
            "embeddings",
            "https://your-targetted-api.com/v1/your-model/embeddings",
        ),
        (
            "https://h/openai/deployments/d/chat/completions?api-version=2024-06-01",
            "embeddings",
            "https://h/openai/deployments/d/embeddings?api-version=2024-06-01",
        ),
        ("https://h/v1/chat/completions", None, "https://h/v1/chat/completions"),
        ("https://h/custom/generate/", None, "https://h/custom/generate/"),
        ("https://h/v1", "models", "https://h/v1/models"),
    ],
)
def test_url_resolution(api_url: str, route: str | None, expected: str) -> None:
    assert resolve_url(api_url, route) == expected


@pytest.mark.parametrize(
    ("data", "body", "route"),
    [
        (
            {"model_params": {"model": "m", "input": "x"}, "openai_endpoint": "embeddings"},
            {"model": "m", "input": "x"},
            "embeddings",
        ),
        ({"model": "m", "messages": []}, {"model": "m", "messages": []}, "chat/completions"),
        ({"model": "m", "prompt": "p"}, {"model": "m", "prompt": "p"}, "completions"),
        ({"model": "m", "input": [1, 2]}, {"model": "m", "input": [1, 2]}, "embeddings"),
        ({"model": "m"}, {"model": "m"}, None),
    ],
)
def test_unpack_task_data(data: dict[str, Any], body: dict[str, Any], route: str | None) -> None:
    assert unpack_task_data(data) == (body, route)


# -- the base contract ------------------------------------------------------------------------


def test_base_endpoint_identity_is_read_only_and_lists_are_normalised() -> None:
    endpoint = DemoEndpoint("7", "c-demo-m", "c", "demo", "m", "x.Y", "g1, g2,", None)
    assert (endpoint.id, endpoint.endpoint_slug, endpoint.cluster) == ("7", "c-demo-m", "c")
    assert (endpoint.framework, endpoint.model, endpoint.endpoint_adapter) == ("demo", "m", "x.Y")
    assert endpoint.allowed_globus_groups == ["g1", "g2"]
    assert endpoint.allowed_domains == []
    with pytest.raises(AttributeError):
        endpoint.model = "other"  # type: ignore[misc]
    with pytest.raises(RuntimeError, match="bind"):
        _ = endpoint.transport
    assert endpoint.cluster_adaptor is None


async def test_batch_mode_is_off_by_default() -> None:
    endpoint = DemoEndpoint("1", "s", "c", "demo", "m", "x.Y")
    assert endpoint.has_batch_enabled() is False
    submitted = await endpoint.submit_batch({"input_file": "f"}, "user@example.org")
    status = await endpoint.get_batch_status(object())
    assert (submitted.error_code, status.error_code) == (501, 501)
    assert "not enabled" in (submitted.error_message or "")


async def test_streaming_response_closes_once_and_closes_its_content() -> None:
    closed: list[str] = []

    async def content() -> AsyncIterator[bytes]:
        try:
            yield b"a"
            yield b"b"
        finally:
            closed.append("content")

    async def on_close() -> None:
        closed.append("on_close")

    response = StreamingResponse(content(), on_close=on_close)
    iterator = aiter(response.content)
    assert await anext(iterator) == b"a"
    await response.aclose()
    await response.aclose()
    assert closed == ["content", "on_close"]
    assert SubmitStreamingTaskResponse(response=content()).response is not None
    with pytest.raises(ValueError):
        SubmitStreamingTaskResponse(response=42)


# -- Direct API against a real backend --------------------------------------------------------


async def test_direct_api_sends_the_key_and_returns_the_body_byte_for_byte(
    backend: tuple[FakeOpenAI, str], transport: HttpxTransport
) -> None:
    fake, url = backend
    endpoint = _direct(f"{url}/v1/chat/completions", model="exact-body")
    endpoint.bind(transport=transport)
    answer = await endpoint.submit_task(_chat_envelope("exact-body"))
    assert answer.error_code is None and answer.error_message is None
    assert answer.result is not None and answer.result.encode() == EXACT_BODY
    seen = fake.requests[-1]
    assert seen.header("authorization") == f"Bearer {SECRET}"
    assert seen.path == "/v1/chat/completions"
    assert seen.json() == _chat_envelope("exact-body")["model_params"]


@pytest.mark.parametrize(
    ("data", "path"),
    [
        (_chat_envelope("Llama-Test-8B"), "/v1/chat/completions"),
        (
            {
                "model_params": {"model": "Llama-Test-8B", "prompt": "once upon"},
                "openai_endpoint": "completions",
                "request_id": "r",
            },
            "/v1/completions",
        ),
        (
            {
                "model_params": {"model": "Llama-Test-8B", "input": ["a", "b"]},
                "openai_endpoint": "embeddings",
                "request_id": "r",
            },
            "/v1/embeddings",
        ),
        ({"model": "Llama-Test-8B", "input": "flat body"}, "/v1/embeddings"),
        (
            {"model": "Llama-Test-8B", "messages": [{"role": "user", "content": "x"}]},
            "/v1/chat/completions",
        ),
    ],
    ids=["envelope-chat", "envelope-completions", "envelope-embeddings", "flat-input", "flat-chat"],
)
async def test_direct_api_routes_envelope_and_flat_bodies(
    backend: tuple[FakeOpenAI, str], transport: HttpxTransport, data: dict[str, Any], path: str
) -> None:
    fake, url = backend
    endpoint = _direct(f"{url}/v1/chat/completions")
    endpoint.bind(transport=transport)
    answer = await endpoint.submit_task(data)
    assert answer.error_message is None, answer.error_message
    assert json.loads(answer.result or "")["object"] in {
        "chat.completion",
        "text_completion",
        "list",
    }
    seen = fake.requests[-1]
    assert seen.path == path
    assert seen.json() == data.get("model_params", data)


async def test_direct_api_passes_a_backend_4xx_through(
    backend: tuple[FakeOpenAI, str], transport: HttpxTransport
) -> None:
    _, url = backend
    endpoint = _direct(f"{url}/v1/chat/completions")
    endpoint.bind(transport=transport)
    for stream in (False, True):
        if stream:
            answer: Any = await endpoint.submit_streaming_task(
                _chat_envelope("reject-400", stream=True), "log-1"
            )
            assert answer.response is None
        else:
            answer = await endpoint.submit_task(_chat_envelope("reject-400"))
        assert answer.error_code == 400
        error = json.loads(answer.error_message)["error"]
        assert (error["param"], error["code"]) == ("temperature", "invalid_value")


async def test_direct_api_failures_carry_status_and_never_the_url_or_key(
    backend: tuple[FakeOpenAI, str], transport: HttpxTransport, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _, url = backend
    refused_url = _closed_port_url()
    cases = [
        # (endpoint, model, expected status, phrase)
        (_direct(f"{url}/v1/chat/completions"), "fail-500", 500, SECRET_DETAIL),
        (_direct(f"{url}/v1/chat/completions", timeout=0.5), "slow", 504, "timed out after 0.5s"),
        (_direct(f"{refused_url}/v1/chat/completions"), "Llama-Test-8B", 502, "could not connect"),
    ]
    seen: list[str] = []
    for endpoint, model, status, phrase in cases:
        endpoint.bind(transport=transport)
        whole = await endpoint.submit_task(_chat_envelope(model))
        streamed = await endpoint.submit_streaming_task(_chat_envelope(model, stream=True), "l")
        for answer in (whole, streamed):
            assert answer.error_code == status
            assert phrase in (answer.error_message or "")
            seen += [repr(answer), str(answer), answer.error_message or ""]
        # The operator's own config may show the URL, never the key.
        for text in (repr(endpoint), repr(endpoint.config), str(endpoint.config.model_dump())):
            assert SECRET not in text
    for text in seen:
        _assert_no_leaks(text, url)
        _assert_no_leaks(text, refused_url)
    assert SECRET not in caplog.text


async def test_direct_api_without_the_key_sends_no_authorization(
    backend: tuple[FakeOpenAI, str], transport: HttpxTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, url = backend
    monkeypatch.delenv(KEY_ENV)
    endpoint = _direct(f"{url}/v1")
    endpoint.bind(transport=transport)
    answer = await endpoint.submit_task(_chat_envelope("Llama-Test-8B"))
    assert answer.error_code == 401
    assert fake.requests[-1].header("authorization") is None


async def test_set_api_url_redirects_later_calls(
    backend: tuple[FakeOpenAI, str], transport: HttpxTransport
) -> None:
    fake, url = backend
    endpoint = _direct(f"{_closed_port_url()}/v1/chat/completions")
    endpoint.bind(transport=transport)
    endpoint.set_api_url(f"{url}/v1/chat/completions")
    answer = await endpoint.submit_task(_chat_envelope("Llama-Test-8B"))
    assert answer.error_message is None and len(fake.requests) == 1


async def test_a_call_s_url_and_key_follow_set_api_url_and_bind_after_calls() -> None:
    """The URL and headers kept per kind of call are made anew when what they came from
    changes: another URL, or other secrets handed in at bind."""
    answer = BackendResponse(status=200, headers=(("content-type", "application/json"),))
    recording = FunctionTransport(lambda request: answer)
    endpoint = _direct("http://one.invalid/v1/chat/completions")
    endpoint.bind(transport=recording, secrets={KEY_ENV: "sk-one"})
    for _ in range(2):
        await endpoint.submit_task(_chat_envelope("Llama-Test-8B"))
    endpoint.set_api_url("http://two.invalid/v1")
    await endpoint.submit_task(_chat_envelope("Llama-Test-8B"))
    endpoint.bind(transport=recording, secrets={KEY_ENV: "sk-two"})
    await endpoint.submit_task(_chat_envelope("Llama-Test-8B"))
    endpoint.bind(transport=recording, secrets={})
    await endpoint.submit_task({**_chat_envelope("Llama-Test-8B"), "request_id": None})
    heard = [(r.url, dict(r.headers)) for r in recording.requests]
    sent = [(url, h.get("authorization"), h.get("x-request-id")) for url, h in heard]
    assert sent == [
        ("http://one.invalid/v1/chat/completions", "Bearer sk-one", "r-1"),
        ("http://one.invalid/v1/chat/completions", "Bearer sk-one", "r-1"),
        ("http://two.invalid/v1/chat/completions", "Bearer sk-one", "r-1"),
        ("http://two.invalid/v1/chat/completions", "Bearer sk-two", "r-1"),
        ("http://two.invalid/v1/chat/completions", None, None),
    ]
    assert [name for name, _ in recording.requests[0].headers] == [
        "content-type",
        "accept",
        "authorization",
        "x-request-id",
    ]


async def test_direct_api_streams_chunks_and_closes(
    backend: tuple[FakeOpenAI, str], transport: HttpxTransport
) -> None:
    fake, url = backend
    endpoint = _direct(f"{url}/v1/chat/completions")
    endpoint.bind(transport=transport)
    answer = await endpoint.submit_streaming_task(
        _chat_envelope("Llama-Test-8B", stream=True), "log-7"
    )
    assert answer.error_code is None and answer.task_id == "log-7"
    response = answer.response
    assert isinstance(response, StreamingResponse)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = [chunk async for chunk in response.content]
    await response.aclose()
    await response.aclose()
    assert len(chunks) > 2 and chunks[-1] == b"data: [DONE]\n\n"
    assert fake.requests[-1].header("accept") == "text/event-stream"
    assert fake.requests[-1].json()["stream"] is True


async def test_closing_a_direct_api_stream_early_reaches_the_backend(
    backend: tuple[FakeOpenAI, str], transport: HttpxTransport
) -> None:
    fake, url = backend
    endpoint = _direct(f"{url}/v1/chat/completions")
    endpoint.bind(transport=transport)
    answer = await endpoint.submit_streaming_task(_chat_envelope("hang-stream", stream=True), "l")
    assert isinstance(answer.response, StreamingResponse)
    first = await anext(aiter(answer.response.content))
    assert isinstance(first, bytes) and first.startswith(b"data: ")
    await answer.response.aclose()
    assert await anyio.to_thread.run_sync(fake.stream_cancelled.wait, 10.0)


# -- endpoint status from cluster adaptors ----------------------------------------------------


class _FixedCluster(BaseCluster):
    """A cluster whose report is given, to reach the queued and failing branches."""

    def __init__(self, answer: GetJobsResponse | Exception) -> None:
        super().__init__("1", "fixed", "x.Y", ["vllm"], ["chat/completions"])
        self.answer = answer

    async def get_jobs(self) -> GetJobsResponse:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def _job(model: str) -> JobInfo:
    return JobInfo(Models=model, Framework="vllm", Cluster="fixed")


@pytest.mark.parametrize(
    ("cluster", "model", "status", "code", "phrase"),
    [
        (None, "m", "unknown", None, None),
        (
            _FixedCluster(GetJobsResponse(jobs=Jobs(running=[_job("M")]))),
            "m",
            "running",
            None,
            None,
        ),
        (
            _FixedCluster(GetJobsResponse(jobs=Jobs(queued=[_job("m")]))),
            "m",
            "queued",
            503,
            "queued",
        ),
        (
            _FixedCluster(GetJobsResponse(jobs=Jobs(stopped=[_job("m")]))),
            "m",
            "stopped",
            503,
            "model m is not running on cluster fixed",
        ),
        (
            _FixedCluster(GetJobsResponse(error_message="down", error_code=500)),
            "m",
            None,
            503,
            "unavailable",
        ),
        (_FixedCluster(RuntimeError("boom")), "m", None, 503, "unavailable"),
    ],
    ids=["unbound", "running-any-case", "queued", "stopped", "jobs-error", "jobs-raise"],
)
async def test_endpoint_status_from_a_job_report(
    cluster: BaseCluster | None,
    model: str,
    status: str | None,
    code: int | None,
    phrase: str | None,
) -> None:
    endpoint = DemoEndpoint("1", "s", "fixed", "vllm", model, "x.Y")
    if cluster is not None:
        endpoint.bind(transport=HttpxTransport(), cluster=cluster)
    answer = await endpoint.get_endpoint_status()
    assert (answer.status, answer.error_code) == (status, code)
    if phrase is not None:
        assert phrase.lower() in (answer.error_message or "").lower()


async def test_openai_compatible_cluster_reports_listed_models(
    backend: tuple[FakeOpenAI, str], transport: HttpxTransport
) -> None:
    fake, url = backend
    cluster = _openai_cluster(f"{url}/v1/chat/completions")
    cluster.bind(transport=transport)
    answer = await cluster.get_jobs()
    assert answer.jobs is not None and answer.error_code is None
    jobs = answer.jobs.model_dump()
    assert [j["Models"] for j in jobs["running"]] == ["Llama-Test-8B", "other-model"]
    assert jobs["running"][0]["Model Status"] == "running"
    assert jobs["running"][0]["Framework"] == "vllm"
    assert jobs["cluster_status"] == {
        "cluster": "test",
        "total_models": 2,
        "live_models": 2,
        "stopped_models": 0,
    }
    assert (fake.requests[-1].method, fake.requests[-1].path) == ("GET", "/v1/models")
    assert fake.requests[-1].header("authorization") == f"Bearer {SECRET}"

    for model, status, code in [("llama-test-8b", "running", None), ("absent", "stopped", 503)]:
        endpoint = _direct(f"{url}/v1", model=model)
        endpoint.bind(transport=transport, cluster=cluster)
        checked = await endpoint.get_endpoint_status()
        assert (checked.status, checked.error_code) == (status, code)


def _malformed_models_app() -> Quart:
    app = Quart("malformed")

    @app.get("/v1/models")
    async def models() -> tuple[str, int]:
        return '{"data": "not a list"}', 200

    return app


async def test_openai_compatible_cluster_failures(
    transport: HttpxTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    refused_url = _closed_port_url()
    down = _openai_cluster(f"{refused_url}/v1")
    down.bind(transport=transport)
    answer = await down.get_jobs()
    assert (answer.jobs, answer.error_code) == (None, 503)
    _assert_no_leaks(answer.error_message or "", refused_url)

    endpoint = _direct(f"{refused_url}/v1")
    endpoint.bind(transport=transport, cluster=down)
    status = await endpoint.get_endpoint_status()
    assert status.error_code == 503 and "unavailable" in (status.error_message or "")

    with serve_app(_malformed_models_app()) as url:
        malformed = _openai_cluster(f"{url}/v1")
        malformed.bind(transport=transport)
        answer = await malformed.get_jobs()
    assert (answer.jobs, answer.error_code) == (None, 502)
    _assert_no_leaks(answer.error_message or "", url)


async def test_demo_cluster_reports_its_models() -> None:
    cluster = DemoCluster(
        "1", "local", "x.Y", ["demo"], ["chat/completions"], config={"models": ["demo-a", "demo-b"]}
    )
    answer = await cluster.get_jobs()
    assert answer.jobs is not None
    assert [j.Models for j in answer.jobs.running] == ["demo-a", "demo-b"]
    assert answer.jobs.model_dump()["running"][1]["Model Status"] == "running"
    assert answer.jobs.cluster_status["live_models"] == 2
    for model, code in [("demo-a", None), ("DEMO-B", None), ("demo-c", 503)]:
        endpoint = DemoEndpoint("1", "s", "local", "demo", model, "x.Y")
        endpoint.bind(transport=HttpxTransport(), cluster=cluster)
        assert (await endpoint.get_endpoint_status()).error_code == code


# -- the demo model ---------------------------------------------------------------------------


def _demo() -> DemoEndpoint:
    return DemoEndpoint("1", "local-demo-demo-model", "local", "demo", "demo-model", "x.Y")


def _events(chunks: Sequence[bytes | str]) -> list[Any]:
    assert all(isinstance(c, bytes) for c in chunks)
    text = b"".join(c.encode() if isinstance(c, str) else c for c in chunks).decode()
    assert text.endswith("data: [DONE]\n\n")
    events = [e.removeprefix("data: ") for e in text.split("\n\n") if e]
    assert all(e.startswith("{") for e in events[:-1]) and events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


@pytest.mark.parametrize(
    "content",
    ["What is 2 + 2?", [{"type": "text", "text": "What is"}, {"type": "text", "text": "2 + 2?"}]],
    ids=["string", "parts"],
)
async def test_demo_chat_is_a_valid_chat_completion(content: Any) -> None:
    body = {
        "model": "asked-model",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": content},
        ],
    }
    answer = await _demo().submit_task(
        {"model_params": body, "openai_endpoint": "chat/completions"}
    )
    parsed = ChatCompletion.model_validate_json(answer.result or "")
    assert parsed.object == "chat.completion" and parsed.model == "asked-model"
    reply = parsed.choices[0].message.content or ""
    assert reply == "Hello from the demo model! You said: What is 2 + 2?"
    assert parsed.choices[0].finish_reason == "stop"
    assert parsed.usage is not None
    assert (parsed.usage.prompt_tokens, parsed.usage.completion_tokens) == (
        2 + 5,
        len(reply.split()),
    )


async def test_demo_honours_max_tokens() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    parsed = ChatCompletion.model_validate_json((await _demo().submit_task(body)).result or "")
    assert parsed.choices[0].message.content == "Hello from the"
    assert parsed.choices[0].finish_reason == "length"


@pytest.mark.parametrize("prompt", ["Once upon", ["Once upon", "a time"], [1, 2, 3], [[1, 2], [3]]])
async def test_demo_completion_is_a_valid_completion(prompt: Any) -> None:
    body = {"model": "m", "prompt": prompt}
    answer = await _demo().submit_task({"model_params": body, "openai_endpoint": "completions"})
    parsed = ot.Completion.model_validate_json(answer.result or "")
    assert parsed.object == "text_completion"
    count = len(prompt) if isinstance(prompt, list) and not isinstance(prompt[0], int) else 1
    assert [c.index for c in parsed.choices] == list(range(count))
    assert all(c.text.startswith("Hello from the demo model!") for c in parsed.choices)


@pytest.mark.parametrize(
    ("inputs", "count"),
    [("one text", 1), (["a", "b", "c"], 3), ([5, 6, 7], 1), ([[5, 6], [7]], 2)],
)
@pytest.mark.parametrize("dimensions", [None, 3, 64])
async def test_demo_embeddings_are_deterministic_unit_vectors(
    inputs: Any, count: int, dimensions: int | None
) -> None:
    body: dict[str, Any] = {"model": "m", "input": inputs}
    if dimensions is not None:
        body["dimensions"] = dimensions
    data = {"model_params": body, "openai_endpoint": "embeddings"}
    first = ot.CreateEmbeddingResponse.model_validate_json(
        (await _demo().submit_task(data)).result or ""
    )
    again = ot.CreateEmbeddingResponse.model_validate_json(
        (await _demo().submit_task(data)).result or ""
    )
    assert first.data == again.data
    assert len(first.data) == count
    for item in first.data:
        assert len(item.embedding) == (dimensions or 16)
        assert abs(sum(v * v for v in item.embedding) - 1.0) < 1e-9
    if count > 1:
        assert first.data[0].embedding != first.data[1].embedding


async def test_demo_embeddings_in_base64_are_little_endian_float32() -> None:
    body = {"model": "m", "input": ["x", "y"], "dimensions": 8}
    floats = json.loads((await _demo().submit_task(body)).result or "")
    encoded = json.loads(
        (await _demo().submit_task({**body, "encoding_format": "base64"})).result or ""
    )
    for plain, packed in zip(floats["data"], encoded["data"], strict=True):
        decoded = struct.unpack("<8f", base64.b64decode(packed["embedding"]))
        assert decoded == pytest.approx(plain["embedding"], abs=1e-6)
        ot.CreateEmbeddingResponse.model_validate(
            {**encoded, "data": [{**packed, "embedding": list(decoded)}]}
        )


@pytest.mark.parametrize(
    ("data", "param"),
    [
        ({"model": "m", "input": []}, "input"),
        ({"model": "m", "input": "x", "dimensions": 0}, "dimensions"),
        ({"model": "m", "input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"model": "m", "prompt": {"no": 1}}, "prompt"),
        (
            {
                "model_params": {"model": "m", "messages": "hi"},
                "openai_endpoint": "chat/completions",
            },
            "messages",
        ),
        ({"model": "m"}, None),
    ],
)
async def test_demo_refuses_what_it_cannot_answer_in_openai_shape(
    data: dict[str, Any], param: str | None
) -> None:
    answer = await _demo().submit_task(data)
    assert answer.result is None and answer.error_code == 400
    error = json.loads(answer.error_message or "")["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param


@pytest.mark.parametrize("include_usage", [False, True])
async def test_demo_chat_stream_is_valid_chunks(include_usage: bool) -> None:
    body: dict[str, Any] = {
        "model": "m",
        "stream": True,
        "messages": [{"role": "user", "content": "tell me a story"}],
    }
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    answer = await _demo().submit_streaming_task(
        {"model_params": body, "openai_endpoint": "chat/completions"}, "log-3"
    )
    assert isinstance(answer.response, StreamingResponse) and answer.task_id == "log-3"
    chunks = [c async for c in answer.response.content]
    await answer.response.aclose()
    parsed = [ChatCompletionChunk.model_validate(e) for e in _events(chunks)]
    assert parsed[0].choices[0].delta.role == "assistant"
    with_choices = [p for p in parsed if p.choices]
    assert with_choices[-1].choices[0].finish_reason == "stop"
    assert all(p.choices[0].finish_reason is None for p in with_choices[:-1])
    text = "".join(p.choices[0].delta.content or "" for p in with_choices)
    assert text == "Hello from the demo model! You said: tell me a story"
    assert len(with_choices) == len(text.split()) + 2  # role chunk + one per word + finish
    usage = [p.usage for p in parsed if p.usage is not None]
    if include_usage:
        assert parsed[-1].choices == [] and usage == [parsed[-1].usage]
        assert usage[0].completion_tokens == len(text.split())
    else:
        assert usage == []


@pytest.mark.parametrize("include_usage", [False, True])
async def test_demo_completion_stream_is_valid_chunks(include_usage: bool) -> None:
    body: dict[str, Any] = {"model": "m", "stream": True, "prompt": "Once upon"}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    answer = await _demo().submit_streaming_task(body, "l")
    assert isinstance(answer.response, StreamingResponse)
    events = _events([c async for c in answer.response.content])
    text = ""
    for event in events:
        assert event["object"] == "text_completion"
        # The OpenAI spec types finish_reason as required although streams send null
        # until the end (the openai client does not validate chunks); check the rest.
        choices = [{**c, "finish_reason": c["finish_reason"] or "stop"} for c in event["choices"]]
        ot.Completion.model_validate({**event, "choices": choices})
        text += "".join(c["text"] for c in event["choices"])
    finishes = [c["finish_reason"] for e in events for c in e["choices"]]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert text == "Hello from the demo model! You said: Once upon"
    assert ("usage" in events[-1]) is include_usage


async def test_demo_does_not_stream_embeddings_and_uses_no_transport() -> None:
    demo = _demo()  # never bound: any transport use would raise
    answer = await demo.submit_streaming_task({"model": "m", "input": "x", "stream": True}, "l")
    assert answer.response is None and answer.error_code == 400


# -- the loader -------------------------------------------------------------------------------


def _endpoint_record(
    adapter: str, config: dict[str, Any] | None = None, **fields: Any
) -> EndpointRecord:
    values: dict[str, Any] = {
        "id": 12,
        "endpoint_slug": "test-api-m",
        "cluster": "test",
        "framework": "api",
        "model": "m",
        "endpoint_adapter": adapter,
        "allowed_globus_groups": ["g"],
        "config": config or {},
    }
    return EndpointRecord(**{**values, **fields})


@pytest.mark.parametrize(
    ("adapter", "config", "field", "phrase"),
    [
        ("NoDotsHere", {}, "endpoint_adapter", "dotted path"),
        ("adaptors..DemoEndpoint", {}, "endpoint_adapter", "dotted path"),
        ("no_such_package_xyz.module.Class", {}, "endpoint_adapter", "No module named"),
        ("tests.support.broken_adaptor.Broken", {}, "endpoint_adapter", "broken on purpose"),
        ("adaptors.endpoints.demo.Missing", {}, "endpoint_adapter", "no attribute 'Missing'"),
        (
            "adaptors.clusters.demo.DemoCluster",
            {},
            "endpoint_adapter",
            "not a subclass of BaseEndpoint",
        ),
        ("adaptors.endpoints.endpoint.unpack_task_data", {}, "endpoint_adapter", "not a subclass"),
        ("adaptors.endpoints.endpoint.BaseEndpoint", {}, "endpoint_adapter", "abstract"),
        (
            "resource_server_async.endpoints.direct_api.DirectAPIEndpoint",
            {"api_key_env_name": "K"},
            "config.api_url",
            "Field required",
        ),
        (
            "adaptors.endpoints.direct_api.DirectAPIEndpoint",
            {"api_url": "ftp://h/v1", "api_key_env_name": "K"},
            "config.api_url",
            "http",
        ),
        (
            "adaptors.endpoints.direct_api.DirectAPIEndpoint",
            {"api_url": "https://h/v1", "api_key_env_name": "K", "bogus": 1},
            "config.bogus",
            "Extra inputs are not permitted",
        ),
        (
            "adaptors.endpoints.direct_api.DirectAPIEndpoint",
            {"api_url": "https://h/v1", "api_key_env_name": "K", "api_request_timeout": -1},
            "config.api_request_timeout",
            "greater than 0",
        ),
    ],
)
def test_loader_errors_name_file_entry_and_field(
    adapter: str, config: dict[str, Any], field: str, phrase: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        build_endpoint(_endpoint_record(adapter, config), file=ENDPOINTS_FILE)
    error = caught.value
    assert (error.file, error.entry, error.field) == (ENDPOINTS_FILE, "12", field)
    message = str(error)
    assert ENDPOINTS_FILE in message and "pk=12" in message and f"'{field}'" in message
    assert phrase in message


def test_loader_reports_cluster_constructor_errors() -> None:
    record = ClusterRecord(
        id=3,
        cluster_name="local",
        cluster_adapter="adaptors.clusters.demo.DemoCluster",
        config={"models": "not-a-list"},
    )
    with pytest.raises(ConfigurationError) as caught:
        build_cluster(record, file="fixtures/clusters.json")
    assert caught.value.field == "config" and "config.models" in str(caught.value)


def test_both_import_paths_give_the_same_classes() -> None:
    import resource_server_async.clusters.cluster as rsa_cluster
    import resource_server_async.clusters.demo as rsa_demo_cluster
    import resource_server_async.clusters.openai_compatible as rsa_openai
    import resource_server_async.endpoints.demo as rsa_demo
    import resource_server_async.endpoints.direct_api as rsa_direct
    import resource_server_async.endpoints.endpoint as rsa_endpoint

    pairs = [
        (rsa_endpoint.BaseEndpoint, BaseEndpoint),
        (rsa_endpoint.StreamingResponse, StreamingResponse),
        (rsa_direct.DirectAPIEndpoint, DirectAPIEndpoint),
        (rsa_demo.DemoEndpoint, DemoEndpoint),
        (rsa_cluster.BaseCluster, BaseCluster),
        (rsa_cluster.GetJobsResponse, GetJobsResponse),
        (rsa_openai.OpenAICompatibleCluster, OpenAICompatibleCluster),
        (rsa_demo_cluster.DemoCluster, DemoCluster),
    ]
    for seed_name, ours in pairs:
        assert seed_name is ours
    for module in (rsa_endpoint, rsa_direct, rsa_demo, rsa_cluster, rsa_openai, rsa_demo_cluster):
        assert all(hasattr(module, name) for name in module.__all__)
    for path in (
        "resource_server_async.endpoints.direct_api.DirectAPIEndpoint",
        "adaptors.endpoints.direct_api.DirectAPIEndpoint",
    ):
        cls = import_adaptor(
            path, BaseEndpoint, file=ENDPOINTS_FILE, entry=1, field="endpoint_adapter"
        )
        assert cls is DirectAPIEndpoint


def test_loader_builds_with_keywords_and_plain_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    record = _endpoint_record(
        "resource_server_async.endpoints.direct_api.DirectAPIEndpoint",
        {"api_url": "https://h/v1/chat/completions", "api_key_env_name": KEY_ENV},
        allowed_domains=["example.org"],
    )
    endpoint = build_endpoint(record, file=ENDPOINTS_FILE)
    assert type(endpoint) is DirectAPIEndpoint
    assert endpoint.config.api_request_timeout == 120
    assert (endpoint.id, endpoint.allowed_globus_groups, endpoint.allowed_domains) == (
        "12",
        ["g"],
        ["example.org"],
    )
    assert SECRET not in repr(endpoint) and SECRET not in repr(endpoint.config)

    custom = build_endpoint(
        _endpoint_record("tests.guide_adaptors.base_endpoint.CustomEndpoint", {"answer": 42}),
        file=ENDPOINTS_FILE,
    )
    assert custom.config == {"answer": 42}  # type: ignore[attr-defined]
    assert type(custom.config) is dict  # type: ignore[attr-defined]

    cluster = build_cluster(
        ClusterRecord(
            id=4,
            cluster_name="metis",
            cluster_adapter="tests.guide_adaptors.custom_cluster.CustomCluster",
            frameworks=["api"],
            openai_endpoints=["chat/completions", "completions"],
            config={"queued": ["Queued-Model"]},
        ),
        file="fixtures/clusters.json",
    )
    assert (cluster.cluster_name, cluster.frameworks) == ("metis", ["api"])
    assert cluster.config == {"queued": ["Queued-Model"]}  # type: ignore[attr-defined]


async def test_the_guides_extension_adaptor_runs_unchanged(
    backend: tuple[FakeOpenAI, str], transport: HttpxTransport
) -> None:
    fake, url = backend
    cluster = build_cluster(
        ClusterRecord(
            id=4,
            cluster_name="metis",
            cluster_adapter="tests.guide_adaptors.custom_cluster.CustomCluster",
            config={"queued": ["Queued-Model"]},
        ),
        file="fixtures/clusters.json",
    )
    for model, expected in [("gpt-oss-120b-131072", None), ("Queued-Model", 503), ("Unknown", 503)]:
        endpoint = build_endpoint(
            _endpoint_record(
                "tests.guide_adaptors.custom_endpoint.CustomEndpoint",
                {"api_url": f"{url}/v1/chat/completions", "api_key_env_name": KEY_ENV},
                model=model,
            ),
            file=ENDPOINTS_FILE,
        )
        endpoint.bind(transport=transport, cluster=cluster)
        before = len(fake.requests)
        answer = await endpoint.submit_task(_chat_envelope(model, stream=True))
        assert answer.error_code == expected
        if expected is None:
            sent = fake.requests[-1].json()
            assert sent["stream"] is False and sent["model"] == model
        else:
            assert len(fake.requests) == before
