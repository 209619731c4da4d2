"""The fault battery: one backend misbehaves in every way we know, through a real `serve`
on both loops, and costs nothing but its own errors.

For each fault: the client gets the documented status and an OpenAI-shaped error (for a
stream that had started, as its last event) within the limit that applies, the access
log records the same error code, a normal request to a second, healthy backend is
answered promptly while the fault is in flight, and afterwards no connection is left
open at the misbehaving backend.  Then ten 50 MB answers at once leave the gateway's
memory where it was, and 200 requests hanging on one backend leave the other backend
answering every request.

The limits are short so the battery stays fast: connect, first byte and stream idle
1 s, total 2 s, a 0.5 s wait for a connection, answers capped at 1 MiB.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest

from tests.support.gateway_server import ALICE, write_fixtures
from tests.support.misbehaving_backend import (
    MisbehavingBackend,
    refused_url,
    running_misbehaving_backend,
    unaccepting_url,
)
from tests.support.served_cli import ServedGateway, served_gateway

pytestmark = pytest.mark.e2e

LOOPS = ["asyncio", "trio"]
MiB = 1024 * 1024
SETTINGS = {
    "connect_timeout": "1",
    "first_byte_timeout": "1",
    "stream_idle_timeout": "1",
    "total_timeout": "2",
    "pool_wait_timeout": "0.5",
    "max_answer_bytes": str(MiB),
    "quotas": "false",
}
# Generous upper bounds over each limit (a loaded 2-core machine); each still far below
# what a fault would cost without its limit.
SLACK = 2.0
# The issue asks a healthy backend's answer within 50 ms while another misbehaves; the
# battery prints the medians it measured (5-35 ms here).  Asserted with room for a
# shared 2-core machine, where the test process's own threads (the backends) compete
# with the client: still far below every fault's limit, so no answer waited on a fault.
PROMPT_BOUND = 0.25
PROBES = 5
HEALTHY = "healthy-model"


@attrs.frozen(kw_only=True)
class Case:
    name: str
    behaviour: str
    options: dict[str, object] = attrs.field(factory=dict)
    stream: bool = False
    status: int
    code: str | None  # the error's code; None: the answer (or stream) succeeded
    limit: float  # the configured limit that ends it (0: nothing to wait for)


CASES = [
    Case(
        name="refuses connections", behaviour="refused", status=502, code="backend_error", limit=0
    ),
    Case(
        name="never accepts (accept queue full)",
        behaviour="unaccepting",
        status=504,
        code="backend_connect_timeout",
        limit=1,
    ),
    Case(
        name="accepts, never answers",
        behaviour="silent",
        status=504,
        code="backend_first_byte_timeout",
        limit=1,
    ),
    Case(
        name="accepts, never answers (stream)",
        behaviour="silent",
        stream=True,
        status=504,
        code="backend_first_byte_timeout",
        limit=1,
    ),
    Case(
        name="HTTP 500",
        behaviour="status",
        options={"code": 500},
        status=502,
        code="backend_error",
        limit=0,
    ),
    Case(
        name="HTTP 502",
        behaviour="status",
        options={"code": 502},
        status=502,
        code="backend_error",
        limit=0,
    ),
    Case(
        name="HTTP 503",
        behaviour="status",
        options={"code": 503},
        status=503,
        code="backend_unavailable",
        limit=0,
    ),
    # The backend's own OpenAI-shaped 4xx reaches the client as it was.
    Case(
        name="HTTP 429",
        behaviour="status",
        options={"code": 429},
        status=429,
        code="rate_limited",
        limit=0,
    ),
    Case(
        name="invalid JSON",
        behaviour="invalid-json",
        status=502,
        code="malformed_backend_response",
        limit=0,
    ),
    Case(
        name="invalid JSON event (stream)",
        behaviour="invalid-json",
        stream=True,
        status=200,
        code="backend_invalid_response",
        limit=0,
    ),
    Case(
        name="wrong JSON shape",
        behaviour="wrong-shape",
        status=502,
        code="backend_invalid_response",
        limit=0,
    ),
    Case(name="answer cut half-way", behaviour="cut", status=502, code="backend_error", limit=0),
    Case(
        name="stream cut half-way",
        behaviour="cut",
        stream=True,
        status=200,
        code="backend_error",
        limit=0,
    ),
    Case(
        name="answer hanging mid-way", behaviour="hang", status=504, code="backend_timeout", limit=2
    ),
    Case(
        name="stream hanging mid-way",
        behaviour="hang",
        stream=True,
        status=200,
        code="backend_stream_idle_timeout",
        limit=1,
    ),
    Case(
        name="one byte per second",
        behaviour="drip",
        options={"every": 1},
        status=504,
        code="backend_timeout",
        limit=2,
    ),
    Case(
        name="50 MB answer (Content-Length)",
        behaviour="huge",
        status=502,
        code="backend_answer_too_large",
        limit=0,
    ),
    Case(
        name="50 MB answer (chunked)",
        behaviour="huge",
        options={"chunked": 1},
        status=502,
        code="backend_answer_too_large",
        limit=0,
    ),
    Case(
        name="healthy stream slower than the total (6 chunks, 0.5 s apart)",
        behaviour="slow-stream",
        options={"every": 0.5, "chunks": 6},
        stream=True,
        status=200,
        code=None,
        limit=2.5,
    ),
    Case(name="connection reset", behaviour="reset", status=502, code="backend_error", limit=0),
]


@attrs.frozen(kw_only=True)
class Outcome:
    status: int
    code: str | None
    error: dict[str, Any] | None
    done: bool  # a stream that ended with [DONE]
    seconds: float


def _model(index: int) -> str:
    return f"fault-{index}"


def _fixtures(
    folder: Path, bad: MisbehavingBackend, good: MisbehavingBackend, unaccepting: str = ""
) -> Path:
    cluster = {
        "cluster_name": "battery",
        "frameworks": ["api"],
        "openai_endpoints": ["chat/completions"],
        "cluster_adapter": "adaptors.clusters.openai_compatible.OpenAICompatibleCluster",
        "config": {"api_url": good.url_for("ok")},
    }

    def endpoint(model: str, url: str) -> dict[str, Any]:
        return {
            "endpoint_slug": f"battery-{model}",
            "cluster": "battery",
            "framework": "api",
            "model": model,
            "endpoint_adapter": "adaptors.endpoints.direct_api.DirectAPIEndpoint",
            "config": {"api_url": url, "api_key_env_name": "UNSET_KEY"},
        }

    elsewhere = {"refused": refused_url(), "unaccepting": unaccepting or refused_url()}
    endpoints = [endpoint(HEALTHY, good.url_for("ok"))]
    for index, case in enumerate(CASES):
        url = elsewhere.get(case.behaviour) or bad.url_for(case.behaviour, **case.options)
        endpoints.append(endpoint(_model(index), url))
    return write_fixtures(folder / "fixtures", [cluster], endpoints)


def _chat(model: str, stream: bool = False) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}


def _call(client: httpx.Client, url: str, model: str, stream: bool, request_id: str) -> Outcome:
    """One request, read to its end; the error is the body's, or a stream's last event's."""
    started = time.monotonic()
    headers = {"authorization": f"Bearer {ALICE}", "x-request-id": request_id}
    with client.stream(
        "POST", f"{url}/v1/chat/completions", json=_chat(model, stream), headers=headers
    ) as response:
        body = response.read()
    seconds = time.monotonic() - started
    error: dict[str, Any] | None = None
    done = False
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        for line in body.decode().splitlines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                event = json.loads(line[6:])
                error = event.get("error", error)
    elif response.status_code != 200:
        error = response.json()["error"]
    code = None if error is None else error.get("code")
    return Outcome(status=response.status_code, code=code, error=error, done=done, seconds=seconds)


