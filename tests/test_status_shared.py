"""Cluster status read by one process at a time and shared (`frontends.status_share`):
N replicas on one Redis, or N workers on one folder, read a cluster's status service
about once per TTL between them, not N times; without the medium each reads alone."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from adaptors.clusters.cluster import GetJobsResponse
from frontends.status_share import (
    FolderMedium,
    Reading,
    RedisMedium,
    StatusShare,
    Step,
    is_fresh,
    next_step,
)
from tests.support.fake_openai import FakeOpenAI, running_fake_openai
from tests.support.gateway_server import ALICE, write_tokens
from tests.support.quota import (
    REDIS_URL,
    closed_port_url,
    limited_fixtures,
    private_redis,
    redis_prefix,
)
from tests.support.serve_process import ROOT, ServeProcess, start_serve

TTL = 10.0
AT = 1_000_000.0


def _reading(fetched_at: float, error: str | None = None) -> Reading:
    return Reading(answer=GetJobsResponse(error_message=error), error=error, fetched_at=fetched_at)


@pytest.mark.parametrize(
    ("age", "locked", "step"),
    [
        (None, None, Step.FETCH),  # nothing shared yet: try the lock, then fetch
        (None, True, Step.FETCH),
        (None, False, Step.WAIT),  # another is reading it
        (0.0, None, Step.ADOPT),
        (TTL - 0.001, False, Step.ADOPT),
        (TTL, None, Step.FETCH),  # stale: whoever takes the lock reads it again
        (TTL, True, Step.FETCH),
        (TTL, False, Step.WAIT),
        (5 * TTL, False, Step.WAIT),
    ],
)
def test_a_reading_is_adopted_while_fresh_and_read_by_the_lock_holder_once_stale(
    age: float | None, locked: bool | None, step: Step
) -> None:
    reading = None if age is None else _reading(AT - age)
    assert next_step(reading, AT, TTL, locked=locked) is step
    assert is_fresh(reading, AT, TTL) is (step is Step.ADOPT)


def test_a_reading_travels_as_json_and_anything_else_reads_as_none() -> None:
    reading = _reading(AT, "down for maintenance")
    assert Reading.decode(reading.encode()) == reading
    for junk in (b"", b"null", b"{}", b'{"answer": 3, "error": null, "fetched_at": 1}', b"\xff"):
        assert Reading.decode(junk) is None


class _Counted:
    """A cluster's status read: counted, and slow enough that others ask meanwhile."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> Reading:
        self.calls += 1
        await anyio.sleep(0.05)
        return _reading(time.time())


async def _both_ask(shares: list[StatusShare], fetch: _Counted, ttl: float) -> list[Reading]:
    found: list[Reading] = []

    async def ask(share: StatusShare) -> None:
        found.append(await share.reading("polaris", ttl, fetch))

    async with anyio.create_task_group() as tasks:
        for share in shares:
            tasks.start_soon(ask, share)
    return found


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.parametrize("medium", ["redis", "folder"])
async def test_processes_sharing_a_medium_read_a_cluster_once_per_ttl(
    anyio_backend: str, medium: str, tmp_path: Path
) -> None:
    with redis_prefix() as prefix:
        made: Callable[[], Any] = (
            (lambda: RedisMedium(REDIS_URL, prefix=prefix))
            if medium == "redis"
            else (lambda: FolderMedium(tmp_path))
        )
        shares = [StatusShare(made()) for _ in range(3)]  # as three processes would
        fetch = _Counted()
        try:
            first = await _both_ask(shares, fetch, 3600)
            assert fetch.calls == 1
            assert len({r.fetched_at for r in first}) == 1  # all took the one reading
            again = await _both_ask(shares, fetch, 3600)
            assert fetch.calls == 1 and again == first  # fresh: nobody reads the cluster
            assert {s.status() for s in shares} == {medium}
        finally:
            for share in shares:
                share.close()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_without_its_medium_a_process_reads_for_itself_and_says_so(
    anyio_backend: str,
) -> None:
    share = StatusShare(RedisMedium(closed_port_url(), prefix="p:"), retry_interval=3600)
    fetch = _Counted()
    try:
        await share.reading("polaris", 3600, fetch)
        await share.reading("polaris", 3600, fetch)
    finally:
        share.close()
    assert fetch.calls == 2  # nothing shared: each read is its own
    assert share.status() == "redis-unreachable, fetching locally"


# -- end to end: two served replicas, one Redis, one cluster's status service -------------

STATUS_TTL = 1.0


def _status_reads(fake: FakeOpenAI) -> int:
    """GET /v1/models: the OpenAI-compatible cluster adaptor's `get_jobs`."""
    return len([r for r in fake.requests if r.method == "GET" and r.path == "/v1/models"])


