"""Quotas through real gateways: 200 requests at once against a limit of 50 (counted in
process, and in Redis shared by two `inference-gateway serve` processes, one on asyncio
and one on trio), token reservations settled by streams that complete and by streams
the client abandons, and a Redis that cannot be reached."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from core import QuotaPolicy
from frontends.quota import InProcessCounters, QuotaCounters, RedisCounters
from tests.support.fake_openai import running_fake_openai
from tests.support.gateway_server import ALICE, running_gateway, write_tokens
from tests.support.quota import (
    REDIS_URL,
    closed_port_url,
    limited_fixtures,
    redis_prefix,
    serve_process,
)

pytestmark = pytest.mark.e2e
AUTH = {"Authorization": f"Bearer {ALICE}"}
HELLO = [{"role": "user", "content": "hello"}]  # a prompt estimated at 2 tokens


def _chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": HELLO, **extra}


async def _all_at_once(urls: list[str], body: dict[str, Any]) -> list[httpx.Response]:
    """One request per URL, all in flight together."""
    answers: list[httpx.Response] = []
    limits = httpx.Limits(max_connections=len(urls), max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one(url: str) -> None:
            answers.append(await client.post(f"{url}/v1/chat/completions", json=body, headers=AUTH))

        async with anyio.create_task_group() as tasks:
            for url in urls:
                tasks.start_soon(one, url)
    return answers


def _assert_fifty_of_two_hundred(answers: list[httpx.Response]) -> None:
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 50 + [429] * 150
    for refused in (a for a in answers if a.status_code == 429):
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        error = refused.json()["error"]
        assert error["code"] == "rate_limit_exceeded"
        assert error["type"] == "requests"
        assert "requests per minute per user: limit 50" in error["message"]


def test_two_hundred_requests_against_fifty_per_minute_in_process(tmp_path: Path) -> None:
    with running_fake_openai(models=["gpt-test"]) as (fake, backend_url):
        fixtures = limited_fixtures(tmp_path / "fixtures", backend_url, ["gpt-test"])
        with running_gateway(
            fixtures,
            write_tokens(tmp_path),
            quota=InProcessCounters(),
            quota_policy=QuotaPolicy(requests_per_minute_per_user=50),
        ) as url:
            answers = anyio.run(_all_at_once, [url] * 200, _chat("gpt-test"))
            health = httpx.get(f"{url}/resource_server/health").json()
        assert len(fake.requests) == 50  # the refused never reached the backend
    _assert_fifty_of_two_hundred(answers)
    assert (health["status"], health["quota"]) == ("ok", "in-process")


def test_two_hundred_requests_against_fifty_per_minute_shared_by_two_processes(
    tmp_path: Path,
) -> None:
    with (
        running_fake_openai(models=["gpt-test"]) as (fake, backend_url),
        redis_prefix() as prefix,
        ExitStack() as servers,
    ):
        fixtures = limited_fixtures(tmp_path / "fixtures", backend_url, ["gpt-test"])
        shared = {
            "redis_url": REDIS_URL,
            "redis_key_prefix": prefix,
            "requests_per_minute_per_user": "50",
        }
        urls = [
            servers.enter_context(serve_process(tmp_path, fixtures, loop, **shared))
            for loop in ("asyncio", "trio")
        ]
        answers = anyio.run(_all_at_once, urls * 100, _chat("gpt-test"))
        healths = [httpx.get(f"{url}/resource_server/health").json() for url in urls]
        # Completions only: a served gateway also reads the cluster's model list (status).
        assert len([r for r in fake.requests if r.method == "POST"]) == 50
    _assert_fifty_of_two_hundred(answers)
    admitted_by = {url: 0 for url in urls}
    for answer in answers:
        if answer.status_code == 200:
            admitted_by[str(answer.request.url).split("/v1/")[0]] += 1
    assert sum(admitted_by.values()) == 50
    # (Health also carries the request log's counters; the quota part is this test's.)
    quota_parts = [{k: h[k] for k in ("status", "quota")} for h in healths]
    assert quota_parts == [{"status": "ok", "quota": "redis"}] * 2


# -- token quotas: reservations and settlement -------------------------------------------

TPM_USER = 1000
BIG = 900  # max_tokens: 2 + 900 reserved, so two such requests cannot be held at once


@contextmanager
def _counters(kind: str) -> Iterator[QuotaCounters]:
    if kind == "in-process":
        yield InProcessCounters()
        return
    with redis_prefix() as prefix:
        yield RedisCounters(REDIS_URL, prefix=prefix)  # closed by the gateway


@pytest.mark.parametrize("kind", ["in-process", "redis"])
def test_a_completed_stream_settles_to_what_it_used(tmp_path: Path, kind: str) -> None:
    with (
        running_fake_openai(models=["gpt-test"]) as (_fake, backend_url),
        _counters(kind) as counters,
    ):
        fixtures = limited_fixtures(
            tmp_path / "fixtures", backend_url, ["gpt-test"], tpm_user=TPM_USER
        )
        with (
            running_gateway(fixtures, write_tokens(tmp_path), quota=counters) as url,
            httpx.Client(base_url=url, headers=AUTH, timeout=30) as client,
        ):
            streamed = client.post(
                "/v1/chat/completions", json=_chat("gpt-test", max_tokens=BIG, stream=True)
            )
            assert streamed.status_code == 200
            assert streamed.text.rstrip().endswith("data: [DONE]")
            # Against the 902 reserved it would not fit; against the few tokens used it does.
            again = client.post("/v1/chat/completions", json=_chat("gpt-test", max_tokens=BIG))
            assert again.status_code == 200, again.text


@pytest.mark.parametrize("kind", ["in-process", "redis"])
def test_an_abandoned_stream_gives_back_its_reservation(tmp_path: Path, kind: str) -> None:
    with (
        running_fake_openai(models=["hang-stream", "gpt-test"]) as (fake, backend_url),
        _counters(kind) as counters,
    ):
        fixtures = limited_fixtures(
            tmp_path / "fixtures", backend_url, ["hang-stream", "gpt-test"], tpm_user=TPM_USER
        )
        with (
            running_gateway(fixtures, write_tokens(tmp_path), quota=counters) as url,
            httpx.Client(base_url=url, headers=AUTH, timeout=30) as client,
        ):
            body = _chat("hang-stream", max_tokens=BIG, stream=True)
            with client.stream("POST", "/v1/chat/completions", json=body) as hanging:
                assert hanging.status_code == 200
                lines = hanging.iter_lines()  # held: dropping it would close the stream
                assert next(lines).startswith("data: ")
                # While the stream holds its 902 tokens, another 902 do not fit.
                held = client.post(
                    "/v1/chat/completions", json=_chat("hang-stream", max_tokens=BIG)
                )
                assert held.status_code == 429
                assert 1 <= int(held.headers["retry-after"]) <= 60
                assert held.json()["error"]["code"] == "rate_limit_exceeded"
            # The client left: the gateway settles the stream to its estimate and cancels
            # the backend call (which the backend sees).
            assert fake.stream_cancelled.wait(10)
            again = client.post("/v1/chat/completions", json=_chat("gpt-test", max_tokens=BIG))
            assert again.status_code == 200, again.text


def test_unreachable_redis_costs_no_request_and_health_says_so(tmp_path: Path) -> None:
    with running_fake_openai(models=["gpt-test"]) as (_fake, backend_url):
        fixtures = limited_fixtures(tmp_path / "fixtures", backend_url, ["gpt-test"])
        counters = RedisCounters(closed_port_url(), timeout=0.5)
        with (
            running_gateway(
                fixtures,
                write_tokens(tmp_path),
                quota=counters,
                quota_policy=QuotaPolicy(requests_per_minute_per_user=3),
            ) as url,
            httpx.Client(base_url=url, headers=AUTH, timeout=30) as client,
        ):
            answers = [
                client.post("/v1/chat/completions", json=_chat("gpt-test")) for _ in range(4)
            ]
            health = client.get("/resource_server/health").json()
    # Counted in process meanwhile: three answered, the fourth over the limit.
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert json.loads(answers[0].text)["object"] == "chat.completion"
    assert (health["status"], health["quota"]) == ("ok", "redis-unreachable, using in-process")
