"""Model metadata and aliases end to end: the official `openai` client against a real
gateway (Hypercorn) in front of two real local backends, each recording what it was sent.

* `models.list()` / `models.retrieve()` show the public metadata, an alias retrieves the
  model under its real id, and no private config key or value appears in any answer;
* `GET /resource_server/{cluster}/models[?model_id=]` lists a cluster's models as the
  seed does, refusing a missing key (401), a cluster not the caller's (403) and a model
  or cluster there is not (404);
* a request naming an alias, on every inference route (the plain ones and those under
  `/resource_server/{cluster}/{framework}/v1/`), reaches the backend with the real model
  name, and the request log records the real name; the model served on both clusters
  is still shared between them when asked for by its alias;
* `GET /resource_server/status` answers without a key, on asyncio and on trio.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import openai
import pytest

from core import LogEntry
from frontends.assembly import build_gateway
from frontends.identity import StaticKeys
from frontends.log_sink import Timing
from frontends.web import create_app
from tests.support.fake_openai import FakeOpenAI, running_fake_openai
from tests.support.gateway_server import ALICE, BOB, write_fixtures, write_tokens
from tests.support.serve_process import serving
from tests.support.servers import serve_app
from transports.httpx_transport import HttpxTransport

pytestmark = pytest.mark.e2e

KEY_ENV = "IGW_TEST_META_BACKEND_KEY"
BACKEND_SECRET = "sk-meta-backend-SECRET-0123456789"
REAL = "meta-llama/Llama-3.1-8B-Instruct"
ALIAS = "llama-fast"
HELLO = [{"role": "user", "content": "Hello backend"}]
PRIVATE = {
    "api_key": "sk-config-PRIVATE-key",
    "base_url": "https://private.example.test/v1",
    "internal_note": "PRIVATE note: rack 7",
}
CAPABILITIES = {"api_protocols": ["chat_completions", "responses"], "streaming": True}
ALL = ["chat/completions", "completions", "embeddings", "responses", "messages"]


@attrs.frozen
class World:
    url: str
    backends: dict[str, tuple[FakeOpenAI, str]]  # by cluster name
    log: list[LogEntry]


def _cluster(name: str, url: str, groups: list[str] | None = None) -> dict[str, Any]:
    return {
        "cluster_name": name,
        "frameworks": ["api"],
        "openai_endpoints": ALL,
        "cluster_adapter": "adaptors.clusters.openai_compatible.OpenAICompatibleCluster",
        "allowed_globus_groups": groups or [],
        "config": {"api_url": f"{url}/v1", "api_key_env_name": KEY_ENV},
    }


def _endpoint(cluster: str, model: str, url: str, **config: Any) -> dict[str, Any]:
    return {
        "endpoint_slug": "",  # filled in from cluster, framework and model
        "cluster": cluster,
        "framework": "api",
        "model": model,
        "endpoint_adapter": "adaptors.endpoints.direct_api.DirectAPIEndpoint",
        "tpm_model": 0,
        "tpm_user": 500,
        "config": {"api_url": f"{url}/v1", "api_key_env_name": KEY_ENV, **config},
    }


PUBLIC = {
    "display_name": "Llama 3.1 8B",
    "description": "Quick answers.",
    "capabilities": CAPABILITIES,
    "aliases": [ALIAS],
}


class Recorder:
    def __init__(self) -> None:
        self.entries: list[LogEntry] = []

    def write(self, entry: LogEntry, timing: Timing) -> None:
        self.entries.append(entry)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("meta")
    with (
        running_fake_openai(models=[REAL, "other"], api_key=BACKEND_SECRET) as one,
        running_fake_openai(models=[REAL], api_key=BACKEND_SECRET) as two,
    ):
        fixtures = write_fixtures(
            folder / "fixtures",
            [_cluster("one", one[1]), _cluster("two", two[1]), _cluster("staff", one[1], ["s"])],
            [
                _endpoint("one", REAL, one[1], **PUBLIC),
                _endpoint("two", REAL, two[1], **PUBLIC),
                # The demo adaptor takes any config: here, keys no answer may show.
                {
                    **_endpoint("one", "other", one[1]),
                    "endpoint_adapter": "adaptors.endpoints.demo.DemoEndpoint",
                    "config": {**PRIVATE, "description": "A demo."},
                },
                _endpoint("staff", "staff-model", one[1], description="staff only"),
            ],
        )
        recorder = Recorder()
        gateway = build_gateway(
            fixtures,
            identity=StaticKeys.from_file(write_tokens(folder)),
            transport=HttpxTransport(),
            environ={KEY_ENV: BACKEND_SECRET},
            log_sink=recorder,
        )
        with serve_app(create_app(gateway)) as url:
            yield World(url, {"one": one, "two": two}, recorder.entries)


@pytest.fixture
def client(world: World) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{world.url}/v1", api_key=ALICE, max_retries=0) as c:
        yield c


def _clean(text: str, world: World) -> None:
    keys = [f'"{key}"' for key in (*PRIVATE, "api_url", "api_key_env_name")]
    for secret in (BACKEND_SECRET, KEY_ENV, *PRIVATE.values(), *keys):
        assert secret not in text
    for _, url in world.backends.values():
        assert url.split("//")[1] not in text


def _eventually(check: Callable[[], Any], what: str) -> Any:
    """Poll an observable state until it holds (the log is written after the answer)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


