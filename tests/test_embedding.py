"""The embedding API runs the full request path under asyncio and under trio:
validation, authorization, a DirectAPIEndpoint adaptor and a real HTTP transport."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import Identity
from frontends.embedding import FixedIdentity, open_gateway
from frontends.metrics import MetricsSink
from tests.support.fake_openai import FakeOpenAI, running_fake_openai
from tests.support.gateway_server import write_fixtures
from tests.test_metrics import samples, value

KEY_ENV = "IGW_EMBED_TEST_KEY"
AUTH = {"Authorization": "Bearer embedded"}
CHAT = {"model": "open-model", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def backend() -> Iterator[tuple[FakeOpenAI, str]]:
    os.environ[KEY_ENV] = "sk-embed-secret-123456"
    try:
        with running_fake_openai(models=["open-model", "physics-model"]) as running:
            yield running
    finally:
        os.environ.pop(KEY_ENV, None)


@pytest.fixture(scope="module")
def fixtures(backend: tuple[FakeOpenAI, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, url = backend
    cluster = {
        "cluster_name": "lab",
        "frameworks": ["vllm"],
        "openai_endpoints": ["chat/completions", "embeddings", "responses", "messages"],
        "cluster_adapter": "adaptors.clusters.openai_compatible.OpenAICompatibleCluster",
        "config": {"api_url": f"{url}/v1"},
    }
    endpoints = [
        {
            "endpoint_slug": f"lab-vllm-{model}",
            "cluster": "lab",
            "framework": "vllm",
            "model": model,
            "endpoint_adapter": "adaptors.endpoints.direct_api.DirectAPIEndpoint",
            "allowed_globus_groups": groups,
            "config": {"api_url": f"{url}/v1", "api_key_env_name": KEY_ENV},
        }
        for model, groups in (("open-model", []), ("physics-model", ["g-physics"]))
    ]
    return write_fixtures(tmp_path_factory.mktemp("embed"), [cluster], endpoints)


def _me(*groups: str) -> FixedIdentity:
    return FixedIdentity(Identity(username="ada@example.org", groups=groups))


@pytest.mark.anyio
async def test_full_path_answers(fixtures: Path, backend: tuple[FakeOpenAI, str]) -> None:
    fake, _ = backend
    async with open_gateway(fixtures, identity=_me()) as gateway:
        reply = await gateway.request("chat/completions", CHAT, headers=AUTH)
        assert reply.status == 200
        assert reply.json()["choices"][0]["message"]["content"]
        embedded = await gateway.request(
            "/v1/embeddings", {"model": "open-model", "input": "x"}, headers=AUTH
        )
        assert embedded.status == 200
    assert fake.requests[-1].headers["authorization"] == "Bearer sk-embed-secret-123456"


@pytest.mark.anyio
async def test_streams_come_back_as_events(fixtures: Path) -> None:
    async with open_gateway(fixtures, identity=_me()) as gateway:
        reply = await gateway.request("chat/completions", {**CHAT, "stream": True}, headers=AUTH)
        events = [event async for event in reply.events()]
    assert events[-1] == "[DONE]"
    assert all(json.loads(e)["object"] == "chat.completion.chunk" for e in events[:-1])


@pytest.mark.anyio
async def test_rules_apply_to_embedders_too(
    fixtures: Path, backend: tuple[FakeOpenAI, str]
) -> None:
    fake, _ = backend
    before = len(fake.requests)
    physics = {**CHAT, "model": "physics-model"}
    async with open_gateway(fixtures, identity=_me()) as gateway:
        refused = await gateway.request("chat/completions", physics, headers=AUTH)
        unsupported = await gateway.request(
            "completions", {"model": "open-model", "prompt": "x"}, headers=AUTH
        )
        anonymous = await gateway.request("chat/completions", CHAT)
        invalid = await gateway.request("chat/completions", {"model": "open-model"}, headers=AUTH)
    assert (refused.status, refused.json()["error"]["code"]) == (403, "permission_denied")
    assert (
        unsupported.status == 400 and "chat/completions" in unsupported.json()["error"]["message"]
    )
    assert anonymous.status == 401
    assert (invalid.status, invalid.json()["error"]["param"]) == (400, "messages")
    assert len(fake.requests) == before, "no refused request may reach the backend"
    async with open_gateway(fixtures, identity=_me("g-physics")) as gateway:
        allowed = await gateway.request("chat/completions", physics, headers=AUTH)
    assert allowed.status == 200


@pytest.mark.anyio
async def test_unknown_operation_is_refused_before_anything_runs(fixtures: Path) -> None:
    async with open_gateway(fixtures, identity=_me()) as gateway:
        with pytest.raises(ValueError, match="audio/speech"):
            await gateway.request("audio/speech", CHAT, headers=AUTH)


@pytest.mark.anyio
async def test_an_embedder_speaks_both_other_apis(fixtures: Path) -> None:
    """`request("messages", ...)` reads the key from `x-api-key` as the web route does."""
    async with open_gateway(fixtures, identity=_me()) as gateway:
        answer = await gateway.request(
            "responses", {"model": "open-model", "input": "Hi"}, headers=AUTH
        )
        message = await gateway.request(
            "/v1/messages",
            {"model": "open-model", "max_tokens": 8, "messages": CHAT["messages"]},
            headers={"x-api-key": "anything", "anthropic-version": "2023-06-01"},
        )
        refused = await gateway.request("messages", {"model": "open-model", "messages": []})
    assert answer.status == 200 and answer.json()["object"] == "response"
    assert message.status == 200 and message.json()["type"] == "message"
    assert refused.status == 401 and refused.json()["error"]["type"] == "authentication_error"


@pytest.mark.anyio
async def test_an_embedder_counts_requests_and_open_streams(fixtures: Path) -> None:
    metrics = MetricsSink()

    def read(name: str, **labels: str) -> float:
        return value(samples(metrics.render()[0].decode()), name, **labels)

    async with open_gateway(fixtures, identity=_me(), metrics=metrics) as gateway:
        assert (await gateway.request("chat/completions", CHAT, headers=AUTH)).status == 200
        stream = await gateway.request("chat/completions", {**CHAT, "stream": True}, headers=AUTH)
        assert read("inference_gateway_active_streams") == 1
        events = stream.events()
        await events.__anext__()
        await events.aclose()  # leaves after the first event
        assert read("inference_gateway_active_streams") == 0
        finished = await gateway.request("chat/completions", {**CHAT, "stream": True}, headers=AUTH)
        assert [e async for e in finished.events()][-1] == "[DONE]"
        assert read("inference_gateway_active_streams") == 0
    requests = "inference_gateway_requests_total"
    labels = {"route": "chat/completions", "model": "open-model"}
    assert read(requests, **labels, status="200") == 2
    assert read(requests, **labels, status="499") == 1
    assert read("inference_gateway_time_to_first_token_seconds_count", **labels) == 2
