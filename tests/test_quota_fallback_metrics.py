"""`inference_gateway_quota_fallback` in `/metrics`: a served gateway whose Redis cannot be
reached still answers every request (counting in process) and says so with 1, with one
process's metrics and with the multiprocess files alike; with the real Redis it says 0.
Parsed with prometheus-client's own parser."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.gateway_server import ALICE, REPO_FIXTURES
from tests.support.quota import REDIS_URL, closed_port_url, redis_prefix, serve_process
from tests.test_metrics import samples, value

pytestmark = pytest.mark.e2e

FALLBACK = "inference_gateway_quota_fallback"
CHAT = {"model": "demo-model", "messages": [{"role": "user", "content": "hi"}]}


def _answers_and_fallback(url: str) -> tuple[list[int], float, dict[str, object]]:
    """Three requests (each reserves against the per-user limit), then a scrape."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ALICE}"}, timeout=30) as c:
        statuses = [c.post("/v1/chat/completions", json=CHAT).status_code for _ in range(3)]
        scraped = c.get("/metrics")
        health = c.get("/resource_server/health").json()
    assert scraped.status_code == 200, scraped.text
    found = samples(scraped.text)
    assert (FALLBACK, frozenset()) in found, "the gauge is exported whether 0 or 1"
    return statuses, value(found, FALLBACK), health


@pytest.mark.parametrize(
    ("loop", "multiprocess"), [("asyncio", False), ("trio", True)], ids=["one-process", "files"]
)
def test_an_unreachable_redis_shows_as_fallback_and_costs_no_request(
    tmp_path: Path, loop: str, multiprocess: bool
) -> None:
    settings = {"redis_url": closed_port_url(), "requests_per_minute_per_user": "100"}
    if multiprocess:
        settings["metrics_dir"] = str(tmp_path / "metrics")
    with serve_process(tmp_path, REPO_FIXTURES, loop, **settings) as url:
        statuses, fallback, health = _answers_and_fallback(url)
    assert statuses == [200, 200, 200]
    assert fallback == 1
    assert health["quota"] == "redis-unreachable, using in-process"


def test_a_reachable_redis_shows_no_fallback(tmp_path: Path) -> None:
    with redis_prefix() as prefix:
        settings = {
            "redis_url": REDIS_URL,
            "redis_key_prefix": prefix,
            "requests_per_minute_per_user": "100",
        }
        with serve_process(tmp_path, REPO_FIXTURES, "asyncio", **settings) as url:
            statuses, fallback, health = _answers_and_fallback(url)
    assert statuses == [200, 200, 200]
    assert fallback == 0
    assert health["quota"] == "redis"