def _assert_openai_error(error: dict[str, Any]) -> None:
    assert set(error) >= {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    for leak in ("127.0.0.1", "http://", "secret"):
        assert leak not in error["message"], error["message"]


def _probe(client: httpx.Client, url: str) -> float:
    """One normal request to the healthy backend; its time to the whole answer."""
    started = time.monotonic()
    answer = client.post(
        f"{url}/v1/chat/completions",
        json=_chat(HEALTHY),
        headers={"authorization": f"Bearer {ALICE}"},
    )
    seconds = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"]
    return seconds


@pytest.fixture
def backends() -> Iterator[tuple[MisbehavingBackend, MisbehavingBackend]]:
    with running_misbehaving_backend() as bad, running_misbehaving_backend() as good:
        yield bad, good


ROWS: list[str] = []


@pytest.mark.timeout(300)
@pytest.mark.parametrize("loop", LOOPS)
def test_each_fault_costs_only_its_own_error(
    tmp_path: Path, loop: str, backends: tuple[MisbehavingBackend, MisbehavingBackend]
) -> None:
    bad, good = backends
    expected_codes: dict[str, str | None] = {}
    with (
        unaccepting_url() as unaccepting,
        served_gateway(
            tmp_path, _fixtures(tmp_path, bad, good, unaccepting), loop=loop, settings=SETTINGS
        ) as gateway,
        httpx.Client(timeout=60) as client,
    ):
        _probe(client, gateway.url)  # warm: the first request pays for imports
        rss_before = gateway.rss_bytes()
        for index, case in enumerate(CASES):
            request_id = f"battery-{loop}-{index}"
            seen = bad.seen
            outcome: list[Outcome] = []
            fault = threading.Thread(
                target=lambda model, stream, rid, out: out.append(
                    _call(client, gateway.url, model, stream, rid)
                ),
                args=(_model(index), case.stream, request_id, outcome),
            )
            fault.start()
            if case.behaviour not in ("refused", "unaccepting"):
                assert bad.wait_for_requests(seen + 1, timeout=10), case.name
            probes = [_probe(client, gateway.url) for _ in range(PROBES)]
            fault.join(60)
            assert outcome, f"{case.name}: no answer"
            got = outcome[0]

            assert (got.status, got.code) == (case.status, case.code), (case.name, got)
            if case.code is None:
                assert got.done, f"{case.name}: the stream did not end with [DONE]"
            else:
                assert got.error is not None
                _assert_openai_error(got.error)
                assert not got.done, f"{case.name}: an error stream must not end cleanly"
            assert got.seconds < case.limit + SLACK, (case.name, got.seconds)
            if case.limit and case.code is not None:
                assert got.seconds >= case.limit * 0.9, (case.name, got.seconds)
            assert statistics.median(probes) < PROMPT_BOUND, (case.name, probes)
            assert bad.wait_until_idle(timeout=10), f"{case.name}: connections left open"
            expected_codes[request_id] = case.code
            ROWS.append(
                f"| {loop} | {case.name} | {got.status} | {got.code or '-'} | "
                f"{got.seconds:.2f} s | {statistics.median(probes) * 1000:.1f} ms |"
            )
        rss_after = gateway.rss_bytes()
        log = _wait_for_log(gateway, set(expected_codes))
    for request_id, code in expected_codes.items():
        assert log[request_id]["error_code"] == code, (request_id, log[request_id])
    # Two 50 MB answers went by: neither stayed in memory.
    assert rss_after - rss_before < 32 * MiB, (rss_before, rss_after)
    print("\n" + "\n".join(ROWS[-len(CASES) :]))
    print(f"{loop}: gateway RSS {rss_before / MiB:.1f} MiB -> {rss_after / MiB:.1f} MiB")


def _wait_for_log(gateway: ServedGateway, ids: set[str]) -> dict[str, dict[str, Any]]:
    """The access log once it holds every one of `ids` (each line is written as its
    request ends, which can be just after the client has the last byte)."""
    deadline = time.monotonic() + 10
    while True:
        log = gateway.access_log()
        if ids <= set(log) or time.monotonic() > deadline:
            return log
        time.sleep(0.05)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("loop", LOOPS)
def test_ten_fifty_megabyte_answers_at_once_leave_no_memory_behind(
    tmp_path: Path, loop: str, backends: tuple[MisbehavingBackend, MisbehavingBackend]
) -> None:
    bad, good = backends
    fixtures = _fixtures(tmp_path, bad, good)
    chunked = next(i for i, c in enumerate(CASES) if c.options.get("chunked"))
    with served_gateway(tmp_path, fixtures, loop=loop, settings=SETTINGS) as gateway:
        with httpx.Client(timeout=60) as client:
            _probe(client, gateway.url)
        before = gateway.rss_bytes()

        async def ten() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=60) as client:
                return await asyncio.gather(
                    *(
                        client.post(
                            f"{gateway.url}/v1/chat/completions",
                            json=_chat(_model(chunked)),
                            headers={"authorization": f"Bearer {ALICE}"},
                        )
                        for _ in range(10)
                    )
                )

        answers = asyncio.run(ten())
        after = gateway.rss_bytes()
        assert bad.wait_until_idle(timeout=10)
    assert [a.status_code for a in answers] == [502] * 10
    assert {a.json()["error"]["code"] for a in answers} == {"backend_answer_too_large"}
    assert str(MiB) in answers[0].json()["error"]["message"]  # it names the limit
    # Ten answers of 50 MB read at most 1 MiB each: memory grows by far less than one.
    assert after - before < 48 * MiB, (before / MiB, after / MiB)
    print(f"\n{loop}: ten 50 MB answers at once, RSS {before / MiB:.1f} -> {after / MiB:.1f} MiB")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("loop", LOOPS)