def _mark(world: World) -> dict[str, int]:
    """How many requests each backend has received so far."""
    return {name: len(fake.requests) for name, (fake, _) in world.backends.items()}


def _since(world: World, mark: dict[str, int]) -> list[tuple[str, Any]]:
    """(cluster, recorded request) of every inference call since `mark`, status reads
    of `GET /v1/models` aside."""
    return [
        (name, r)
        for name, (fake, _) in world.backends.items()
        for r in fake.requests[mark[name] :]
        if r.path != "/v1/models"
    ]


# -- the listings -------------------------------------------------------------------------


def test_models_list_and_retrieve_show_the_public_metadata(
    client: openai.OpenAI, world: World
) -> None:
    listed = {m.id: m for m in client.models.list()}
    assert set(listed) == {REAL, "other"}  # staff-model is not Alice's
    llama = listed[REAL].model_dump(exclude_unset=True)
    assert llama == {
        "id": REAL,
        "object": "model",
        "created": 0,
        "owned_by": "one",
        "display_name": "Llama 3.1 8B",
        "description": "Quick answers.",
        "capabilities": CAPABILITIES,
        "aliases": [ALIAS],
        "rate_limit_token_per_minute_per_user": 500,
    }
    # An alias retrieves the model it names, under its real id.
    assert client.models.retrieve(ALIAS).model_dump(exclude_unset=True) == llama
    assert client.models.retrieve(REAL).model_dump(exclude_unset=True) == llama
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("staff-model")
    _clean(json.dumps([m.model_dump() for m in listed.values()]), world)


def _get(world: World, path: str, key: str | None = ALICE) -> httpx.Response:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    return httpx.get(f"{world.url}{path}", headers=headers)


def test_a_cluster_lists_its_models_as_the_seed_does(world: World) -> None:
    answer = _get(world, "/resource_server/one/models")
    assert answer.status_code == 200
    assert answer.json() == [
        {
            "id": REAL,
            "object": "model",
            "cluster": "one",
            "framework": "api",
            "display_name": "Llama 3.1 8B",
            "description": "Quick answers.",
            "capabilities": CAPABILITIES,
            "aliases": [ALIAS],
            "rate_limit_token_per_minute_per_user": 500,
        },
        {
            "id": "other",
            "object": "model",
            "cluster": "one",
            "framework": "api",
            "description": "A demo.",
            "rate_limit_token_per_minute_per_user": 500,
        },
    ]
    _clean(answer.text, world)
    for model_id in (REAL, ALIAS):
        one = _get(world, f"/resource_server/two/models?model_id={model_id}")
        assert [m["id"] for m in one.json()] == [REAL], one.text


# path, key, status, error code
REFUSALS = [
    ("/resource_server/one/models", None, 401, None),
    ("/resource_server/one/models", "not-a-key", 401, None),
    ("/resource_server/staff/models", ALICE, 403, "permission_denied"),
    ("/resource_server/staff/models?model_id=staff-model", BOB, 403, "permission_denied"),
    ("/resource_server/nowhere/models", ALICE, 404, "cluster_not_found"),
    ("/resource_server/one/models?model_id=staff-model", ALICE, 404, "model_not_found"),
    ("/resource_server/two/models?model_id=other", ALICE, 404, "model_not_found"),
]


@pytest.mark.parametrize(("path", "key", "status", "code"), REFUSALS)
def test_the_cluster_models_route_refuses_as_the_jobs_route_does(
    world: World, path: str, key: str | None, status: int, code: str | None
) -> None:
    answer = _get(world, path, key)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    if code is not None:
        assert error["code"] == code
    assert "staff only" not in answer.text
    _clean(answer.text, world)


def test_the_public_status_needs_no_key_and_shows_open_clusters_only(world: World) -> None:
    answer = _get(world, "/resource_server/status", key=None)
    assert answer.status_code == 200
    assert answer.json() == {"one": True, "two": True}


# -- requests by alias ----------------------------------------------------------------------


