"""The status page's data route and files through `inference-gateway serve` on asyncio
and on trio: what a visitor without a key sees (never a restricted model), what a caller
with a key sees (their models, usage and remaining quota), a wrong key's 401, and the
page's files with their Content-Security-Policy."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.gateway_server import ALICE, BOB, running_gateway, write_tokens
from tests.support.served_cli import ServedGateway, served_gateway
from tests.support.status_page import (
    ALICE_MODELS,
    PUBLIC_MODELS,
    RESTRICTED,
    TPM_USER,
    make_traffic,
    status_fixtures,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def gateway(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServedGateway, int]]:
    folder = tmp_path_factory.mktemp(f"status-{request.param}")
    fixtures = status_fixtures(folder / "fixtures")
    with served_gateway(folder, fixtures, loop=request.param) as served:
        yield served, make_traffic(served.url)


def _summary(url: str, key: str | None = None) -> httpx.Response:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    return httpx.get(f"{url}/status/summary", headers=headers, timeout=30)


def _models(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["model"]: m for c in summary["clusters"] for m in c["models"]}


def test_without_a_key_only_unrestricted_models_show(gateway: tuple[ServedGateway, int]) -> None:
    served, _ = gateway
    answer = _summary(served.url)
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-store"
    summary = answer.json()
    assert (summary["object"], summary["user"], summary["usage_since"]) == ("status", None, None)
    assert [c["name"] for c in summary["clusters"]] == ["local"]
    assert {name: m["state"] for name, m in _models(summary).items()} == PUBLIC_MODELS
    for restricted in RESTRICTED:
        assert restricted not in answer.text
    for model in _models(summary).values():  # no one's usage or quota without a key
        assert set(model) == {"model", "framework", "endpoint_slug", "state", "figures"}


def test_figures_come_from_the_request_log(gateway: tuple[ServedGateway, int]) -> None:
    served, _ = gateway
    summary = _summary(served.url).json()
    assert summary["request_log"] is True
    assert summary["window_seconds"] == 900
    figures = _models(summary)["demo-model"]["figures"]
    assert figures["requests"] == 5  # alice's four and bob's one
    assert figures["latency_p50_seconds"] is not None and figures["latency_p50_seconds"] >= 0
    assert figures["first_token_p50_seconds"] is not None  # two of them streamed
    assert figures["output_tokens_per_second"] is not None
    assert figures["output_tokens_per_second"] > 0
    idle = _models(summary)["idle-model"]["figures"]
    assert idle == {
        "requests": 0,
        "latency_p50_seconds": None,
        "first_token_p50_seconds": None,
        "output_tokens_per_second": None,
    }


def test_a_key_shows_the_callers_models_usage_and_remaining_quota(
    gateway: tuple[ServedGateway, int],
) -> None:
    served, made = gateway
    summary = _summary(served.url, ALICE).json()
    assert summary["user"] == "alice@example.org"
    assert summary["usage_since"].endswith("T00:00:00+00:00")
    models = _models(summary)
    assert {name: m["state"] for name, m in models.items()} == ALICE_MODELS
    demo = models["demo-model"]
    assert demo["usage"]["requests"] == made
    assert demo["usage"]["total_tokens"] > 0
    assert demo["tokens_per_minute_per_user"] == TPM_USER
    # What alice's counter holds is the tokens her requests used in the last minute.
    assert demo["remaining_tokens_per_minute"] == TPM_USER - demo["usage"]["total_tokens"]
    assert models["physics-model"]["usage"]["requests"] == 1
    assert models["idle-model"]["usage"] == {
        "requests": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
    }


def test_another_key_shows_only_its_own_usage(gateway: tuple[ServedGateway, int]) -> None:
    served, _ = gateway
    summary = _summary(served.url, BOB).json()
    assert summary["user"] == "bob@elsewhere.net"
    models = _models(summary)
    assert set(models) == set(PUBLIC_MODELS)  # bob is neither in g-physics nor example.org
    assert models["demo-model"]["usage"]["requests"] == 1


@pytest.mark.parametrize("authorization", ["Bearer not-a-key", "Basic abc", "Bearer"])
def test_a_wrong_key_is_a_401_in_openais_shape(
    gateway: tuple[ServedGateway, int], authorization: str
) -> None:
    served, _ = gateway
    answer = httpx.get(
        f"{served.url}/status/summary", headers={"Authorization": authorization}, timeout=30
    )
    assert answer.status_code == 401
    error = answer.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    for restricted in RESTRICTED:
        assert restricted not in answer.text


@pytest.mark.parametrize("path", ["/", "/status"])
def test_the_page_is_served_with_a_strict_policy(
    gateway: tuple[ServedGateway, int], path: str
) -> None:
    served, _ = gateway
    page = httpx.get(f"{served.url}{path}", timeout=30)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "unsafe-inline" not in policy and "http" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text)  # nothing from elsewhere
    total = len(page.content)
    for asset, media in re.findall(r"\"(/status/assets/page\.(js|css)\?v=\w+)\"", page.text):
        answer = httpx.get(f"{served.url}{asset}", timeout=30)
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith(
            {"js": "text/javascript", "css": "text/css"}[media]
        )
        assert answer.headers["content-security-policy"] == policy
        assert "http://" not in answer.text and "https://" not in answer.text
        total += len(answer.content)
    assert total < 20 * 1024, f"the page's files weigh {total} bytes"


def test_without_a_request_log_or_quotas_there_is_nothing_to_show_but_states(
    tmp_path: Path,
) -> None:
    fixtures = status_fixtures(tmp_path / "fixtures")
    with running_gateway(fixtures, write_tokens(tmp_path)) as url:
        public = _summary(url).json()
        mine = _summary(url, ALICE).json()
    assert public["request_log"] is False
    assert {name: m["state"] for name, m in _models(public).items()} == PUBLIC_MODELS
    assert all(m["figures"] is None for m in _models(public).values())
    demo = _models(mine)["demo-model"]
    assert (demo["usage"], demo["remaining_tokens_per_minute"]) == (None, None)
    assert demo["tokens_per_minute_per_user"] == TPM_USER
