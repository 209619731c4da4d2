"""Two replicas behind nginx on loopback, sharing the machine's PostgreSQL and Redis, as
`python -m deploy.topology` starts them: a quota holds across both, a batch made through
one is seen, polled and cancelled through the other and runs once, and a replica that
dies, between bursts or during load, costs no request that had not reached it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import openai
import pytest

from deploy.topology import Topology, nginx_config, running_topology
from tests.support.databases import scratch_postgres_database
from tests.support.fake_openai import FakeOpenAI, running_fake_openai
from tests.support.gated_openai import MODEL as GATED
from tests.support.gated_openai import running_gated_openai
from tests.support.gateway_server import ALICE, write_tokens
from tests.support.quota import REDIS_URL, limited_fixtures, redis_prefix

pytestmark = pytest.mark.e2e
AUTH = {"Authorization": f"Bearer {ALICE}"}
CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def backend() -> Iterator[tuple[FakeOpenAI, str]]:
    with running_fake_openai(models=["gpt-test"]) as running:
        yield running


@contextmanager
def two_replicas(
    tmp_path: Path,
    backend_url: str,
    *,
    models: Sequence[str] = ("gpt-test",),
    environ: Sequence[Mapping[str, str]] = (),
    **settings: str,
) -> Iterator[Topology]:
    """Two replicas and nginx on a database and a Redis key prefix of this test's own
    (`environ`: more environment variables for each replica in turn; the backend's key
    is `REPLICA_KEY`)."""
    with scratch_postgres_database("igw_scale") as database, redis_prefix() as prefix:
        fixtures = limited_fixtures(
            tmp_path / "fixtures", backend_url, models, key_env="REPLICA_KEY"
        )
        with running_topology(
            tmp_path / "topology",
            replicas=2,
            database_url=database,
            redis_url=REDIS_URL,
            tokens_file=write_tokens(tmp_path),
            fixtures=fixtures,
            settings={"redis_key_prefix": prefix, "batch_max_active": "5", **settings},
            environ=environ,
        ) as running:
            yield running


async def _all_at_once(url: str, count: int) -> list[httpx.Response]:
    answers: list[httpx.Response] = []
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def one() -> None:
            answers.append(await client.post(f"{url}/v1/chat/completions", json=CHAT, headers=AUTH))

        async with anyio.create_task_group() as tasks:
            for _ in range(count):
                tasks.start_soon(one)
    return answers


def test_the_nginx_template_lists_every_replica_and_streams_unbuffered(tmp_path: Path) -> None:
    text = nginx_config(tmp_path, 8080, [9001, 9002, 9003])
    for port in (9001, 9002, 9003):
        assert f"server 127.0.0.1:{port} max_fails=1" in text
    assert "proxy_buffering off;" in text and "proxy_http_version 1.1;" in text
    # POST is retried only when it never reached a replica: nginx's default, not widened.
    assert "proxy_next_upstream error timeout;" in text
    assert "non_idempotent" not in text.split("proxy_next_upstream", 1)[1]
    assert not re.search(r"^[^#\n]*@[A-Z_]+@", text, re.M)  # every marker filled in


def test_a_quota_holds_across_both_replicas(
    tmp_path: Path, backend: tuple[FakeOpenAI, str]
) -> None:
    fake, backend_url = backend
    with two_replicas(tmp_path, backend_url, requests_per_minute_per_user="100") as topology:
        answers = anyio.run(_all_at_once, topology.url, 400)
        healths = [httpx.get(f"{r.url}/resource_server/health").json() for r in topology.replicas]
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 100 + [429] * 300
    # Only the admitted reached the backend (a served gateway also reads /v1/models).
    assert len([r for r in fake.requests if r.method == "POST"]) == 100
    for refused in (a for a in answers if a.status_code == 429):
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert [h["quota"] for h in healths] == ["redis", "redis"]


def _lines(count: int, label: str) -> bytes:
    return b"".join(
        json.dumps(
            {
                "custom_id": f"line-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "gpt-test",
                    "messages": [{"role": "user", "content": f"{label} line {i}"}],
                },
            }
        ).encode()
        + b"\n"
        for i in range(count)
    )


def _lines_sent(fake: FakeOpenAI, label: str) -> list[str]:
    """The batch lines with this label that reached the backend, repeats included."""
    sent = []
    for request in fake.requests:
        if request.method != "POST":
            continue  # the status reads of GET /v1/models
        body: Any = request.json()
        text = body["messages"][-1]["content"] if isinstance(body, dict) else ""
        if isinstance(text, str) and text.startswith(f"{label} line "):
            sent.append(text)
    return sent


def _wait(condition: Any, what: str, timeout: float = 120) -> Any:
    """Polls `condition` (each poll a real request) until it returns something truthy."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}")


