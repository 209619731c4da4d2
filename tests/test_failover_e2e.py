"""Several endpoints for one model, end to end: a real gateway server in front of two real
local backends serving the same model on two clusters.

One backend is stopped in the middle of 200 requests (some streamed) sent from a pool of
threads: no client request that had not started streaming fails, because a call refused
before any byte went out is tried again on the other endpoint.  The stopped endpoint's
breaker opens; when the backend comes back on its port, the breaker closes again.  Every
wait is on a condition (requests served, health saying so), never a sleep.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from core import BreakerPolicy
from frontends.endpoint_health import HealthPolicy
from tests.support.fake_openai import FakeOpenAI, running_fake_openai
from tests.support.gateway_server import ALICE, running_gateway, write_fixtures, write_tokens

pytestmark = pytest.mark.e2e

MODEL = "twin-model"
AUTH = {"Authorization": f"Bearer {ALICE}"}
TOTAL = 200
STOP_AFTER = 50  # answered requests before the west backend is stopped
COOLDOWN = 0.5
WAIT = 60.0  # generous bound for every condition (a noisy 2-core machine)


def cluster_entry(name: str, base_url: str) -> dict[str, Any]:
    return {
        "cluster_name": name,
        "frameworks": ["api"],
        "openai_endpoints": ["chat/completions", "completions", "embeddings"],
        "cluster_adapter": "adaptors.clusters.openai_compatible.OpenAICompatibleCluster",
        "config": {"api_url": f"{base_url}/v1"},
    }


def endpoint_entry(name: str, base_url: str) -> dict[str, Any]:
    return {
        "endpoint_slug": f"{name}-api-{MODEL}",
        "cluster": name,
        "framework": "api",
        "model": MODEL,
        "endpoint_adapter": "resource_server_async.endpoints.direct_api.DirectAPIEndpoint",
        "config": {
            "api_url": f"{base_url}/v1/chat/completions",
            "api_key_env_name": "IGW_TEST_UNUSED_KEY",
            "api_request_timeout": 30,
        },
    }


def wait_until(condition: Callable[[], bool], what: str, *, act: Callable[[], None]) -> None:
    """Do `act` until `condition` holds (each act is real traffic, not a sleep)."""
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        act()


def chat(client: httpx.Client, url: str, *, stream: bool) -> tuple[int, bool, str]:
    """(status, whether a stream started, how it ended: "done", "error" or the body)."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    if not stream:
        answer = client.post(f"{url}/v1/chat/completions", json=body, headers=AUTH)
        return answer.status_code, False, answer.text
    with client.stream("POST", f"{url}/v1/chat/completions", json=body, headers=AUTH) as answer:
        if answer.status_code != 200:
            return answer.status_code, False, answer.read().decode()
        text = "".join(answer.iter_text())
    return 200, True, "done" if text.rstrip().endswith("data: [DONE]") else "error"


def breaker_of(url: str, cluster: str) -> str:
    health = httpx.get(f"{url}/resource_server/health", timeout=10).json()
    return str(health["clusters"][cluster]["endpoints"][f"{cluster}-api-{MODEL}"]["breaker"])


@pytest.fixture
def backends() -> Iterator[tuple[dict[str, str], ExitStack, dict[str, FakeOpenAI]]]:
    with ExitStack() as everything:
        urls: dict[str, str] = {}
        fakes: dict[str, FakeOpenAI] = {}
        west = ExitStack()
        everything.callback(west.close)
        for name, stack in (("east", everything), ("west", west)):
            fake, url = stack.enter_context(running_fake_openai(models=[MODEL]))
            urls[name], fakes[name] = url, fake
        yield urls, west, fakes


