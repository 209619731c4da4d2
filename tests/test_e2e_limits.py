"""Client limits and honest answers through a real gateway server (issue 11).

A real Hypercorn serving the gateway, configured as `serve` configures it, in front of a
real local backend that answers some models dishonestly: a 200 without `choices`, a
stream with an event that is not JSON.  Every refusal is an OpenAI-shaped error with the
documented status (431 included, which Hypercorn alone answers with an empty body), and
nothing the client sent that the gateway refused ever reaches the backend.  `serve`
itself is checked on both loops for the header limit its settings name.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import openai
import pytest

from core import RequestLimits
from frontends.assembly import build_gateway
from frontends.identity import StaticKeys
from frontends.web import create_app
from frontends.web.limits import hypercorn_limits
from tests.support.gateway_server import ALICE, write_fixtures, write_tokens
from tests.support.servers import serve_app
from transports.httpx_transport import HttpxTransport

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
MAX_BODY = 2 * 1024 * 1024
MAX_HEADERS = 32 * 1024
MAX_MESSAGES = 8
MODELS = ("honest", "no-choices", "bad-event")
USER = {"role": "user", "content": "hi"}

CHUNK = b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'  # noqa: E501
DONE = b"data: [DONE]\n\n"
HONEST = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 0,
    "model": "honest",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi"},
            "finish_reason": "stop",
        }
    ],
}


class DishonestBackend:
    """An OpenAI backend as an ASGI app: `honest` answers as OpenAI does; `no-choices`
    answers 200 with a chat completion lacking `choices`; `bad-event` streams one good
    chunk, an event that is not JSON, another good chunk and `[DONE]`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bodies: list[bytes] = []

    @property
    def bodies(self) -> list[bytes]:
        with self._lock:
            return list(self._bodies)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].removeprefix("lifespan.")
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        with self._lock:
            self._bodies.append(body)
        request = json.loads(body)
        if request.get("stream"):
            events = [CHUNK, DONE]
            if request["model"] == "bad-event":
                events = [CHUNK, b"data: {this is not json}\n\n", CHUNK, DONE]
            await self._start(send, "text/event-stream")
            for event in events:
                await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        answer = (
            HONEST if request["model"] == "honest" else {"id": "x", "object": "chat.completion"}
        )
        await self._start(send, "application/json")
        await send({"type": "http.response.body", "body": json.dumps(answer).encode()})

    @staticmethod
    async def _start(send: Any, content_type: str) -> None:
        headers = [(b"content-type", content_type.encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})


@attrs.frozen
class World:
    url: str
    backend: DishonestBackend


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("limits")
    backend = DishonestBackend()
    with serve_app(backend) as backend_url:
        cluster = {
            "cluster_name": "local",
            "frameworks": ["api"],
            "openai_endpoints": ["chat/completions"],
            "cluster_adapter": "adaptors.clusters.openai_compatible.OpenAICompatibleCluster",
            "config": {"api_url": f"{backend_url}/v1"},
        }
        endpoints = [
            {
                "endpoint_slug": f"local-api-{model}",
                "cluster": "local",
                "framework": "api",
                "model": model,
                "endpoint_adapter": "adaptors.endpoints.direct_api.DirectAPIEndpoint",
                "config": {"api_url": f"{backend_url}/v1", "api_key_env_name": "UNSET_KEY"},
            }
            for model in MODELS
        ]
        gateway = build_gateway(
            write_fixtures(folder / "fixtures", [cluster], endpoints),
            identity=StaticKeys.from_file(write_tokens(folder)),
            transport=HttpxTransport(),
            request_limits=RequestLimits(max_messages=MAX_MESSAGES),
        )
        app = create_app(gateway, max_body_bytes=MAX_BODY, max_header_bytes=MAX_HEADERS)
        with serve_app(app, options=hypercorn_limits(MAX_HEADERS)) as url:
            yield World(url=url, backend=backend)


def post(world: World, body: Any, **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        f"{world.url}/v1/chat/completions",
        content=content,
        headers={"Authorization": f"Bearer {ALICE}", "Content-Type": "application/json", **headers},
        timeout=60,
    )


def openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    payload = response.json()
    assert set(payload) == {"error"} and set(payload["error"]) == {
        "message",
        "type",
        "param",
        "code",
    }
    error: dict[str, Any] = payload["error"]
    assert isinstance(error["message"], str) and error["message"]
    return error


class Untouched:
    """Asserts the backend received nothing while the block ran."""

    def __init__(self, world: World) -> None:
        self.backend = world.backend

    def __enter__(self) -> None:
        self.before = len(self.backend.bodies)

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            assert len(self.backend.bodies) == self.before, "a refused request reached the backend"


CHAT = {"model": "honest", "messages": [USER]}


def test_an_honest_request_is_answered(world: World) -> None:
    response = post(world, CHAT)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "Hi"


# -- limits ------------------------------------------------------------------------------


def test_headers_over_the_limit_get_an_openai_shaped_431(world: World) -> None:
    """Issue 11: a 64 KB header got Hypercorn's 431 with an empty body."""
    with Untouched(world):
        error = openai_error(post(world, CHAT, **{"X-Big": "a" * 65536}), 431)
    assert (error["type"], error["code"]) == (
        "invalid_request_error",
        "request_header_fields_too_large",
    )
    assert str(MAX_HEADERS) in error["message"]


