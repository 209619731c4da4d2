"""OpenAI's Responses API and Anthropic's Messages API through a real gateway, spoken to
by the official `openai` and `anthropic` clients, unchanged.

In front of a real local backend that speaks both (the fake backend, as vLLM serves
them) on two clusters, and in front of the built-in demo model (the embedded default):
whole and streamed answers, plain routes and `/resource_server/{cluster}/{framework}`,
the key as `x-api-key` or bearer, `anthropic-version` handed on, Anthropic's error shape
on `/v1/messages` (and only there), stored responses found again only by their owner,
the cluster's `openai_endpoints` gating both routes, and no backend key in any answer.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import attrs
import httpx
import openai
import pytest

from frontends.quota import InProcessCounters
from tests.support.fake_openai import FakeOpenAI, running_fake_openai
from tests.support.gateway_server import (
    ALICE,
    BOB,
    REPO_FIXTURES,
    running_gateway,
    write_fixtures,
    write_tokens,
)
from tests.support.quota import limited_fixtures

pytestmark = pytest.mark.e2e

KEY_ENV = "IGW_TEST_APIS_BACKEND_KEY"
BACKEND_SECRET = "sk-apis-backend-secret-0123456789"
MODELS = ["fake-model", "reject-400", "fail-500", "cut-stream", "chat-only-model", "shared-model"]
# "shared-model" is served on both clusters (the gateway may pick either); the others on
# cluster one only (chat-only-model on a cluster of its own that opens chat alone).
HELLO = [{"role": "user", "content": "Hello backend"}]


@attrs.frozen
class World:
    url: str
    backends: dict[str, FakeOpenAI]  # by cluster name


def _cluster(name: str, url: str, routes: list[str]) -> dict[str, Any]:
    return {
        "cluster_name": name,
        "frameworks": ["api"],
        "openai_endpoints": routes,
        "cluster_adapter": "adaptors.clusters.openai_compatible.OpenAICompatibleCluster",
        "config": {"api_url": f"{url}/v1", "api_key_env_name": KEY_ENV},
    }


def _endpoint(cluster: str, model: str, url: str) -> dict[str, Any]:
    return {
        "endpoint_slug": f"{cluster}-api-{model}",
        "cluster": cluster,
        "framework": "api",
        "model": model,
        "endpoint_adapter": "adaptors.endpoints.direct_api.DirectAPIEndpoint",
        # The seed's full chat URL: the gateway sends each API to its own route beside it.
        "config": {"api_url": f"{url}/v1/chat/completions", "api_key_env_name": KEY_ENV},
    }


ALL = ["chat/completions", "completions", "embeddings", "responses", "messages"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    os.environ[KEY_ENV] = BACKEND_SECRET
    folder = tmp_path_factory.mktemp("apis")
    try:
        with (
            running_fake_openai(models=MODELS, api_key=BACKEND_SECRET) as (first, first_url),
            running_fake_openai(models=["shared-model"], api_key=BACKEND_SECRET) as (
                second,
                second_url,
            ),
        ):
            fixtures = write_fixtures(
                folder / "fixtures",
                [
                    _cluster("one", first_url, ALL),
                    _cluster("two", second_url, ALL),
                    _cluster("chatonly", first_url, ["chat/completions"]),
                ],
                [
                    *(_endpoint("one", m, first_url) for m in MODELS if m != "chat-only-model"),
                    _endpoint("two", "shared-model", second_url),
                    _endpoint("chatonly", "chat-only-model", first_url),
                ],
            )
            with running_gateway(fixtures, write_tokens(folder)) as url:
                yield World(url, {"one": first, "two": second})
    finally:
        os.environ.pop(KEY_ENV, None)


def relayed(backend: FakeOpenAI, before: int = 0) -> list[Any]:
    """The calls the gateway relayed to `backend` since `before` (its status reads of
    `GET /v1/models` aside)."""
    return [r for r in backend.requests[before:] if r.path != "/v1/models"]


def openai_client(base_url: str, key: str = ALICE) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)


def anthropic_client(base_url: str, key: str = ALICE, **options: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base_url, api_key=key, max_retries=0, **options)


# -- the Responses API with the official openai client ----------------------------------


def test_responses_create_relays_to_the_backend_route(world: World) -> None:
    backend = world.backends["one"]
    before = len(backend.requests)
    with openai_client(f"{world.url}/v1") as client:
        answer = client.responses.create(model="fake-model", input="Hello backend")
    assert answer.output_text == "fake reply to: Hello backend"
    assert answer.usage is not None and answer.usage.output_tokens == 5
    [sent] = relayed(backend, before)
    assert sent.path == "/v1/responses"
    assert sent.header("authorization") == f"Bearer {BACKEND_SECRET}"
    assert sent.json() == {"model": "fake-model", "input": "Hello backend"}


def test_responses_create_streams_every_event(world: World) -> None:
    with (
        openai_client(f"{world.url}/v1") as client,
        client.responses.create(model="fake-model", input="Hello backend", stream=True) as stream,
    ):
        events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "fake reply to: Hello backend"
    assert relayed(world.backends["one"])[-1].json()["stream"] is True


def test_responses_on_the_alcf_route_reach_the_named_cluster(world: World) -> None:
    backend = world.backends["two"]
    before = len(backend.requests)
    with openai_client(f"{world.url}/resource_server/two/api/v1") as client:
        answer = client.responses.create(model="shared-model", input=[*HELLO])
        streamed = list(client.responses.create(model="shared-model", input="hi", stream=True))
    assert answer.output_text == "fake reply to: Hello backend"
    assert streamed[-1].type == "response.completed"
    assert [r.path for r in relayed(backend, before)] == ["/v1/responses"] * 2


def test_a_follow_up_goes_to_the_endpoint_that_holds_the_previous_response(
    world: World,
) -> None:
    """Made on cluster two (named in the URL), continued five times on the plain route,
    where the model alone may pick either cluster: every follow-up goes back to two."""
    with openai_client(f"{world.url}/resource_server/two/api/v1") as on_two:
        first = on_two.responses.create(model="shared-model", input="first")
    second_backend = world.backends["two"]
    before = len(second_backend.requests)
    with openai_client(f"{world.url}/v1") as client:
        follow_ups = [
            client.responses.create(
                model="shared-model", input="again", previous_response_id=first.id
            )
            for _ in range(5)
        ]
        stored = client.responses.retrieve(first.id)
    assert {f.previous_response_id for f in follow_ups} == {first.id}
    assert stored.id == first.id and stored.output_text == first.output_text
    paths = [r.path for r in relayed(second_backend, before)]
    assert paths == ["/v1/responses"] * 5 + [f"/v1/responses/{first.id}"]


def test_every_call_on_a_stored_response_goes_to_its_endpoint(world: World) -> None:
    with openai_client(f"{world.url}/resource_server/two/api/v1") as on_two:
        made = on_two.responses.create(model="shared-model", input="keep me")
    backend = world.backends["two"]
    before = len(backend.requests)
    with openai_client(f"{world.url}/v1") as client:
        items = client.responses.input_items.list(made.id)
        cancelled = client.responses.cancel(made.id)
        client.responses.delete(made.id)
        with pytest.raises(openai.NotFoundError):  # deleted: the gateway forgot it too
            client.responses.retrieve(made.id)
    assert [item.content[0].text for item in items.data] == ["keep me"]  # type: ignore[union-attr]
    assert cancelled.id == made.id and cancelled.status == "cancelled"
    calls = [(r.method, r.path) for r in relayed(backend, before)]
    assert calls == [
        ("GET", f"/v1/responses/{made.id}/input_items"),
        ("POST", f"/v1/responses/{made.id}/cancel"),
        ("DELETE", f"/v1/responses/{made.id}"),
    ]
    assert all(r.header("authorization") == f"Bearer {BACKEND_SECRET}" for r in relayed(backend))


def test_another_users_response_id_does_not_exist_for_them(world: World) -> None:
    with openai_client(f"{world.url}/v1") as alice:
        made = alice.responses.create(model="fake-model", input="mine")
    before = sum(len(relayed(b)) for b in world.backends.values())
    with openai_client(f"{world.url}/v1", key=BOB) as bob:
        with pytest.raises(openai.NotFoundError) as follow_up:
            bob.responses.create(model="fake-model", input="x", previous_response_id=made.id)
        with pytest.raises(openai.NotFoundError) as retrieve:
            bob.responses.retrieve(made.id)
        with pytest.raises(openai.NotFoundError):
            bob.responses.retrieve("resp_never_made")
        with pytest.raises(openai.NotFoundError):
            bob.responses.delete(made.id)
        with pytest.raises(openai.NotFoundError):
            bob.responses.cancel(made.id)
    assert follow_up.value.body["param"] == "previous_response_id"  # type: ignore[index]
    assert made.id in str(retrieve.value)
    assert sum(len(relayed(b)) for b in world.backends.values()) == before  # none relayed


# -- the Messages API with the official anthropic client --------------------------------


def test_messages_create_relays_with_the_key_as_x_api_key(world: World) -> None:
    backend = world.backends["one"]
    before = len(backend.requests)
    with anthropic_client(world.url) as client:
        message = client.messages.create(model="fake-model", max_tokens=64, messages=HELLO)
    assert message.content[0].type == "text"
    assert message.content[0].text == "fake reply to: Hello backend"
    assert message.usage.output_tokens == 5
    [sent] = relayed(backend, before)
    assert sent.path == "/v1/messages"
    assert sent.header("authorization") == f"Bearer {BACKEND_SECRET}"
    assert sent.header("x-api-key") is None  # the client's key stays at the gateway
    assert sent.header("anthropic-version")  # the client's version header, handed on
    assert sent.json() == {"model": "fake-model", "max_tokens": 64, "messages": HELLO}


def test_messages_create_streams_every_event(world: World) -> None:
    with (
        anthropic_client(world.url) as client,
        client.messages.stream(model="fake-model", max_tokens=64, messages=HELLO) as stream,
    ):
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and "message_stop" in kinds
    assert final.content[0].type == "text"
    assert final.content[0].text == "fake reply to: Hello backend"
    assert final.usage.output_tokens == 5


def test_messages_with_a_bearer_token_and_on_the_alcf_route(world: World) -> None:
    backend = world.backends["two"]
    before = len(backend.requests)
    base = f"{world.url}/resource_server/two/api"
    with anthropic.Anthropic(base_url=base, auth_token=ALICE, max_retries=0) as client:
        message = client.messages.create(model="shared-model", max_tokens=8, messages=HELLO)
        raw = client.messages.create(
            model="shared-model", max_tokens=8, messages=HELLO, stream=True
        )
        kinds = [event.type for event in raw]
    assert message.content[0].type == "text"
    assert kinds[-1] == "message_stop"
    assert [r.path for r in relayed(backend, before)] == ["/v1/messages"] * 2


# -- errors: Anthropic's shape on /v1/messages, OpenAI's elsewhere ----------------------


def _post(world: World, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    return httpx.post(
        world.url + path,
        content=body if isinstance(body, bytes) else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        timeout=30,
    )


def _anthropic_error(response: httpx.Response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["type"] == "error"
    assert set(payload["error"]) == {"type", "message"}
    assert payload["error"]["type"] == kind
    message: str = payload["error"]["message"]
    return message


MESSAGE = {"model": "fake-model", "max_tokens": 16, "messages": HELLO}
KEYED = {"x-api-key": ALICE}


@pytest.mark.parametrize(
    ("case", "body", "headers", "status", "kind"),
    [
        ("no key", MESSAGE, {}, 401, "authentication_error"),
        (
            "unknown key",
            MESSAGE,
            {"x-api-key": "igw-not-a-key-0123456789"},
            401,
            "authentication_error",
        ),
        (
            "max_tokens missing",
            {**MESSAGE, "max_tokens": None},
            KEYED,
            400,
            "invalid_request_error",
        ),
        ("messages a string", {**MESSAGE, "messages": "hi"}, KEYED, 400, "invalid_request_error"),
        ("unknown model", {**MESSAGE, "model": "nope"}, KEYED, 404, "not_found_error"),
        (
            "route not open",
            {**MESSAGE, "model": "chat-only-model"},
            KEYED,
            400,
            "invalid_request_error",
        ),
        (
            "backend's own 400",
            {**MESSAGE, "model": "reject-400"},
            KEYED,
            400,
            "invalid_request_error",
        ),
        ("backend failure", {**MESSAGE, "model": "fail-500"}, KEYED, 502, "api_error"),
        ("not JSON", b"{nope", KEYED, 400, "invalid_request_error"),
    ],
)
def test_refusals_on_messages_take_anthropics_shape(
    world: World, case: str, body: Any, headers: dict[str, str], status: int, kind: str
) -> None:
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if v is not None}
    cluster = "chatonly" if case == "route not open" else "one"
    for path in ("/v1/messages", f"/resource_server/{cluster}/api/v1/messages"):
        response = _post(world, path, body, headers)
        message = _anthropic_error(response, status, kind)
        assert BACKEND_SECRET not in response.text and "internal secret" not in message
        if status == 401:
            assert response.headers["www-authenticate"].startswith("Bearer")


def test_the_apps_own_refusals_on_messages_take_anthropics_shape(world: World) -> None:
    wrong_method = httpx.get(f"{world.url}/v1/messages", headers=KEYED)
    _anthropic_error(wrong_method, 405, "invalid_request_error")
    too_large = _post(world, "/v1/messages", b"{" + b" " * (17 * 1024 * 1024) + b"}", KEYED)
    _anthropic_error(too_large, 413, "request_too_large")
    huge_headers = _post(world, "/v1/messages", MESSAGE, {**KEYED, "x-padding": "p" * 40_000})
    _anthropic_error(huge_headers, 431, "invalid_request_error")
    elsewhere = _post(world, "/v1/responses", {"model": "nope", "input": "x"})
    assert set(elsewhere.json()["error"]) == {"message", "type", "param", "code"}


def test_the_official_clients_raise_their_own_errors(world: World) -> None:
    with (
        anthropic_client(world.url, key="igw-not-a-key-0123456789") as stranger,
        pytest.raises(anthropic.AuthenticationError),
    ):
        stranger.messages.create(model="fake-model", max_tokens=8, messages=HELLO)
    with anthropic_client(world.url) as client:
        with pytest.raises(anthropic.NotFoundError):
            client.messages.create(model="nope", max_tokens=8, messages=HELLO)
        with pytest.raises(anthropic.BadRequestError):
            client.messages.create(model="chat-only-model", max_tokens=8, messages=HELLO)
    with openai_client(f"{world.url}/v1") as client, pytest.raises(openai.BadRequestError):
        client.responses.create(model="reject-400", input="x")


def test_a_cut_stream_ends_with_an_error_event_in_each_apis_shape(world: World) -> None:
    with httpx.stream(
        "POST",
        f"{world.url}/v1/messages",
        json={**MESSAGE, "model": "cut-stream", "stream": True},
        headers=KEYED,
    ) as response:
        body = response.read().decode()
    assert body.endswith("\n\n")
    last = body.strip().split("\n\n")[-1]
    assert last.startswith("event: error\ndata: ")
    assert json.loads(last.split("data: ", 1)[1])["error"]["type"] == "api_error"
    with anthropic_client(world.url) as client, pytest.raises(anthropic.APIStatusError):
        list(client.messages.create(**{**MESSAGE, "model": "cut-stream"}, stream=True))
    with openai_client(f"{world.url}/v1") as client, pytest.raises(openai.APIError):
        list(client.responses.create(model="cut-stream", input="x", stream=True))


# -- the embedded default: the demo model answers both ----------------------------------


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_gateway(REPO_FIXTURES, write_tokens(tmp_path_factory.mktemp("demo"))) as url:
        yield url


def test_the_demo_answers_the_responses_api(demo_url: str) -> None:
    with openai_client(f"{demo_url}/v1") as client:
        answer = client.responses.create(model="demo-model", input="Hello there")
        events = list(client.responses.create(model="demo-model", input="Hello there", stream=True))
        stored = client.responses.retrieve(answer.id)
        follow_up = client.responses.create(
            model="demo-model", input="And again", previous_response_id=answer.id
        )
        client.responses.delete(follow_up.id)
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(follow_up.id)
    assert "Hello there" in answer.output_text
    assert answer.usage is not None and answer.usage.total_tokens > 0
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    streamed = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert streamed == answer.output_text
    assert stored.output_text == answer.output_text
    assert "And again" in follow_up.output_text


def test_the_demo_answers_the_messages_api(demo_url: str) -> None:
    with anthropic_client(demo_url) as client:
        message = client.messages.create(model="demo-model", max_tokens=64, messages=HELLO)
        with client.messages.stream(model="demo-model", max_tokens=64, messages=HELLO) as stream:
            kinds = {event.type for event in stream}
            final = stream.get_final_message()
        short = client.messages.create(model="demo-model", max_tokens=2, messages=HELLO)
    assert message.content[0].type == "text" and "Hello backend" in message.content[0].text
    assert message.stop_reason == "end_turn" and message.usage.input_tokens > 0
    assert {"message_start", "content_block_delta", "message_delta", "message_stop"} <= kinds
    assert final.content[0].type == "text"
    assert final.content[0].text == message.content[0].text
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 2


def test_the_repo_fixtures_open_both_routes() -> None:
    clusters = json.loads((Path(REPO_FIXTURES) / "clusters.json").read_text())
    for cluster in clusters:
        assert {"responses", "messages"} <= set(cluster["fields"]["openai_endpoints"])


# -- quotas: the estimate reads each API's fields; the refusal takes the route's shape ---


def test_quota_refusals_on_both_apis(tmp_path: Path) -> None:
    """A user may spend 100 tokens a minute: asking for up to 1000 in one request is
    refused before the backend is called, on /v1/messages as Anthropic's
    `rate_limit_error`, on /v1/responses as OpenAI's 429; a request that fits passes."""
    with running_fake_openai(models=["gpt-test"]) as (fake, backend_url):
        fixtures = limited_fixtures(tmp_path / "fixtures", backend_url, ["gpt-test"], tpm_user=100)
        with running_gateway(fixtures, write_tokens(tmp_path), quota=InProcessCounters()) as url:
            greedy = {"model": "gpt-test", "max_tokens": 1000, "messages": HELLO}
            refused = _post(World(url, {}), "/v1/messages", greedy, KEYED)
            fits = _post(World(url, {}), "/v1/messages", {**greedy, "max_tokens": 20}, KEYED)
            long_answer = {"model": "gpt-test", "input": "hi", "max_output_tokens": 1000}
            refused_too = _post(
                World(url, {}), "/v1/responses", long_answer, {"Authorization": f"Bearer {ALICE}"}
            )
        assert [r.path for r in relayed(fake)] == ["/v1/messages"]
    message = _anthropic_error(refused, 429, "rate_limit_error")
    assert "gpt-test" in message
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert fits.status_code == 200
    assert refused_too.status_code == 429
    assert refused_too.json()["error"]["code"] == "rate_limit_exceeded"
    assert "retry-after" in refused_too.headers


# -- the README's example, run as written against the demo -------------------------------

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_example_runs_against_the_demo(demo_url: str, tmp_path: Path) -> None:
    [example] = [
        block
        for block in re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
        if "anthropic.Anthropic(" in block
    ]
    script = tmp_path / "example.py"
    script.write_text(example.replace("http://127.0.0.1:8000", demo_url))
    result = subprocess.run(
        [sys.executable, str(script)],
        env={**os.environ, "OPENAI_API_KEY": ALICE},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    said = "Hello from the demo model! You said:"
    assert result.stdout.splitlines() == [
        f"{said} Hello",
        f"{said} Once more",
        f"{said} Hello",
        f"{said} Hello",
        f"{said} Hello",
    ]
