"""One body, bytes end to end: what the client sent is what the backend receives.

The gateway parses a request once, to validate it, and then sends the client's own
bytes: `1.0E2` stays `1.0E2`, duplicate keys stay duplicated, spacing and escapes stay
as written.  Only when the client spelled the model differently from the fixture is the
body rewritten, and then only its model name changes.  Adaptors written as the seed
guides show still get `data["model_params"]` as a dict, and a body one of them changed is
serialised once.  Checked through a real Hypercorn server against a real local backend
that records the exact bytes it received, with every request of OpenAI's recorded
traffic and with bodies chosen to break a re-serialiser.
"""

from __future__ import annotations

import copy
import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from adaptors.endpoints._body import ClientBody, body_bytes
from core import ClientError, OpenAIRoute, validate_request
from tests.support.fake_openai import FakeOpenAI, running_fake_openai
from tests.support.gateway_server import ALICE, running_gateway, write_fixtures, write_tokens
from transports.cassette import load_cassette

pytestmark = pytest.mark.e2e

RECORDED = Path(__file__).resolve().parent / "cassettes" / "openai-go-vcr"
KEY_ENV = "IGW_BYTES_KEY"
BACKEND_KEY = "sk-bytes-backend-key"
ROUTES = {r.value for r in OpenAIRoute}


def recorded_requests() -> list[tuple[str, str, bytes]]:
    """(cassette, route, body) of every recorded request the gateway would forward."""
    cases = []
    for path in sorted(RECORDED.glob("*.yaml")):
        for exchange in load_cassette(path).all_exchanges():
            route = urlsplit(exchange.request.url).path.removeprefix("/v1/")
            body = exchange.request.body
            forwarded = route in ROUTES and not isinstance(
                validate_request(OpenAIRoute(route), "application/json", body), ClientError
            )
            if forwarded:
                cases.append((path.stem, route, body))
    return cases


RECORDED_REQUESTS = recorded_requests()


def test_the_recorded_requests_are_all_there() -> None:
    """26 cassettes; all but the one whose body the gateway itself refuses are forwarded."""
    assert len(sorted(RECORDED.glob("*.yaml"))) == 26, f"missing cassettes in {RECORDED}"
    assert len(RECORDED_REQUESTS) == 25


def _models() -> list[str]:
    names = {json.loads(body)["model"] for _, _, body in RECORDED_REQUESTS}
    return sorted(names | {"m-exact"})


@pytest.fixture(scope="module")
def backend() -> Iterator[tuple[FakeOpenAI, str]]:
    with running_fake_openai(models=_models(), api_key=BACKEND_KEY) as served:
        yield served


