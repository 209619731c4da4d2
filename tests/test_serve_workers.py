"""`serve --workers N`: N processes share one port, the built-in demo answers through all
of them, `/metrics` from any worker counts every worker's requests, SIGTERM stops them
all with exit 0, and workers counting quotas apart never admit beyond a limit."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.gateway_server import ALICE, write_tokens

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]


def _env(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERENCE_GATEWAY_")}
    env.update(
        PYTHONPATH=str(ROOT),
        INFERENCE_GATEWAY_TOKENS_FILE=str(write_tokens(tmp_path)),
        INFERENCE_GATEWAY_STATE_DIR=str(tmp_path / "state"),
        **{f"INFERENCE_GATEWAY_{k.upper()}": v for k, v in settings.items()},
    )
    return env


@contextmanager
def workers(tmp_path: Path, count: int) -> Iterator[tuple[subprocess.Popen[str], str]]:
    command = [sys.executable, "-m", "frontends.cli", "serve", "--port", "0"]
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [*command, "--workers", str(count)],
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        url = re.search(r"on (http://\S+)/v1", first)
        assert url, first + (tmp_path / "serve.log").read_text()
        yield process, url[1]
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
        log.close()


def _children(pid: int, expected: int) -> list[int]:
    """The server's worker processes, once `expected` of them have started (the banner
    comes first; connections wait in the socket's backlog until a worker accepts)."""
    deadline = time.monotonic() + 60
    while True:
        found = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        if len(found) >= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def _chat(url: str) -> int:
    # A new connection each time, so the kernel may hand it to either worker.
    answer = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "demo-model", "messages": [{"role": "user", "content": "Hi"}]},
        headers={"Authorization": f"Bearer {ALICE}", "Connection": "close"},
        timeout=30,
    )
    return answer.status_code


def _requests_counted(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "inference_gateway_requests"
        for sample in family.samples
        if sample.name == "inference_gateway_requests_total"
    )


def test_two_workers_share_the_port_and_the_metrics_and_stop_together(tmp_path: Path) -> None:
    with workers(tmp_path, 2) as (process, url):
        assert len(_children(process.pid, 2)) == 2
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _: _chat(url), range(60)))
        assert statuses == [200] * 60
        # Whichever worker answers /metrics reads the shared directory: all 60 counted.
        assert _requests_counted(url) == 60
        assert _requests_counted(url) == 60
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0


def test_workers_without_a_shared_redis_each_hold_their_share_of_a_limit(
    tmp_path: Path,
) -> None:
    """A limit of 6 requests a minute over 2 workers counting apart: never more than 6
    admitted, however the kernel spreads the connections."""
    command = [sys.executable, "-m", "frontends.cli", "serve", "--port", "0", "--workers", "2"]
    process = subprocess.Popen(
        command,
        env=_env(tmp_path, requests_per_minute_per_user="6"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = re.search(r"on (http://\S+)/v1", process.stdout.readline())
        assert url
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _: _chat(url[1]), range(40)))
        assert set(statuses) <= {200, 429}
        assert 1 <= statuses.count(200) <= 6
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    assert process.returncode == 0