def test_a_chat_completion_by_alias_reaches_the_backend_under_the_real_name(
    client: openai.OpenAI, world: World
) -> None:
    before = _mark(world)
    logged = len(world.log)
    completion = client.chat.completions.create(model=ALIAS, messages=HELLO)
    assert completion.choices[0].message.content
    assert [r.json()["model"] for _, r in _since(world, before)] == [REAL]
    entry = _eventually(lambda: world.log[logged:], "the request logged")[0]
    assert (entry.model, entry.status) == (REAL, 200)
    # The real name goes out byte for byte as the client sent it.
    raw = json.dumps({"model": REAL, "messages": HELLO}, separators=(",", ":")).encode()
    mark = _mark(world)
    httpx.post(
        f"{world.url}/v1/chat/completions",
        content=raw,
        headers={"Authorization": f"Bearer {ALICE}", "Content-Type": "application/json"},
    ).raise_for_status()
    assert [r.body for _, r in _since(world, mark)] == [raw]


def test_a_stream_by_alias_reaches_the_backend_under_the_real_name(
    client: openai.OpenAI, world: World
) -> None:
    before = _mark(world)
    chunks = list(client.chat.completions.create(model=ALIAS, messages=HELLO, stream=True))
    assert chunks and chunks[-1].choices[0].finish_reason == "stop"
    assert [r.json()["model"] for _, r in _since(world, before)] == [REAL]


BODIES = {
    "chat/completions": {"messages": HELLO},
    "completions": {"prompt": "Hello"},
    "embeddings": {"input": "Hello"},
    "responses": {"input": "Hello"},
    "messages": {"messages": HELLO, "max_tokens": 16},
}


@pytest.mark.parametrize("route", ALL)
@pytest.mark.parametrize("prefix", ["/v1", "/resource_server/two/api/v1"])
def test_every_inference_route_accepts_an_alias(world: World, route: str, prefix: str) -> None:
    before = _mark(world)
    logged = len(world.log)
    answer = httpx.post(
        f"{world.url}{prefix}/{route}",
        json={"model": ALIAS.upper(), **BODIES[route]},
        headers={"Authorization": f"Bearer {ALICE}"},
    )
    assert answer.status_code == 200, answer.text
    sent = _since(world, before)
    assert [r.json()["model"] for _, r in sent] == [REAL]
    assert [r.path for _, r in sent] == [f"/v1/{route}"]
    if prefix != "/v1":
        assert [name for name, _ in sent] == ["two"]
    entry = _eventually(lambda: world.log[logged:], "the request logged")[0]
    assert entry.model == REAL
    _clean(answer.text, world)


def test_the_model_on_both_clusters_is_shared_when_named_by_its_alias(world: World) -> None:
    before = _mark(world)
    for _ in range(12):
        httpx.post(
            f"{world.url}/v1/chat/completions",
            json={"model": ALIAS, "messages": HELLO},
            headers={"Authorization": f"Bearer {ALICE}"},
        ).raise_for_status()
    clusters = {name for name, _ in _since(world, before)}
    assert clusters == {"one", "two"}


# -- the status route on both loops, as a user serves the gateway ---------------------------


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_the_public_status_answers_without_a_key_on_both_loops(tmp_path: Path, loop: str) -> None:
    with running_fake_openai(models=["m"]) as (_, backend_url):
        fixtures = write_fixtures(
            tmp_path / "fixtures",
            [
                {
                    "cluster_name": "open",
                    "frameworks": ["api"],
                    "openai_endpoints": ["chat/completions"],
                    "cluster_adapter": (
                        "adaptors.clusters.openai_compatible.OpenAICompatibleCluster"
                    ),
                    "config": {"api_url": f"{backend_url}/v1"},
                },
                {
                    "cluster_name": "gone",
                    "frameworks": ["api"],
                    "openai_endpoints": ["chat/completions"],
                    "cluster_adapter": (
                        "adaptors.clusters.openai_compatible.OpenAICompatibleCluster"
                    ),
                    # Nothing listens on port 9 here: its status cannot be read.
                    "config": {"api_url": "http://127.0.0.1:9/v1", "api_request_timeout": 5},
                },
            ],
            [_endpoint("open", "m", backend_url, aliases=["em"])],
        )
        environ = {KEY_ENV: None}
        with serving(tmp_path, fixtures=fixtures, loop=loop, environ=environ) as served:
            answer = httpx.get(f"{served.url}/resource_server/status", timeout=30)
            assert answer.status_code == 200
            assert answer.json() == {"open": True, "gone": False}
            models = httpx.get(
                f"{served.url}/resource_server/open/models?model_id=em",
                headers={"Authorization": f"Bearer {ALICE}"},
            )
            assert [m["id"] for m in models.json()] == ["m"]