@pytest.fixture(scope="module")
def gateway(
    backend: tuple[FakeOpenAI, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    _, backend_url = backend
    folder = tmp_path_factory.mktemp("bytes")
    cluster = {
        "cluster_name": "local",
        "frameworks": ["vllm"],
        "openai_endpoints": sorted(ROUTES),
        "cluster_adapter": "adaptors.clusters.openai_compatible.OpenAICompatibleCluster",
        "config": {"api_url": f"{backend_url}/v1"},
    }
    endpoints = [
        {
            "endpoint_slug": f"local-vllm-{index}",
            "cluster": "local",
            "framework": "vllm",
            "model": model,
            "endpoint_adapter": "adaptors.endpoints.direct_api.DirectAPIEndpoint",
            "config": {"api_url": f"{backend_url}/v1", "api_key_env_name": KEY_ENV},
        }
        for index, model in enumerate(_models())
    ]
    with pytest.MonkeyPatch.context() as env:
        env.setenv(KEY_ENV, BACKEND_KEY)
        fixtures = write_fixtures(folder / "fixtures", [cluster], endpoints)
        with running_gateway(fixtures, write_tokens(folder)) as url:
            yield url


def send(gateway: str, route: str, body: bytes) -> httpx.Response:
    return httpx.post(
        f"{gateway}/v1/{route}",
        content=body,
        headers={"Authorization": f"Bearer {ALICE}", "Content-Type": "application/json"},
        timeout=30,
    )


def received(backend: tuple[FakeOpenAI, str]) -> bytes:
    return backend[0].requests[-1].body


@pytest.mark.parametrize(
    ("route", "body"),
    [(route, body) for _, route, body in RECORDED_REQUESTS],
    ids=[name for name, _, _ in RECORDED_REQUESTS],
)
def test_every_recorded_request_reaches_the_backend_byte_for_byte(
    gateway: str, backend: tuple[FakeOpenAI, str], route: str, body: bytes
) -> None:
    send(gateway, route, body)
    assert received(backend) == body


AWKWARD = [
    b'{"model":"m-exact","messages":[{"role":"user","content":"hi"}],"temperature":1.0E2}',
    b'{"model": "m-exact", "messages": [{"role": "user", "content": "a"}], "n": 1, "n": 2}',
    b'{ "model" : "m-exact" ,\n\t"messages":[{"role":"user","content":"caf\\u00e9 \xc3\xbc"}] }',
    b'{"model":"m-exact","messages":[{"role":"user","content":"\\uD83D\\uDE00"}],"top_p":1e-7}',
    b'{"model":"m-exact","messages":[{"role":"user","content":"x"}],"seed":12345678901234567890}',
]


@pytest.mark.parametrize(
    "body",
    AWKWARD,
    ids=["exponent", "duplicate-keys", "spacing-escapes", "surrogate-pair", "bigint"],
)
def test_what_a_reserialiser_would_change_arrives_unchanged(
    gateway: str, backend: tuple[FakeOpenAI, str], body: bytes
) -> None:
    response = send(gateway, "chat/completions", body)
    assert response.status_code == 200, response.text
    assert received(backend) == body


def test_a_model_spelled_differently_is_the_only_change(
    gateway: str, backend: tuple[FakeOpenAI, str]
) -> None:
    body = b'{"model":"M-EXACT","messages":[{"role":"user","content":"hi"}],"top_k":1.0E2}'
    assert send(gateway, "chat/completions", body).status_code == 200
    sent = received(backend)
    assert json.loads(sent) == {**json.loads(body), "model": "m-exact"}


def test_a_lone_surrogate_never_reaches_the_backend(
    gateway: str, backend: tuple[FakeOpenAI, str]
) -> None:
    """No UTF-8 encoder can write it: the client's 400, naming where it is (issue 11)."""
    before = len(backend[0].requests)
    body = b'{"model":"m-exact","messages":[{"role":"user","content":"\\ud800 lone"}]}'
    response = send(gateway, "chat/completions", body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("messages[0].content", "invalid_encoding")
    assert len(backend[0].requests) == before


def test_non_finite_numbers_never_reach_the_backend(
    gateway: str, backend: tuple[FakeOpenAI, str]
) -> None:
    before = len(backend[0].requests)
    body = b'{"model":"m-exact","messages":[{"role":"user","content":"hi"}],"temperature":1e400}'
    response = send(gateway, "chat/completions", body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "temperature"
    assert len(backend[0].requests) == before


# -- the seed's dict, remembering its bytes -------------------------------------------------

RAW = b'{"model":"m","t":1.0E2,"messages":[{"role":"user"}]}'


@pytest.mark.parametrize("lazy", [True, False], ids=["lazy", "eager"])
def test_a_body_nobody_changed_is_sent_as_received(lazy: bool) -> None:
    assert body_bytes(ClientBody(RAW, lazy=lazy)) == RAW


@pytest.mark.parametrize(
    "read",
    [
        lambda b: {**b},
        lambda b: dict(b),
        lambda b: json.dumps(b),
        lambda b: list(b.items()),
        lambda b: b["messages"][0]["role"],
        lambda b: b.get("t"),
        lambda b: "model" in b,
        lambda b: len(b),
        lambda b: b == json.loads(RAW),
        lambda b: copy.deepcopy(b),
        lambda b: pickle.loads(pickle.dumps(b)),
        lambda b: b | {},
    ],
)
def test_reading_the_dict_in_any_way_sees_the_clients_json_and_changes_no_byte(
    read: Any,
) -> None:
    body = ClientBody(RAW)
    read(body)
    assert dict(body) == json.loads(RAW)
    assert body_bytes(body) == RAW


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda b: b.__setitem__("stream", False), {"stream": False}),
        (lambda b: b["messages"][0].__setitem__("content", "x"), None),
        (lambda b: b.pop("t"), None),
        (lambda b: b.update(t=True), {"t": True}),  # true is not 100.0, though 1 == True
        (lambda b: b.setdefault("n", 2), {"n": 2}),
    ],
    ids=["top-level", "nested", "pop", "bool-for-number", "setdefault"],
)
def test_a_changed_body_is_serialised_once_with_the_change(change: Any, expected: Any) -> None:
    body = ClientBody(RAW)
    change(body)
    sent = body_bytes(body)
    assert sent != RAW
    assert json.loads(sent) == dict(body)
    if expected is not None:
        assert json.loads(sent).items() >= expected.items()


def test_a_plain_dict_is_serialised_and_non_finite_numbers_are_refused() -> None:
    assert json.loads(body_bytes({"model": "m", "x": 1.5})) == {"model": "m", "x": 1.5}
    with pytest.raises(ValueError):
        body_bytes({"model": "m", "x": float("nan")})
