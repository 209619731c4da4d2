"""A DirectAPIEndpoint in front of a real local OpenAI-compatible server, end to end.

The backend is a real HTTP server started by the test; the gateway is a real Hypercorn
server; the client is the official `openai` package.  The backend's API key is a
distinctive secret so that any leak into a response, header or log line is caught.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.fake_openai import EXACT_BODY, FakeOpenAI, running_fake_openai
from tests.support.gateway_server import ALICE, running_gateway, write_fixtures, write_tokens

pytestmark = pytest.mark.e2e

SECRET = "sk-backend-SECRET-7f3a9c2e1d"
KEY_ENV = "IGW_TEST_BACKEND_KEY"
MODELS = [
    "gpt-test",
    "exact-body",
    "fail-500",
    "bad-json",
    "reject-400",
    "cut-stream",
    "error-stream",
    "hang-stream",
    "slow",
]
MESSAGES = [{"role": "user", "content": "Hello backend"}]


@pytest.fixture(scope="module")
def backend() -> Iterator[tuple[FakeOpenAI, str]]:
    os.environ[KEY_ENV] = SECRET
    try:
        with running_fake_openai(models=MODELS, api_key=SECRET) as running:
            yield running
    finally:
        os.environ.pop(KEY_ENV, None)


@pytest.fixture(scope="module")
def gateway_url(
    backend: tuple[FakeOpenAI, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    _, backend_url = backend
    folder = tmp_path_factory.mktemp("direct")
    cluster = {
        "cluster_name": "fake",
        "frameworks": ["api"],
        "openai_endpoints": ["chat/completions", "completions", "embeddings"],
        "cluster_adapter": "adaptors.clusters.openai_compatible.OpenAICompatibleCluster",
        "config": {"api_url": f"{backend_url}/v1", "api_key_env_name": KEY_ENV},
    }
    endpoints = [
        {
            "endpoint_slug": f"fake-api-{model}",
            "cluster": "fake",
            "framework": "api",
            "model": model,
            "endpoint_adapter": "resource_server_async.endpoints.direct_api.DirectAPIEndpoint",
            "config": {
                "api_url": f"{backend_url}/v1/chat/completions",
                "api_key_env_name": KEY_ENV,
                "api_request_timeout": 1 if model == "slow" else 30,
            },
        }
        for model in MODELS
    ]
    fixtures = write_fixtures(folder / "fixtures", [cluster], endpoints)
    with running_gateway(fixtures, write_tokens(folder)) as url:
        yield url


@pytest.fixture
def client(gateway_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=ALICE, max_retries=0) as c:
        yield c


@pytest.fixture(autouse=True)
def no_secret_in_logs(
    caplog: pytest.LogCaptureFixture, backend: tuple[FakeOpenAI, str]
) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    text = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert SECRET not in text


def _assert_clean(response: httpx.Response, backend_url: str) -> None:
    exposed = response.text + repr(response.headers)
    assert SECRET not in exposed
    assert backend_url.split("//")[1] not in exposed


def test_key_arrives_as_bearer_and_answer_passes_through(
    client: openai.OpenAI, backend: tuple[FakeOpenAI, str]
) -> None:
    fake, _ = backend
    before = len(fake.requests)
    completion = client.chat.completions.create(model="gpt-test", messages=MESSAGES)
    assert completion.choices[0].message.content
    sent = fake.requests[before:]
    assert [r.path for r in sent] == ["/v1/chat/completions"]
    assert sent[0].headers["authorization"] == f"Bearer {SECRET}"
    # The client's own token never travels to the backend.
    assert ALICE not in repr(sent[0].headers)


@pytest.mark.parametrize("stream", [False, True])
def test_backend_request_id_is_relayed_and_nothing_else(gateway_url: str, stream: bool) -> None:
    response = httpx.post(
        f"{gateway_url}/v1/chat/completions",
        json={"model": "gpt-test", "messages": MESSAGES, "stream": stream},
        headers={"Authorization": f"Bearer {ALICE}"},
    )
    assert response.status_code == 200
    # The backend's own id is relayed beside the gateway's (which is `x-request-id`).
    assert response.headers["x-backend-request-id"].startswith("req_fake_")
    assert not response.headers["x-request-id"].startswith("req_fake_")
    for private in ("set-cookie", "x-ratelimit-remaining-requests", "openai-project"):
        assert private not in response.headers


def test_success_body_passes_through_byte_for_byte(gateway_url: str) -> None:
    response = httpx.post(
        f"{gateway_url}/v1/chat/completions",
        json={"model": "exact-body", "messages": MESSAGES},
        headers={"Authorization": f"Bearer {ALICE}"},
    )
    assert response.status_code == 200, response.text
    assert response.content == EXACT_BODY


@pytest.mark.anyio
async def test_async_client_plain_and_streamed(gateway_url: str) -> None:
    async with openai.AsyncOpenAI(
        base_url=f"{gateway_url}/v1", api_key=ALICE, max_retries=0
    ) as client:
        completion = await client.chat.completions.create(model="gpt-test", messages=MESSAGES)
        assert completion.choices[0].message.content
        stream = await client.chat.completions.create(
            model="gpt-test", messages=MESSAGES, stream=True
        )
        texts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        assert len(texts) > 1 and "".join(texts)


def test_other_operations_reach_their_own_backend_routes(
    client: openai.OpenAI, backend: tuple[FakeOpenAI, str]
) -> None:
    fake, _ = backend
    before = len(fake.requests)
    client.completions.create(model="gpt-test", prompt="hi")
    client.embeddings.create(model="gpt-test", input="hi")
    assert [r.path for r in fake.requests[before:]] == ["/v1/completions", "/v1/embeddings"]


def test_streams_are_relayed_chunk_by_chunk(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True))
    assert len(chunks) > 1
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_backend_4xx_reaches_the_client_unchanged(
    gateway_url: str, client: openai.OpenAI, backend: tuple[FakeOpenAI, str]
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="reject-400", messages=MESSAGES)
    assert raised.value.param == "temperature"
    assert raised.value.code == "invalid_value"
    assert raised.value.response.headers["x-backend-request-id"].startswith("req_fake_")


@pytest.mark.parametrize(("model", "status"), [("fail-500", 502), ("bad-json", 502), ("slow", 504)])
def test_backend_failures_are_gateway_errors_without_secrets(
    gateway_url: str, backend: tuple[FakeOpenAI, str], model: str, status: int
) -> None:
    response = httpx.post(
        f"{gateway_url}/v1/chat/completions",
        json={"model": model, "messages": MESSAGES},
        headers={"Authorization": f"Bearer {ALICE}"},
        timeout=30,
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert model in error["message"]
    assert "internal secret detail" not in response.text
    _assert_clean(response, backend[1])


@pytest.mark.parametrize("model", ["cut-stream", "error-stream"])
def test_broken_streams_end_in_an_error_the_client_raises(
    client: openai.OpenAI, model: str
) -> None:
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(model=model, messages=MESSAGES, stream=True):
            pass


def test_client_disconnect_cancels_the_backend_stream(
    client: openai.OpenAI, backend: tuple[FakeOpenAI, str]
) -> None:
    fake, _ = backend
    fake.stream_cancelled.clear()
    stream = client.chat.completions.create(model="hang-stream", messages=MESSAGES, stream=True)
    next(iter(stream))
    stream.close()
    assert fake.stream_cancelled.wait(timeout=20), "the backend never saw the stream cancelled"


def test_unreachable_backend_is_502(tmp_path: Path) -> None:
    fixtures = write_fixtures(
        tmp_path / "fixtures",
        [
            {
                "cluster_name": "gone",
                "frameworks": ["api"],
                "openai_endpoints": ["chat/completions"],
                "cluster_adapter": "adaptors.clusters.openai_compatible.OpenAICompatibleCluster",
                "config": {"api_url": "http://127.0.0.1:9/v1"},
            }
        ],
        [
            {
                "endpoint_slug": "gone-api-m",
                "cluster": "gone",
                "framework": "api",
                "model": "m",
                "endpoint_adapter": "adaptors.endpoints.direct_api.DirectAPIEndpoint",
                "config": {"api_url": "http://127.0.0.1:9/v1", "api_key_env_name": KEY_ENV},
            }
        ],
    )
    with running_gateway(fixtures, write_tokens(tmp_path)) as url:
        response = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "m", "messages": MESSAGES},
            headers={"Authorization": f"Bearer {ALICE}"},
        )
        assert response.status_code == 502
        assert "127.0.0.1:9" not in response.text
        jobs = httpx.get(
            f"{url}/resource_server/gone/jobs", headers={"Authorization": f"Bearer {ALICE}"}
        )
        assert jobs.status_code in (502, 503)
