"""The request log, wired in, on SQLite and PostgreSQL: requests through a real gateway
server (in front of a real fake-OpenAI backend) each leave exactly one record with the
right fields; usage over HTTP (own, or everyone's for an operator) and on the command
line; the writer's counts in health."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from core import Identity
from frontends.assembly import build_gateway
from frontends.embedding import FixedIdentity, open_gateway
from frontends.identity import StaticKeys
from frontends.request_log import RequestLog
from frontends.store import LINGER, RequestRecord, Store
from frontends.store._schema import request_log
from frontends.usage import Operators
from frontends.web import create_app
from tests.support.fake_openai import FakeOpenAI, running_fake_openai
from tests.support.gateway_server import ALICE, BOB, write_fixtures, write_tokens
from tests.support.servers import serve_app
from transports.httpx_transport import HttpxTransport

pytestmark = pytest.mark.e2e

KEY_ENV = "IGW_TEST_WIRING_KEY"
MODELS = ["gpt-test", "fail-500", "hang-stream"]
MESSAGES = [{"role": "user", "content": "Hello backend"}]
ROOT = Path(__file__).resolve().parents[2]
EMBEDDED = {"Authorization": "Bearer embedded"}


@pytest.fixture(scope="module")
def backend() -> Iterator[tuple[FakeOpenAI, str]]:
    with running_fake_openai(models=MODELS) as running:
        yield running


@pytest.fixture
def fixtures(backend: tuple[FakeOpenAI, str], tmp_path: Path) -> Path:
    _, backend_url = backend
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
            },
        }
        for model in MODELS
    ]
    return write_fixtures(tmp_path / "fixtures", [cluster], endpoints)


@contextmanager
def logged_gateway(
    fixtures: Path,
    database_url: str,
    *,
    capture_limit: int | None = None,
    operators: Operators | None = None,
    stream_usage: bool = False,
    linger: float = LINGER,
) -> Iterator[str]:
    """A gateway server whose request log is `database_url`; on leaving, the server has
    stopped and its log is flushed."""
    tokens = write_tokens(fixtures.parent)
    gateway = build_gateway(
        fixtures,
        identity=StaticKeys.from_file(tokens),
        transport=HttpxTransport(),
        environ={KEY_ENV: "sk-test-wiring"},
        capture_limit=capture_limit,
        stream_usage=stream_usage,
    )
    log = RequestLog.open(database_url, capture_limit=capture_limit, linger=linger)
    with serve_app(create_app(gateway, request_log=log, operators=operators)) as url:
        yield url


def records(database_url: str) -> list[RequestRecord]:
    store = Store.connect(database_url)
    try:
        with store.engine.connect() as connection:
            rows = connection.execute(sa.select(request_log)).mappings().all()
        names = [c.name for c in request_log.columns]
        return [RequestRecord(**{name: row[name] for name in names}) for row in rows]
    finally:
        store.close()


def post(url: str, body: dict[str, object], *, token: str = ALICE, rid: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        content=json.dumps(body).encode(),
        headers={
            "Authorization": f"Bearer {token}",
            "X-Request-ID": rid,
            "Content-Type": "application/json",
        },
        timeout=30,
    )


def test_every_request_leaves_exactly_one_record(fixtures: Path, database_url: str) -> None:
    chat = {"model": "gpt-test", "messages": MESSAGES}
    with logged_gateway(fixtures, database_url) as url:
        ok = post(url, chat, rid="r-ok")
        with httpx.stream(
            "POST",
            f"{url}/v1/chat/completions",
            json={**chat, "stream": True},
            headers={"Authorization": f"Bearer {ALICE}", "X-Request-ID": "r-stream"},
        ) as streamed:
            streamed_bytes = streamed.read()
        unknown_key = post(url, chat, token="igw-not-a-key", rid="r-401")
        unknown_model = post(url, {**chat, "model": "no-such-model"}, rid="r-404")
        failing = post(url, {**chat, "model": "fail-500"}, rid="r-502")
    statuses = [r.status_code for r in (ok, streamed, unknown_key, unknown_model, failing)]
    assert statuses == [200, 200, 401, 404, 502]

    logged = records(database_url)
    by_request = {r.request_id: r for r in logged}
    assert sorted(by_request) == ["r-401", "r-404", "r-502", "r-ok", "r-stream"]
    assert len(logged) == 5 and len({r.id for r in logged}) == 5

    whole = by_request["r-ok"]
    usage = ok.json()["usage"]
    assert (whole.status, whole.route, whole.streamed) == (200, "chat/completions", False)
    assert (whole.username, whole.identity_provider) == ("alice@example.org", "static")
    assert (whole.cluster, whole.framework, whole.model) == ("fake", "api", "gpt-test")
    assert whole.endpoint_slug == "fake-api-gpt-test"
    assert (whole.prompt_tokens, whole.completion_tokens, whole.total_tokens) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
        usage["total_tokens"],
    )
    assert whole.tokens_estimated is False
    assert whole.bytes_in == len(json.dumps(chat).encode())
    assert whole.bytes_out == len(ok.content)
    assert whole.client_address == "127.0.0.1"
    assert whole.first_byte_at is not None and whole.done_at is not None
    assert whole.received_at <= whole.first_byte_at <= whole.done_at
    assert (whole.prompt, whole.response) == (None, None)  # capture is off by default
    assert (whole.cancelled, whole.error_code, whole.detail) == (False, None, None)

    stream = by_request["r-stream"]
    assert (stream.status, stream.streamed, stream.model) == (200, True, "gpt-test")
    # The fake backend reports no usage in streams: the gateway's estimate, so marked.
    assert stream.tokens_estimated is True and stream.total_tokens
    assert stream.bytes_out == len(streamed_bytes)
    # The record's id is the request_log_id the adaptor was handed (it names the task).
    assert stream.backend_task_id == stream.id

    refused = by_request["r-401"]
    assert (refused.status, refused.username, refused.model) == (401, None, None)
    assert refused.total_tokens is None and refused.error_code
    missing = by_request["r-404"]
    assert (missing.status, missing.username, missing.model) == (404, "alice@example.org", None)
    failed = by_request["r-502"]
    assert (failed.status, failed.model, failed.total_tokens) == (502, "fail-500", None)
    assert failed.detail is not None and "500" in failed.detail


def test_a_stream_whose_backend_reports_usage_is_recorded_with_it(
    fixtures: Path, database_url: str
) -> None:
    chat = {"model": "gpt-test", "messages": MESSAGES}
    with logged_gateway(fixtures, database_url, stream_usage=True) as url:
        whole = post(url, chat, rid="whole").json()["usage"]
        with httpx.stream(
            "POST",
            f"{url}/v1/chat/completions",
            json={**chat, "stream": True},
            headers={"Authorization": f"Bearer {ALICE}", "X-Request-ID": "counted"},
        ) as streamed:
            streamed.read()
    counted = {r.request_id: r for r in records(database_url)}["counted"]
    # The fake counts a stream's tokens as it counts the same request answered whole.
    assert (counted.streamed, counted.tokens_estimated) == (True, False)
    assert (counted.prompt_tokens, counted.completion_tokens, counted.total_tokens) == (
        whole["prompt_tokens"],
        whole["completion_tokens"],
        whole["total_tokens"],
    )


def test_a_stream_the_client_abandons_is_recorded_as_cancelled(
    fixtures: Path, database_url: str, backend: tuple[FakeOpenAI, str]
) -> None:
    fake, _ = backend
    fake.stream_cancelled.clear()
    body = {"model": "hang-stream", "messages": MESSAGES, "stream": True}
    with logged_gateway(fixtures, database_url) as url:
        with httpx.stream(
            "POST",
            f"{url}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {ALICE}", "X-Request-ID": "left"},
        ) as streamed:
            first = next(streamed.iter_raw())
        assert first.startswith(b"data: ")
        # The gateway saw the client go and cancelled the backend call.
        assert fake.stream_cancelled.wait(30)
    [left] = records(database_url)
    assert (left.request_id, left.streamed, left.cancelled) == ("left", True, True)
    assert left.model == "hang-stream" and left.bytes_out > 0


def test_capture_keeps_the_first_characters_of_prompt_and_answer_only_when_on(
    fixtures: Path, database_url: str
) -> None:
    chat = {"model": "gpt-test", "messages": MESSAGES}
    with logged_gateway(fixtures, database_url, capture_limit=24) as url:
        answer = post(url, chat, rid="captured")
        with httpx.stream(
            "POST",
            f"{url}/v1/chat/completions",
            json={**chat, "stream": True},
            headers={"Authorization": f"Bearer {ALICE}", "X-Request-ID": "captured-stream"},
        ) as streamed:
            relayed = streamed.read()
    by_request = {r.request_id: r for r in records(database_url)}
    assert by_request["captured"].prompt == json.dumps(chat)[:24]
    assert by_request["captured"].response == answer.text[:24]
    assert by_request["captured-stream"].response == relayed.decode()[:24]


def test_usage_route_gives_callers_their_own_and_operators_everyones(
    fixtures: Path, database_url: str
) -> None:
    chat = {"model": "gpt-test", "messages": MESSAGES}
    operators = Operators.of(["group:g-physics"])  # alice is in g-physics, bob is not
    with logged_gateway(fixtures, database_url, operators=operators) as url:
        alice_tokens = post(url, chat, rid="a1").json()["usage"]["total_tokens"]
        post(url, chat, rid="a2")
        bob_tokens = post(url, chat, token=BOB, rid="b1").json()["usage"]["total_tokens"]

        def usage(token: str, query: str = "") -> httpx.Response:
            return httpx.get(
                f"{url}/resource_server/usage{query}",
                headers={"Authorization": f"Bearer {token}"},
            )

        own = usage(BOB)
        assert own.status_code == 200
        assert own.json()["data"] == [
            {
                "key": "bob@elsewhere.net",
                "requests": 1,
                "prompt_tokens": own.json()["data"][0]["prompt_tokens"],
                "completion_tokens": own.json()["data"][0]["completion_tokens"],
                "total_tokens": bob_tokens,
                "estimated_tokens": 0,
            }
        ]
        assert usage(BOB, "?all=true").status_code == 403
        assert usage(BOB, "?user=alice@example.org").status_code == 403
        everyone = usage(ALICE, "?all=true").json()["data"]
        assert {row["key"]: row["requests"] for row in everyone} == {
            "alice@example.org": 2,
            "bob@elsewhere.net": 1,
        }
        by_model = usage(ALICE, "?by=model").json()["data"]
        assert by_model == [
            {
                "key": "gpt-test",
                "requests": 2,
                "prompt_tokens": by_model[0]["prompt_tokens"],
                "completion_tokens": by_model[0]["completion_tokens"],
                "total_tokens": 2 * alice_tokens,
                "estimated_tokens": 0,
            }
        ]
        assert usage(ALICE, "?since=2999-01-01").json()["data"] == []
        assert usage(ALICE, "?by=week").status_code == 400
        assert usage("igw-not-a-key").status_code == 401
        health = httpx.get(f"{url}/resource_server/health").json()
    assert health["status"] == "ok"
    assert set(health["request_log"]) == {"queue_depth", "written", "dropped", "failed"}
    assert health["request_log"]["dropped"] == health["request_log"]["failed"] == 0


def test_usage_command_prints_the_table_after_known_traffic(
    fixtures: Path, database_url: str, tmp_path: Path
) -> None:
    chat = {"model": "gpt-test", "messages": MESSAGES}
    with logged_gateway(fixtures, database_url) as url:
        tokens = [post(url, chat, rid=f"c{n}").json()["usage"] for n in range(3)]
        post(url, chat, token=BOB, rid="c-bob")

    def usage(*args: str) -> list[list[str]]:
        env = {
            **os.environ,
            "INFERENCE_GATEWAY_DATABASE_URL": database_url,
            "INFERENCE_GATEWAY_STATE_DIR": str(tmp_path / "state"),
        }
        done = subprocess.run(
            [sys.executable, "-m", "frontends.cli", "usage", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return [line.split() for line in done.stdout.splitlines()]

    prompt = sum(t["prompt_tokens"] for t in tokens)
    completion = sum(t["completion_tokens"] for t in tokens)
    total = sum(t["total_tokens"] for t in tokens)
    assert usage("--user", "alice@example.org", "--by", "model") == [
        ["model", "requests", "prompt", "completion", "total", "estimated"],
        ["gpt-test", "3", str(prompt), str(completion), str(total), "0"],
        ["total", "3", str(prompt), str(completion), str(total), "0"],
    ]
    by_user = usage("--since", "2020-01-01")
    assert [row[:2] for row in by_user] == [
        ["user", "requests"],
        ["alice@example.org", "3"],
        ["bob@elsewhere.net", "1"],
        ["total", "4"],
    ]
    days = usage("--by", "day", "--model", "gpt-test")
    assert len(days) == 3 and days[1][1] == "4"


@pytest.mark.anyio
async def test_an_embedded_gateway_given_a_store_records_every_request(
    fixtures: Path, database_url: str
) -> None:
    chat = {"model": "gpt-test", "messages": MESSAGES}
    async with open_gateway(
        fixtures,
        identity=FixedIdentity(Identity(username="ada@example.org")),
        environ={KEY_ENV: "sk-test-wiring"},
        store=database_url,
    ) as gateway:
        reply = await gateway.request("chat/completions", chat, headers=EMBEDDED)
        stream = await gateway.request(
            "chat/completions", {**chat, "stream": True}, headers=EMBEDDED
        )
        events = [event async for event in stream.events()]
    assert reply.status == 200 and events[-1] == "[DONE]"
    logged = sorted(records(database_url), key=lambda r: r.streamed)
    assert [(r.username, r.streamed, r.status) for r in logged] == [
        ("ada@example.org", False, 200),
        ("ada@example.org", True, 200),
    ]
    assert logged[0].total_tokens == reply.json()["usage"]["total_tokens"]


@pytest.mark.parametrize(
    "url",
    ["mysql://user@127.0.0.1/db", "postgresql+psycopg://postgres@127.0.0.1:1/unreachable"],
    ids=["unsupported", "unreachable"],
)
def test_serve_refuses_to_start_on_a_database_it_cannot_use(tmp_path: Path, url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERENCE_GATEWAY_")}
    env.update(
        INFERENCE_GATEWAY_STATE_DIR=str(tmp_path / "state"),
        INFERENCE_GATEWAY_DATABASE_URL=url,
        PYTHONPATH=str(ROOT),
    )
    done = subprocess.run(
        [sys.executable, "-m", "frontends.cli", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "INFERENCE_GATEWAY_DATABASE_URL" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_callers_usage_counts_the_request_they_made_just_before_however_long_the_linger(
    fixtures: Path, database_url: str
) -> None:
    chat = {"model": "gpt-test", "messages": MESSAGES}
    with logged_gateway(fixtures, database_url, linger=3600) as url:
        for made in (1, 2, 3):
            post(url, chat, token=BOB, rid=f"b{made}")
            answer = httpx.get(
                f"{url}/resource_server/usage", headers={"Authorization": f"Bearer {BOB}"}
            )
            assert answer.status_code == 200
            assert [row["requests"] for row in answer.json()["data"]] == [made]