def test_headers_under_the_limit_but_over_hypercorns_default_pass(world: World) -> None:
    """Hypercorn's own default (16 KiB) no longer decides: the gateway's limit does."""
    assert post(world, CHAT, **{"X-Big": "a" * 20_000}).status_code == 200


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_limit_gets_an_openai_shaped_413(world: World, chunked: bool) -> None:
    body = json.dumps({**CHAT, "pad": "x" * (MAX_BODY + 1)}).encode()
    content: Any = body
    if chunked:

        def pieces() -> Iterator[bytes]:
            for start in range(0, len(body), 65536):
                yield body[start : start + 65536]

        content = pieces()
    with Untouched(world):
        response = httpx.post(
            f"{world.url}/v1/chat/completions",
            content=content,
            headers={"Authorization": f"Bearer {ALICE}", "Content-Type": "application/json"},
            timeout=60,
        )
        error = openai_error(response, 413)
    assert (error["type"], error["code"]) == ("invalid_request_error", "request_entity_too_large")
    assert str(MAX_BODY) in error["message"]


def test_a_lone_surrogate_is_the_clients_400(world: World) -> None:
    """Issue 11: once a 502 'backend could not be reached'."""
    raw = b'{"model": "honest", "messages": [{"role": "user", "content": "\\ud800"}]}'
    with Untouched(world):
        error = openai_error(post(world, raw), 400)
    assert (error["param"], error["code"]) == ("messages[0].content", "invalid_encoding")


def test_json_nested_too_deep_is_a_400(world: World) -> None:
    deep: Any = "x"
    for _ in range(100):
        deep = [deep]
    with Untouched(world):
        error = openai_error(post(world, {**CHAT, "extra": deep}), 400)
    assert error["code"] == "json_too_deep" and error["param"].startswith("extra")


def test_too_many_messages_are_a_400(world: World) -> None:
    with Untouched(world):
        error = openai_error(post(world, {"model": "honest", "messages": [USER] * 9}), 400)
    assert (error["param"], error["code"]) == ("messages", "array_above_max_length")


def test_a_one_megabyte_model_name_is_echoed_as_a_short_prefix(world: World) -> None:
    """Issue 11: it was echoed whole in the 404."""
    model = "m" * (1 << 20)
    with Untouched(world):
        response = post(world, {"model": model, "messages": [USER]})
        error = openai_error(response, 404)
    assert error["code"] == "model_not_found"
    assert len(response.content) < 1000
    assert ("m" * 64 + "…") in error["message"] and ("m" * 65) not in error["message"]


# -- honest answers ------------------------------------------------------------------------


def test_a_200_without_choices_is_a_502(world: World) -> None:
    error = openai_error(post(world, {"model": "no-choices", "messages": [USER]}), 502)
    assert (error["type"], error["code"]) == ("api_error", "backend_invalid_response")
    with (
        openai.OpenAI(base_url=f"{world.url}/v1", api_key=ALICE, max_retries=0) as client,
        pytest.raises(openai.InternalServerError),
    ):
        client.chat.completions.create(model="no-choices", messages=[USER])


def test_an_event_that_is_not_json_ends_the_stream_with_an_error_event(world: World) -> None:
    with httpx.stream(
        "POST",
        f"{world.url}/v1/chat/completions",
        json={"model": "bad-event", "messages": [USER], "stream": True},
        headers={"Authorization": f"Bearer {ALICE}"},
        timeout=60,
    ) as response:
        assert response.status_code == 200
        sent = response.read()
    assert sent.startswith(CHUNK)
    assert b"this is not json" not in sent
    assert b"[DONE]" not in sent
    events = [e for e in re.split(rb"\n\n", sent) if e]
    assert len(events) == 2
    error = json.loads(events[-1].removeprefix(b"data: "))["error"]
    assert (error["type"], error["code"]) == ("api_error", "backend_invalid_response")


def test_the_official_client_raises_on_the_bad_event_after_the_good_chunk(world: World) -> None:
    seen: list[str | None] = []
    with (
        openai.OpenAI(base_url=f"{world.url}/v1", api_key=ALICE, max_retries=0) as client,
        pytest.raises(openai.APIError, match="not valid JSON"),
    ):
        for chunk in client.chat.completions.create(
            model="bad-event",
            messages=[USER],
            stream=True,
        ):
            seen.append(chunk.choices[0].delta.content)
    assert seen == ["Hi"]


def test_an_honest_stream_is_relayed_byte_for_byte(world: World) -> None:
    with httpx.stream(
        "POST",
        f"{world.url}/v1/chat/completions",
        json={"model": "honest", "messages": [USER], "stream": True},
        headers={"Authorization": f"Bearer {ALICE}"},
        timeout=60,
    ) as response:
        assert response.read() == CHUNK + DONE


# -- serve, on both loops, with the header limit from its settings ---------------------------


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_serve_answers_oversized_headers_with_an_openai_431(tmp_path: Path, loop: str) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("INFERENCE_GATEWAY_")},
        "PYTHONPATH": str(ROOT),
        "INFERENCE_GATEWAY_TOKENS_FILE": str(write_tokens(tmp_path)),
        "INFERENCE_GATEWAY_STATE_DIR": str(tmp_path / "state"),
        "INFERENCE_GATEWAY_MAX_HEADER_BYTES": "8192",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "frontends.cli", "serve", "--port", "0", "--loop", loop],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        found = re.search(r"on (http://\S+)/v1", process.stdout.readline())
        assert found, "serve did not print its address"
        url = f"{found[1]}/v1/chat/completions"
        auth = {"Authorization": f"Bearer {ALICE}"}
        body = {"model": "demo-model", "messages": [USER]}
        big = httpx.post(url, json=body, headers={**auth, "X-Big": "a" * 65536}, timeout=60)
        assert big.status_code == 431
        assert big.json()["error"]["code"] == "request_header_fields_too_large"
        small = httpx.post(url, json=body, headers={**auth, "X-Big": "a" * 4096}, timeout=60)
        assert small.status_code == 200, small.text
    finally:
        process.terminate()
        process.wait(timeout=30)