def test_one_backend_stopped_under_load_costs_no_request_and_its_breaker_recovers(
    backends: tuple[dict[str, str], ExitStack, dict[str, FakeOpenAI]], tmp_path: Path
) -> None:
    urls, west, fakes = backends
    fixtures = write_fixtures(
        tmp_path / "fixtures",
        [cluster_entry(n, urls[n]) for n in ("east", "west")],
        [endpoint_entry(n, urls[n]) for n in ("east", "west")],
    )
    health = HealthPolicy(breaker=BreakerPolicy(failures=3, cooldown=COOLDOWN))
    answered = 0
    enough = threading.Event()
    lock = threading.Lock()
    with running_gateway(fixtures, write_tokens(tmp_path), health=health) as url:

        def one(i: int, client: httpx.Client) -> tuple[int, bool, str]:
            nonlocal answered
            result = chat(client, url, stream=i % 4 == 0)
            with lock:
                answered += 1
                if answered >= STOP_AFTER:
                    enough.set()
            return result

        local = threading.local()

        def worker(i: int) -> tuple[int, bool, str]:
            if not hasattr(local, "client"):
                local.client = httpx.Client(timeout=WAIT)
            return one(i, local.client)

        with ThreadPoolExecutor(max_workers=16) as pool:
            futures = [pool.submit(worker, i) for i in range(TOTAL)]
            assert enough.wait(WAIT), "the first requests were not answered"
            west_port = urlsplit(urls["west"]).port
            before_stop = len(fakes["west"].requests)
            west.close()  # the west backend stops: its port now refuses connections
            results = [f.result(timeout=WAIT) for f in futures]

        failed = [r for r in results if r[0] != 200]
        assert failed == [], f"{len(failed)} requests failed, e.g. {failed[:3]}"
        cut = [r for r in results if r[1] and r[2] != "done"]  # started, then cut: allowed
        assert len(cut) <= 16, "only streams running on the stopped backend may be cut"
        assert before_stop > 0, "the west backend served its share before it stopped"

        # The west breaker opened (it stays open while west is down)...
        assert breaker_of(url, "west") == "open"
        assert breaker_of(url, "east") == "closed"

        # ...and closes once west is back on its port and answers a probe.
        assert west_port is not None
        with running_fake_openai(models=[MODEL], port=west_port) as (revived, _):
            client = httpx.Client(timeout=WAIT)
            try:
                wait_until(
                    lambda: breaker_of(url, "west") == "closed",
                    "the west breaker to close",
                    act=lambda: _assert_ok(chat(client, url, stream=False)),
                )
                assert revived.requests, "the revived backend got the probe"
                # Both take turns again.
                start = len(revived.requests)
                for _ in range(6):
                    _assert_ok(chat(client, url, stream=False))
                assert len(revived.requests) - start >= 2
            finally:
                client.close()


def _assert_ok(result: tuple[int, bool, str]) -> None:
    assert result[0] == 200, result


def test_a_model_whose_only_backend_is_down_gets_503_with_retry_after_once_its_breaker_opens(
    tmp_path: Path,
) -> None:
    with running_fake_openai(models=[MODEL]) as (_, alive_url):
        pass  # a port that was just served and now refuses connections
    fixtures = write_fixtures(
        tmp_path / "fixtures",
        [cluster_entry("solo", alive_url)],
        [endpoint_entry("solo", alive_url)],
    )
    health = HealthPolicy(breaker=BreakerPolicy(failures=2, cooldown=60))
    with running_gateway(fixtures, write_tokens(tmp_path), health=health) as url:
        client = httpx.Client(timeout=WAIT)
        try:
            statuses = [chat(client, url, stream=False)[0] for _ in range(2)]
            assert statuses == [502, 502]  # refused connections, reported as such
            answer = client.post(
                f"{url}/v1/chat/completions",
                json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
                headers=AUTH,
            )
        finally:
            client.close()
    assert answer.status_code == 503
    assert 1 <= int(answer.headers["retry-after"]) <= 60
    error = answer.json()["error"]
    assert error["code"] == "circuit_open"
    assert "circuit breaker is open" in error["message"]
    assert "127.0.0.1" not in json.dumps(error)