def test_two_hundred_requests_hanging_on_one_backend_leave_the_other_answering(
    tmp_path: Path, loop: str, backends: tuple[MisbehavingBackend, MisbehavingBackend]
) -> None:
    """The default 100 connections per backend: 100 hang until their first-byte limit (10 s),
    the other 100 are refused as the gateway's saturation (503, not a backend timeout)
    after the pool wait, and the healthy backend answers every request meanwhile."""
    bad, good = backends
    fixtures = _fixtures(tmp_path, bad, good)
    silent = next(i for i, c in enumerate(CASES) if c.behaviour == "silent" and not c.stream)
    settings = {**SETTINGS, "first_byte_timeout": "10", "total_timeout": "11"}
    with served_gateway(tmp_path, fixtures, loop=loop, settings=settings) as gateway:
        with httpx.Client(timeout=60) as client:
            _probe(client, gateway.url)

        async def run() -> tuple[list[httpx.Response], list[float]]:
            limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
            async with (
                httpx.AsyncClient(timeout=60, limits=limits) as client,
                httpx.AsyncClient(timeout=60) as prober,
            ):
                auth = {"authorization": f"Bearer {ALICE}"}

                async def hanging() -> httpx.Response:
                    return await client.post(
                        f"{gateway.url}/v1/chat/completions",
                        json=_chat(_model(silent)),
                        headers={**auth, "x-request-id": uuid.uuid4().hex},
                    )

                async def healthy() -> list[float]:
                    """Probes while the burst arrives and is refused (each answered: how
                    fast depends on the machine's load more than on the gateway), then,
                    once only the hanging requests are left, the probes whose times are
                    held to the bound."""
                    await asyncio.to_thread(bad.wait_for_connections, 100, 30)
                    for _ in range(10):
                        await probe()
                    while sum(t.done() for t in hung) < 100:  # the refused half is back
                        pending = [t for t in hung if not t.done()]
                        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    settled = time.monotonic()
                    times = [await probe() for _ in range(30)]
                    still = bad.open_connections
                    assert still == 100, (still, time.monotonic() - settled, sorted(times)[-3:])
                    return times

                async def probe() -> float:
                    started = time.monotonic()
                    answer = await prober.post(
                        f"{gateway.url}/v1/chat/completions", json=_chat(HEALTHY), headers=auth
                    )
                    assert answer.status_code == 200, answer.text
                    return time.monotonic() - started

                hung = [asyncio.create_task(hanging()) for _ in range(200)]
                times = await healthy()
                return list(await asyncio.gather(*hung)), times

        answers, times = asyncio.run(run())
        assert bad.wait_until_idle(timeout=15)
    codes = [(a.status_code, a.json()["error"]["code"]) for a in answers]
    saturated = codes.count((503, "gateway_saturated"))
    timed_out = codes.count((504, "backend_first_byte_timeout"))
    # Once five saturated waits in a row have failed, the endpoint's breaker opens and
    # the rest are refused at once (`circuit_open`) instead of waiting for the pool.
    broken = codes.count((503, "circuit_open"))
    assert saturated + timed_out + broken == 200, set(codes)
    assert timed_out == 100 and saturated >= 1, (timed_out, saturated, broken)
    refusal = next(a for a in answers if a.json()["error"]["code"] == "gateway_saturated")
    assert refusal.headers["retry-after"] == "1"
    assert "saturated" in refusal.json()["error"]["message"]
    assert statistics.median(times) < PROMPT_BOUND, times
    assert max(times) < 5.0, times  # none waited for the hanging backend's 10 s
    print(
        f"\n{loop}: 200 hanging -> {timed_out} x 504 first byte, {saturated} x 503 saturated, "
        f"{broken} x 503 circuit open; "
        f"healthy median {statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms"
    )