def _health(replica: ServeProcess) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"{replica.url}/resource_server/health", timeout=60).json()
    return answer


def _until(condition: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


@pytest.mark.e2e
def test_two_replicas_on_one_redis_read_a_cluster_once_per_ttl_and_serve_without_it(
    tmp_path: Path,
) -> None:
    with (
        running_fake_openai(models=["gpt-test"]) as (fake, backend_url),
        tempfile.TemporaryDirectory() as short,  # a socket path must be short
        private_redis(Path(short)) as (redis_url, redis_process),
    ):
        fixtures = limited_fixtures(tmp_path / "fixtures", backend_url, ["gpt-test"])
        settings = {"redis_url": redis_url, "status_ttl": str(STATUS_TTL)}
        replicas = [
            start_serve(tmp_path / name, fixtures=fixtures, loop=loop, settings=settings)
            for name, loop in (("one", "asyncio"), ("other", "trio"))
        ]
        try:
            # Over a few TTLs, the calls are at most one per TTL between both: each
            # reading is made when the last is a TTL old, by whoever holds the lock.
            started, before = time.monotonic(), _status_reads(fake)
            _until(lambda: _status_reads(fake) >= before + 4, "four more status reads")
            calls = _status_reads(fake) - before
            elapsed = time.monotonic() - started
            assert calls <= elapsed / STATUS_TTL + 1, (calls, elapsed)
            # (Alone, each replica reads every half TTL: four per TTL between two.)

            def same_reading() -> bool:
                fetched = {_health(r)["clusters"]["fake"]["fetched_at"] for r in replicas}
                return len(fetched) == 1 and None not in fetched

            _until(same_reading, "both replicas to show the one reading")
            assert [_health(r)["cluster_status"] for r in replicas] == ["redis", "redis"]

            redis_process.kill()
            redis_process.wait()
            unshared = "redis-unreachable, fetching locally"
            for replica in replicas:
                _until(lambda r=replica: _health(r)["cluster_status"] == unshared, "fallback")
                auth = {"Authorization": f"Bearer {ALICE}"}
                chat = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
                answer = httpx.post(
                    f"{replica.url}/v1/chat/completions", json=chat, headers=auth, timeout=30
                )
                assert answer.status_code == 200, answer.text
                jobs = httpx.get(
                    f"{replica.url}/resource_server/fake/jobs", headers=auth, timeout=30
                )
                assert jobs.status_code == 200, jobs.text
                assert _health(replica)["clusters"]["fake"]["status"] == "ok"
            logs = [r.log() for r in replicas]
            assert all("cluster status: the redis failed" in text for text in logs)
        finally:
            for replica in replicas:
                replica.stop()


@pytest.mark.e2e
def test_the_workers_of_one_serve_without_redis_share_through_a_folder(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERENCE_GATEWAY_")}
    with running_fake_openai(models=["gpt-test"]) as (fake, backend_url):
        fixtures = limited_fixtures(tmp_path / "fixtures", backend_url, ["gpt-test"])
        env.update(
            PYTHONPATH=str(ROOT),
            INFERENCE_GATEWAY_TOKENS_FILE=str(write_tokens(tmp_path)),
            INFERENCE_GATEWAY_STATE_DIR=str(tmp_path / "state"),
            INFERENCE_GATEWAY_STATUS_TTL=str(STATUS_TTL),
        )
        command = [sys.executable, "-m", "frontends.cli", "serve", "--port", "0"]
        command += ["--workers", "2", "--fixtures", str(fixtures)]
        with (tmp_path / "serve.log").open("w") as log:
            process = subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=log, text=True
            )
        try:
            assert process.stdout is not None
            found = re.search(r"on (http://\S+)/v1", process.stdout.readline())
            assert found, (tmp_path / "serve.log").read_text()
            url = found[1]

            def both_sharing() -> bool:  # new connections: the kernel spreads them
                seen = {
                    httpx.get(
                        f"{url}/resource_server/health", headers={"Connection": "close"}, timeout=60
                    )
                    .json()
                    .get("cluster_status")
                    for _ in range(20)
                }
                return seen == {"folder"}

            _until(both_sharing, "the workers to share cluster status")
            started, before = time.monotonic(), _status_reads(fake)
            _until(lambda: _status_reads(fake) >= before + 4, "four more status reads")
            calls = _status_reads(fake) - before
            elapsed = time.monotonic() - started
            assert calls <= elapsed / STATUS_TTL + 1, (calls, elapsed)
        finally:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=60)
    assert process.returncode == 0
