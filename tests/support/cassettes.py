"""Recording gateway-level cassettes for tests, and the small ones kept in `tests/cassettes`.

`python -m tests.support.cassettes` regenerates `tests/cassettes/*.jsonl`: one cassette
recorded through a `DirectAPIEndpoint` against `FakeOpenAI` (a real local server), one
against the built-in demo model (only its deterministic answers: the demo stamps chat
and completion answers with a fresh id and time, so those could never replay equal).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from core import Identity, OpenAIRoute, Rule
from frontends.gateway import GatewayRequest, GatewayResponse
from frontends.identity import AccessRefused, CredentialsRejected
from frontends.replay import ConversationRecorder
from tests.support.fake_openai import running_fake_openai
from tests.support.gateway_server import REPO_FIXTURES, write_fixtures
from transports.httpx_transport import HttpxTransport

__all__ = [
    "BACKEND_KEY",
    "CASSETTES",
    "CLIENT_TOKEN",
    "DEMO_REQUESTS",
    "EXPIRED_TOKEN",
    "FAKE_MODELS",
    "FAKE_REQUESTS",
    "GO_VCR",
    "GO_VCR_COUNT",
    "GO_VCR_DIR",
    "KEY_ENV",
    "Tokens",
    "drain",
    "fake_backend_fixtures",
    "record",
]

CASSETTES = Path(__file__).resolve().parents[1] / "cassettes"
# OpenAI's own recorded answers (envoyproxy/ai-gateway, Apache-2.0; see its NOTICE).
GO_VCR_DIR = CASSETTES / "openai-go-vcr"
GO_VCR_COUNT = 26


def _go_vcr() -> list[Path]:
    """The recorded cassettes, checked when the tests are collected: a missing folder
    would parametrise nothing and skip silently, so it stops the run instead."""
    found = sorted(GO_VCR_DIR.glob("*.yaml"))
    if len(found) < GO_VCR_COUNT:
        raise RuntimeError(
            f"expected {GO_VCR_COUNT} go-vcr cassettes in {GO_VCR_DIR}, found {len(found)}: "
            "the test data is missing from this checkout"
        )
    return found


GO_VCR = _go_vcr()
BACKEND_KEY = "sk-backend-REPLAY-SECRET-4b1d"
KEY_ENV = "IGW_TEST_REPLAY_BACKEND_KEY"
CLIENT_TOKEN = "igw-test-replay-client-0123456789"
EXPIRED_TOKEN = "igw-test-replay-expired-012345678"
REFUSED_TOKEN = "igw-test-replay-refused-012345678"
FAKE_MODELS = ("fake-model", "reject-400", "fail-500")


class Tokens:
    """The smallest identity provider: one known token, one expired, one refused by rule."""

    async def resolve(self, credentials: str) -> Identity | None:
        if credentials == CLIENT_TOKEN:
            return Identity(username="alice@example.org", groups=["g-physics"])
        if credentials == EXPIRED_TOKEN:
            raise CredentialsRejected("expired")
        if credentials == REFUSED_TOKEN:
            raise AccessRefused(Rule.DOMAIN)
        return None


def _chat(model: str, text: str, **extra: Any) -> bytes:
    return json.dumps(
        {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    ).encode()


# (route, body, authorization): what the recorded clients send.
Call = tuple[OpenAIRoute, bytes, str | None]
AUTH = f"Bearer {CLIENT_TOKEN}"
FAKE_REQUESTS: Sequence[Call] = (
    (OpenAIRoute.CHAT_COMPLETIONS, _chat("fake-model", "Hello there"), AUTH),
    (OpenAIRoute.CHAT_COMPLETIONS, _chat("fake-model", "Stream me", stream=True), AUTH),
    (OpenAIRoute.COMPLETIONS, b'{"model": "fake-model", "prompt": "Once upon"}', AUTH),
    (OpenAIRoute.EMBEDDINGS, b'{"model": "fake-model", "input": ["a", "b"]}', AUTH),
    (OpenAIRoute.CHAT_COMPLETIONS, _chat("reject-400", "too hot", temperature=9), AUTH),
    (OpenAIRoute.CHAT_COMPLETIONS, _chat("fail-500", "boom"), AUTH),
    (OpenAIRoute.CHAT_COMPLETIONS, _chat("fake-model", "no token"), None),
)
DEMO_REQUESTS: Sequence[Call] = (
    (OpenAIRoute.EMBEDDINGS, b'{"model": "demo-model", "input": "hello"}', AUTH),
    (OpenAIRoute.CHAT_COMPLETIONS, b'{"model": "demo-model"}', AUTH),
    (OpenAIRoute.CHAT_COMPLETIONS, _chat("no-such-model", "hi"), AUTH),
    (OpenAIRoute.CHAT_COMPLETIONS, _chat("demo-model", "hi"), "Bearer wrong-token-0000"),
    (OpenAIRoute.CHAT_COMPLETIONS, _chat("demo-model", "hi"), f"Bearer {EXPIRED_TOKEN}"),
    (OpenAIRoute.CHAT_COMPLETIONS, _chat("demo-model", "hi"), f"Bearer {REFUSED_TOKEN}"),
)


def fake_backend_fixtures(folder: Path, backend_url: str) -> Path:
    cluster = {
        "cluster_name": "fake",
        "frameworks": ["api"],
        "openai_endpoints": ["chat/completions", "completions", "embeddings"],
        "cluster_adapter": "adaptors.clusters.openai_compatible.OpenAICompatibleCluster",
        "allowed_globus_groups": [],
        "allowed_domains": [],
        "config": {"api_url": f"{backend_url}/v1", "api_key_env_name": KEY_ENV},
    }
    endpoints = [
        {
            "endpoint_slug": f"fake-api-{model}",
            "cluster": "fake",
            "framework": "api",
            "model": model,
            "endpoint_adapter": "adaptors.endpoints.direct_api.DirectAPIEndpoint",
            "allowed_globus_groups": [],
            "allowed_domains": [],
            "config": {
                "api_url": f"{backend_url}/v1/chat/completions",
                "api_key_env_name": KEY_ENV,
            },
        }
        for model in FAKE_MODELS
    ]
    return write_fixtures(folder, [cluster], endpoints)


async def drain(response: GatewayResponse) -> tuple[int, tuple[tuple[str, str], ...], list[bytes]]:
    """Status, headers and body (a stream: its events; a whole answer: one item)."""
    if response.stream is None:
        return response.status, response.headers, [response.body]
    events = []
    try:
        async for event in response.stream:
            events.append(event)
    finally:
        await response.stream.aclose()
    return response.status, response.headers, events


async def record(
    fixtures: Path, path: Path, calls: Sequence[Call]
) -> list[tuple[int, tuple[tuple[str, str], ...], list[bytes]]]:
    """Each call through a recording gateway over `fixtures`; the answers as drained."""
    recorder = ConversationRecorder.from_fixtures(
        fixtures, identity=Tokens(), transport=HttpxTransport(), path=path
    )
    answers = []
    try:
        for route, body, authorization in calls:
            response = await recorder.handle(
                GatewayRequest(
                    route=route,
                    body=body,
                    content_type="application/json",
                    authorization=authorization,
                )
            )
            answers.append(await drain(response))
    finally:
        await recorder.aclose()
    return answers


def main(tmp: Path) -> None:
    CASSETTES.mkdir(exist_ok=True)
    os.environ[KEY_ENV] = BACKEND_KEY
    with running_fake_openai(models=FAKE_MODELS, api_key=BACKEND_KEY) as (_, url):
        fixtures = fake_backend_fixtures(tmp / "fake", url)
        anyio.run(record, fixtures, CASSETTES / "fake-backend.jsonl", FAKE_REQUESTS)
    anyio.run(record, REPO_FIXTURES, CASSETTES / "demo.jsonl", DEMO_REQUESTS)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        main(Path(folder))