def test_a_batch_made_through_one_replica_is_polled_and_cancelled_through_the_other(
    tmp_path: Path, backend: tuple[FakeOpenAI, str]
) -> None:
    fake, backend_url = backend
    with two_replicas(tmp_path, backend_url) as topology:
        one, other = (
            openai.OpenAI(base_url=f"{r.url}/v1", api_key=ALICE) for r in topology.replicas
        )
        # One batch runs to completion: each line reaches the backend once.
        done_file = one.files.create(file=("done.jsonl", _lines(30, "done")), purpose="batch")
        done = one.batches.create(
            input_file_id=done_file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        assert done.id in [b.id for b in other.batches.list()]
        finished = _wait(
            lambda: (b := other.batches.retrieve(done.id)).status == "completed" and b,
            "the batch to complete",
        )
        assert finished.request_counts.completed == 30
        assert sorted(_lines_sent(fake, "done")) == sorted(f"done line {i}" for i in range(30))
        output = other.files.content(finished.output_file_id).text.splitlines()
        assert sorted(json.loads(line)["custom_id"] for line in output) == sorted(
            f"line-{i}" for i in range(30)
        )

        # Another, cancelled through the other replica: it ends cancelled, having run
        # part of its lines, none of them twice, whichever replica ran it.
        big_file = one.files.create(file=("big.jsonl", _lines(2000, "big")), purpose="batch")
        big = one.batches.create(
            input_file_id=big_file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        _wait(
            lambda: other.batches.retrieve(big.id).request_counts.completed > 0,
            "the second batch to start",
        )
        other.batches.cancel(big.id)
        ended = _wait(
            lambda: (b := one.batches.retrieve(big.id)).status == "cancelled" and b,
            "the cancel to take effect",
        )
    sent = _lines_sent(fake, "big")
    assert len(sent) == len(set(sent))
    # Every line that reached the backend is in the output; the rest were never sent.
    assert len(sent) == ended.request_counts.completed < 2000


def test_a_replica_that_dies_costs_no_request_that_had_not_reached_it(
    tmp_path: Path, backend: tuple[FakeOpenAI, str]
) -> None:
    _, backend_url = backend
    with two_replicas(tmp_path, backend_url) as topology:
        before = anyio.run(_all_at_once, topology.url, 40)
        assert sorted(a.status_code for a in before) == [200] * 40
        topology.replicas[0].kill()
        # nginx does not know yet: what it sends to the dead replica is refused at
        # connect and goes to the other one; none fails.
        after = anyio.run(_all_at_once, topology.url, 40)
    assert sorted(a.status_code for a in after) == [200] * 40


async def _each_named(url: str, names: Sequence[str]) -> dict[str, httpx.Response]:
    """One non-streaming request per name, all at once; the name is its last message
    (the gated backend's gate), so the backend knows each apart."""
    answers: dict[str, httpx.Response] = {}
    limits = httpx.Limits(max_connections=len(names), max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def one(name: str) -> None:
            body = {"model": GATED, "messages": [{"role": "user", "content": name}]}
            answers[name] = await client.post(f"{url}/v1/chat/completions", json=body, headers=AUTH)

        async with anyio.create_task_group() as tasks:
            for name in names:
                tasks.start_soon(one, name)
    return answers


def test_killing_a_replica_during_load_fails_only_the_requests_it_held(tmp_path: Path) -> None:
    """SIGKILL to one replica while both hold requests at the backend: exactly the
    requests that had reached it fail (nginx never sends a POST it had begun again), and
    every other, those the survivor held and those sent after the kill, is answered."""
    keys = [{"REPLICA_KEY": "key-of-replica-1"}, {"REPLICA_KEY": "key-of-replica-2"}]
    killed_by, survivor_by = "Bearer key-of-replica-1", "Bearer key-of-replica-2"
    first = [f"before-{i}" for i in range(40)]
    second = [f"after-{i}" for i in range(20)]
    with (
        running_gated_openai() as (backend, backend_url),
        two_replicas(tmp_path, backend_url, models=[GATED], environ=keys) as topology,
    ):
        answers: dict[str, httpx.Response] = {}

        async def load() -> None:
            async with anyio.create_task_group() as tasks:

                async def wave(names: list[str]) -> None:
                    answers.update(await _each_named(topology.url, names))

                tasks.start_soon(wave, first)
                # Every request of the first wave is in flight at the backend, held at
                # its gate, each through the replica that took it (none in between).
                await anyio.to_thread.run_sync(backend.wait_until_waiting, first)
                held = [n for n, seen in backend.callers().items() if seen == [killed_by]]
                assert held, "least_conn gave the first replica none of forty requests"
                await anyio.to_thread.run_sync(topology.replicas[0].kill)
                # More load after the kill: nginx may still send some to the dead
                # replica; refused at connect, they must go to the other.
                tasks.start_soon(wave, second)
                await anyio.to_thread.run_sync(backend.wait_until_waiting, second)
                backend.open_all()

        anyio.run(load)
    callers = backend.callers()
    reached_killed = {n for n, seen in callers.items() if killed_by in seen}
    failed = {n for n, a in answers.items() if a.status_code != 200}
    assert failed == reached_killed, "a request that never reached the dead replica failed"
    assert all(answers[n].status_code == 502 for n in failed)
    assert reached_killed <= set(first)  # nothing after the kill reached it
    # Each request reached the backend once: none that reached the dead replica was
    # sent again through the survivor.
    assert all(len(seen) == 1 for seen in callers.values())
    assert {n for n, seen in callers.items() if seen == [survivor_by]} == set(answers) - failed
