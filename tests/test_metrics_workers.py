"""Metrics with several worker processes: two real `inference-gateway serve` processes (one
on asyncio, one on trio) share one metrics directory, and a scrape of either shows both.
A worker that dies keeps its counts; its open streams stop counting."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from tests.support.fake_openai import running_fake_openai
from tests.support.gateway_server import ALICE
from tests.support.serve_process import ROOT, ServeProcess, serving
from tests.test_metrics import CHAT, MODELS, chat, metrics_fixtures, post, scrape, total, value

pytestmark = pytest.mark.e2e


@contextmanager
def serve(
    tmp: Path, fixtures: Path, metrics_dir: Path | None, loop: str, **settings: str
) -> Iterator[tuple[ServeProcess, str]]:
    """`inference-gateway serve` in a process of its own; yields it and its base URL."""
    if metrics_dir is not None:
        settings["metrics_dir"] = str(metrics_dir)
    with serving(
        tmp,
        stop_signal=signal.SIGINT,
        fixtures=fixtures,
        loop=loop,
        settings=settings,
        environ={"PROMETHEUS_MULTIPROC_DIR": None},
    ) as served:
        yield served, served.url


def live_files(metrics_dir: Path, pid: int) -> list[Path]:
    return sorted(metrics_dir.glob(f"gauge_live*_{pid}.db"))


def test_a_scrape_of_either_worker_sums_both(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    with ExitStack() as stack:
        _fake, backend_url = stack.enter_context(running_fake_openai(models=MODELS))
        fixtures = metrics_fixtures(tmp_path / "fixtures", backend_url)
        first, url_a = stack.enter_context(serve(tmp_path / "a", fixtures, metrics_dir, "asyncio"))
        second, url_b = stack.enter_context(serve(tmp_path / "b", fixtures, metrics_dir, "trio"))
        assert first.pid != second.pid

        usage = {"prompt": 0, "completion": 0}
        for url, times in ((url_a, 2), (url_b, 3)):
            for i in range(times):
                reply = post(url, ALICE, CHAT, chat("fake-model", f"question {i} to {url}"))
                assert reply.status_code == 200
                usage["prompt"] += reply.json()["usage"]["prompt_tokens"]
                usage["completion"] += reply.json()["usage"]["completion_tokens"]
        assert post(url_b, ALICE, CHAT, chat("no-such-model")).status_code == 404

        body = chat("hang-stream", stream=True)
        headers = {"Authorization": f"Bearer {ALICE}"}
        client = stack.enter_context(httpx.Client(timeout=30))
        held = stack.enter_context(
            client.stream("POST", f"{url_b}/v1/{CHAT}", json=body, headers=headers)
        )
        lines = held.iter_lines()  # kept: dropping the iterator would close the response
        assert next(lines).startswith("data: ")

        for url in (url_a, url_b):
            found = scrape(url)
            requests = "inference_gateway_requests_total"
            assert value(found, requests, route=CHAT, model="fake-model", status="200") == 5
            assert value(found, requests, route=CHAT, model="-", status="404") == 1
            assert total(found, requests) == 6
            assert total(found, "inference_gateway_request_duration_seconds_count") == 6
            tokens = "inference_gateway_tokens_total"
            assert value(found, tokens, model="fake-model", kind="prompt") == usage["prompt"]
            assert (
                value(found, tokens, model="fake-model", kind="completion") == (usage["completion"])
            )
            # One stream open, in the trio worker; no per-process series leak out.
            assert value(found, "inference_gateway_active_streams") == 1
            assert value(found, "inference_gateway_log_queue_depth") == 0
            assert value(found, "inference_gateway_log_records_dropped_total") == 0
            assert not any("pid" in labels for _, labels in found)

        # The trio worker dies without a chance to clean up.
        assert live_files(metrics_dir, second.pid)
        second.kill()
        found = scrape(url_a)
        # Its requests happened: the totals keep them.  Its stream is gone.
        assert value(found, requests, route=CHAT, model="fake-model", status="200") == 5
        assert total(found, "inference_gateway_request_duration_seconds_count") == 6
        assert value(found, "inference_gateway_active_streams") == 0
        assert not live_files(metrics_dir, second.pid)

        # A worker that stops cleanly removes its own live gauges and keeps its counts.
        assert live_files(metrics_dir, first.pid)
        assert first.stop(signal.SIGINT) == 0
        assert not live_files(metrics_dir, first.pid)
        assert list(metrics_dir.glob(f"counter_{first.pid}.db"))


def queue_in_files(metrics_dir: Path) -> tuple[float, float]:
    """The log queue's depth and dropped records as the files say (no worker asked)."""
    found = {
        s.name: s.value
        for family in MultiProcessCollector.merge(glob.glob(f"{metrics_dir}/*.db"))
        for s in family.samples
    }
    return (
        found.get("inference_gateway_log_queue_depth", 0.0),
        found.get("inference_gateway_log_records_dropped_total", 0.0),
    )


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_an_idle_worker_keeps_its_log_queue_current(tmp_path: Path, loop: str) -> None:
    """No request and no scrape reaches the worker, yet its files follow its queue."""
    metrics_dir = tmp_path / "metrics"
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.support.metrics_worker", str(metrics_dir), loop],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert worker.stdin is not None and worker.stdout is not None
    try:
        assert worker.stdout.readline() == "serving\n"
        for depth, dropped in ((5, 2), (0, 3)):
            worker.stdin.write(f"{depth} {dropped}\n")
            worker.stdin.flush()
            assert worker.stdout.readline() == "set\n"
            # The worker is a real process of its own: wait for its files, with a deadline.
            deadline = time.monotonic() + 20
            while queue_in_files(metrics_dir) != (depth, dropped):
                assert time.monotonic() < deadline, queue_in_files(metrics_dir)
                time.sleep(0.05)
        worker.stdin.write("stop\n")
        worker.stdin.flush()
        _, err = worker.communicate(timeout=30)
        assert worker.returncode == 0, err
        # Stopped: its queue no longer counts; what it dropped stays counted.
        assert queue_in_files(metrics_dir) == (0, 3)
        assert not live_files(metrics_dir, worker.pid)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate(timeout=30)


def test_serve_asks_scrapers_for_the_metrics_token_when_set(tmp_path: Path) -> None:
    token = "igw-test-scraper-0123456789abcdef"
    with (
        running_fake_openai(models=MODELS) as (_, backend_url),
        serve(
            tmp_path / "a",
            metrics_fixtures(tmp_path / "fixtures", backend_url),
            None,
            "asyncio",
            metrics_token=token,
        ) as (_, url),
    ):
        assert post(url, ALICE, CHAT, chat("fake-model")).status_code == 200
        assert httpx.get(f"{url}/metrics", timeout=30).status_code == 401
        found = scrape(url, token)
        assert (
            value(
                found,
                "inference_gateway_requests_total",
                route=CHAT,
                model="fake-model",
                status="200",
            )
            == 1
        )


def test_an_empty_metrics_token_stops_start_up(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("INFERENCE_GATEWAY_")},
        "PYTHONPATH": str(ROOT),
        "INFERENCE_GATEWAY_STATE_DIR": str(tmp_path / "state"),
        "INFERENCE_GATEWAY_METRICS_TOKEN": " ",
    }
    done = subprocess.run(
        [sys.executable, "-m", "frontends.cli", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "metrics_token" in done.stderr
