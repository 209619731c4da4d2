"""Cluster status, end to end: a real status server (the seed's `Jobs` document at a
`status_url`), a real backend, a real gateway refreshing the status in the background.

A model the status reports stopped or queued gets an immediate 503 with `Retry-After`
and a message naming its state, and its backend is never asked; once the status says
it runs, it is served.  `/resource_server/health` shows each cluster's status and each
endpoint's breaker, outstanding calls and model state; the jobs route reads the same
cached status.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from quart import Quart, Response

from frontends.endpoint_health import HealthPolicy
from tests.support.fake_openai import FakeOpenAI, running_fake_openai
from tests.support.gateway_server import ALICE, running_gateway, write_fixtures, write_tokens
from tests.support.servers import serve_app

pytestmark = pytest.mark.e2e

AUTH = {"Authorization": f"Bearer {ALICE}"}
MODELS = ["sleepy-model", "waking-model", "awake-model"]
WAIT = 60.0


class StatusPage:
    """A status server whose report the test changes: model -> running/queued/stopped."""

    def __init__(self, states: dict[str, str]) -> None:
        self.states = dict(states)
        self.reads = 0
        self._lock = threading.Lock()
        self.app = Quart("status_page")

        @self.app.get("/status")
        async def status() -> Response:
            with self._lock:
                self.reads += 1
                states = dict(self.states)
            jobs: dict[str, Any] = {"running": [], "queued": [], "stopped": []}
            for model, state in states.items():
                jobs[state].append({"Models": model, "Framework": "vllm", "Cluster": "hpc"})
            return Response(json.dumps(jobs), content_type="application/json")

    def set(self, model: str, state: str) -> None:
        with self._lock:
            self.states[model] = state


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll a condition over HTTP (each poll is a real request) up to a generous bound."""
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[str, StatusPage, FakeOpenAI]]:
    page = StatusPage({"sleepy-model": "stopped", "waking-model": "queued"})
    page.set("awake-model", "running")
    with serve_app(page.app) as status_url, running_fake_openai(models=MODELS) as (fake, base):
        cluster = {
            "cluster_name": "hpc",
            "frameworks": ["vllm"],
            "openai_endpoints": ["chat/completions"],
            "cluster_adapter": "resource_server_async.clusters.direct_api.DirectAPICluster",
            "config": {"status_url": f"{status_url}/status"},
        }
        endpoints = [
            {
                "endpoint_slug": f"hpc-vllm-{model}",
                "cluster": "hpc",
                "framework": "vllm",
                "model": model,
                "endpoint_adapter": "resource_server_async.endpoints.direct_api.DirectAPIEndpoint",
                "config": {
                    "api_url": f"{base}/v1/chat/completions",
                    "api_key_env_name": "IGW_TEST_UNUSED_KEY",
                },
            }
            for model in MODELS
        ]
        fixtures = write_fixtures(tmp_path / "fixtures", [cluster], endpoints)
        health = HealthPolicy(status_ttl=0.2, refresh_status=True)
        with running_gateway(fixtures, write_tokens(tmp_path), health=health) as url:
            yield url, page, fake


def endpoint_health(url: str, model: str) -> dict[str, Any]:
    clusters = httpx.get(f"{url}/resource_server/health", timeout=10).json()["clusters"]
    return dict(clusters["hpc"]["endpoints"][f"hpc-vllm-{model}"])


def ask(url: str, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=AUTH, timeout=WAIT)


def test_stopped_and_queued_models_are_refused_at_once_and_served_once_running(
    setup: tuple[str, StatusPage, FakeOpenAI],
) -> None:
    url, page, fake = setup
    wait_until(lambda: endpoint_health(url, "sleepy-model")["model_status"] == "stopped", "status")

    stopped = ask(url, "sleepy-model")
    assert stopped.status_code == 503
    assert int(stopped.headers["retry-after"]) >= 1
    assert stopped.json()["error"]["code"] == "model_stopped"
    assert "stopped on cluster 'hpc'" in stopped.json()["error"]["message"]

    queued = ask(url, "waking-model")
    assert queued.status_code == 503
    assert int(queued.headers["retry-after"]) >= 1
    assert queued.json()["error"]["code"] == "model_queued"
    assert "queued on cluster 'hpc'" in queued.json()["error"]["message"]

    assert ask(url, "awake-model").status_code == 200
    asked = [r.json()["model"] for r in fake.requests if r.method == "POST"]
    assert asked == ["awake-model"], "a stopped or queued model's backend is never asked"

    page.set("sleepy-model", "running")
    wait_until(lambda: endpoint_health(url, "sleepy-model")["model_status"] == "running", "refresh")
    assert ask(url, "sleepy-model").status_code == 200


def test_health_reports_each_cluster_and_endpoint_and_jobs_reads_the_cached_status(
    setup: tuple[str, StatusPage, FakeOpenAI],
) -> None:
    url, _, _ = setup
    wait_until(lambda: endpoint_health(url, "awake-model")["model_status"] == "running", "status")
    health = httpx.get(f"{url}/resource_server/health", timeout=10).json()
    hpc = health["clusters"]["hpc"]
    assert hpc["status"] == "ok"
    assert hpc["checked_seconds_ago"] >= 0
    assert hpc["endpoints"]["hpc-vllm-awake-model"] == {
        "model": "awake-model",
        "framework": "vllm",
        "breaker": "closed",
        "outstanding": 0,
        "model_status": "running",
    }
    assert "127.0.0.1" not in json.dumps(health)  # names only, never a URL

    jobs = httpx.get(f"{url}/resource_server/hpc/jobs", headers=AUTH, timeout=10).json()
    assert [j["Models"] for j in jobs["stopped"]] == ["sleepy-model"]
    assert [j["Models"] for j in jobs["queued"]] == ["waking-model"]
