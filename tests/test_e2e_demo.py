"""The embedded default, end to end: the repo's fixtures and the built-in demo backend,
through a real Hypercorn server, spoken to by the official `openai` client and raw HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.support.gateway_server import ALICE, REPO_FIXTURES, running_gateway, write_tokens

pytestmark = pytest.mark.e2e

CHAT = {"model": "demo-model", "messages": [{"role": "user", "content": "Hello there"}]}


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tokens = write_tokens(tmp_path_factory.mktemp("tokens"))
    with running_gateway(REPO_FIXTURES, tokens) as url:
        yield url


@pytest.fixture
def client(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key=ALICE, max_retries=0) as c:
        yield c


def test_chat_completion_answers_from_the_demo_model(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(**CHAT)
    assert completion.model == "demo-model"
    assert "Hello there" in (completion.choices[0].message.content or "")
    assert completion.usage is not None and completion.usage.total_tokens > 0


def test_streamed_chat_completion_yields_every_chunk(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(**CHAT, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) > 2
    assert "Hello there" in text
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_stream_usage_chunk_when_asked(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(**CHAT, stream=True, stream_options={"include_usage": True})
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_completions_and_embeddings(client: openai.OpenAI) -> None:
    completion = client.completions.create(model="demo-model", prompt="Say hi")
    assert completion.choices[0].text
    streamed = list(client.completions.create(model="demo-model", prompt="Say hi", stream=True))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == completion.choices[0].text
    embedding = client.embeddings.create(model="demo-model", input=["a", "b"], dimensions=8)
    assert [len(d.embedding) for d in embedding.data] == [8, 8]


@pytest.mark.anyio
async def test_async_client_plain_and_streamed(base_url: str) -> None:
    async with openai.AsyncOpenAI(
        base_url=f"{base_url}/v1", api_key=ALICE, max_retries=0
    ) as client:
        completion = await client.chat.completions.create(**CHAT)
        assert "Hello there" in (completion.choices[0].message.content or "")
        stream = await client.chat.completions.create(**CHAT, stream=True)
        texts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        assert "Hello there" in "".join(texts)


def test_alcf_route_reaches_the_same_backend(base_url: str) -> None:
    with openai.OpenAI(
        base_url=f"{base_url}/resource_server/local/demo/v1", api_key=ALICE, max_retries=0
    ) as client:
        completion = client.chat.completions.create(**CHAT)
        assert "Hello there" in (completion.choices[0].message.content or "")


def test_stream_headers_disable_buffering(base_url: str) -> None:
    headers = {"Authorization": f"Bearer {ALICE}"}
    with httpx.stream(
        "POST", f"{base_url}/v1/chat/completions", json={**CHAT, "stream": True}, headers=headers
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        body = response.read()
    assert body.rstrip().endswith(b"data: [DONE]")


def test_missing_token_is_401_with_a_bearer_challenge(base_url: str) -> None:
    response = httpx.post(f"{base_url}/v1/chat/completions", json=CHAT)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"]["type"] == "authentication_error"
    with (
        openai.OpenAI(base_url=f"{base_url}/v1", api_key="wrong-token", max_retries=0) as client,
        pytest.raises(openai.AuthenticationError),
    ):
        client.chat.completions.create(**CHAT)


def test_unknown_model_is_404_listing_what_the_caller_may_use(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="no-such-model", messages=CHAT["messages"])
    assert "demo-model" in str(raised.value)
    assert raised.value.code == "model_not_found"


def test_validation_errors_name_the_parameter(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="demo-model", messages=[])
    assert raised.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as raised:
        client.embeddings.create(model="demo-model", input="x", extra_body={"stream": True})
    assert raised.value.param == "stream"


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status"),
    [
        ("POST", "/v1/chat/completions", {"Content-Type": "application/json"}, b"{not json", 400),
        ("POST", "/v1/chat/completions", {"Content-Type": "application/json"}, b"", 400),
        ("POST", "/v1/chat/completions", {"Content-Type": "text/plain"}, b"{}", 415),
        ("POST", "/v1/chat/completions", {"Content-Type": "application/json"}, b"[1]", 400),
        ("POST", "/v1/no-such-route", {}, b"{}", 404),
        ("GET", "/v1/chat/completions", {}, b"", 405),
        ("POST", "/resource_server/local/demo/v1/audio/speech", {}, b"{}", 404),
    ],
)
def test_bad_requests_get_openai_shaped_errors(
    base_url: str, method: str, path: str, headers: dict[str, str], body: bytes, status: int
) -> None:
    response = httpx.request(
        method,
        base_url + path,
        content=body,
        headers={"Authorization": f"Bearer {ALICE}", **headers},
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert "Traceback" not in response.text


def test_listings(base_url: str, client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["demo-model"]
    assert client.models.retrieve("demo-model").id == "demo-model"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("meta-llama/not-here")
    auth = {"Authorization": f"Bearer {ALICE}"}
    listing = httpx.get(f"{base_url}/resource_server/list-endpoints", headers=auth).json()
    demo = listing["clusters"]["local"]["frameworks"]["demo"]
    assert demo["models"][0]["model"] == "demo-model"
    jobs = httpx.get(f"{base_url}/resource_server/local/jobs", headers=auth).json()
    assert [job["Models"] for job in jobs["running"]] == ["demo-model"]
    assert httpx.get(f"{base_url}/resource_server/nowhere/jobs", headers=auth).status_code == 404
    assert httpx.get(f"{base_url}/resource_server/list-endpoints").status_code == 401
    health = httpx.get(f"{base_url}/resource_server/health").json()
    assert health["status"] == "ok"
    demo_endpoint = health["clusters"]["local"]["endpoints"]["local-demo-demo-model"]
    assert demo_endpoint["breaker"] == "closed"
    assert demo_endpoint["outstanding"] == 0
