"""The quota settings: defaults, validation naming the setting, and what `serve` builds."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core import ConfigurationError
from frontends.settings import load_settings
from tests.support.gateway_server import ALICE, REPO_FIXTURES
from tests.support.quota import serve_process


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("INFERENCE_GATEWAY_"):
            monkeypatch.delenv(name)
    yield


@pytest.mark.usefixtures("clean_env")
def test_quota_defaults() -> None:
    settings = load_settings()
    assert settings.quotas is True
    assert settings.redis_url is None  # counted in process
    assert settings.requests_per_minute_per_user == 0  # off
    assert settings.quota_default_max_tokens == 1024


@pytest.mark.usefixtures("clean_env")
def test_quota_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERENCE_GATEWAY_QUOTAS", "false")
    monkeypatch.setenv("INFERENCE_GATEWAY_REDIS_URL", "redis://:pw-7f3a@127.0.0.1:6379/2")
    monkeypatch.setenv("INFERENCE_GATEWAY_REQUESTS_PER_MINUTE_PER_USER", "50")
    monkeypatch.setenv("INFERENCE_GATEWAY_QUOTA_DEFAULT_MAX_TOKENS", "256")
    settings = load_settings()
    assert settings.quotas is False
    assert settings.redis_url is not None
    assert "pw-7f3a" not in repr(settings)
    assert settings.requests_per_minute_per_user == 50
    assert settings.quota_default_max_tokens == 256


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("INFERENCE_GATEWAY_REDIS_URL", "http://127.0.0.1:6379", "INFERENCE_GATEWAY_REDIS_URL"),
        ("INFERENCE_GATEWAY_REQUESTS_PER_MINUTE_PER_USER", "-1", "requests_per_minute_per_user"),
        ("INFERENCE_GATEWAY_REQUESTS_PER_MINUTE_PER_USER", "many", "requests_per_minute_per_user"),
        ("INFERENCE_GATEWAY_QUOTA_DEFAULT_MAX_TOKENS", "0", "quota_default_max_tokens"),
        ("INFERENCE_GATEWAY_QUOTAS", "perhaps", "quotas"),
    ],
)
def test_invalid_quota_settings_fail_naming_the_setting(
    variable: str, value: str, named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    assert named in str(raised.value)


def _two_requests(url: str) -> list[int]:
    body = {"model": "demo-model", "messages": [{"role": "user", "content": "hi"}]}
    auth = {"Authorization": f"Bearer {ALICE}"}
    with httpx.Client(base_url=url, headers=auth, timeout=30) as client:
        return [client.post("/v1/chat/completions", json=body).status_code for _ in range(2)]


def test_serve_enforces_the_requests_per_minute_setting(tmp_path: Path) -> None:
    with serve_process(tmp_path, REPO_FIXTURES, "asyncio", requests_per_minute_per_user="1") as url:
        assert _two_requests(url) == [200, 429]
        health = httpx.get(f"{url}/resource_server/health").json()
    # serve's health also carries the request log's counters; the quota's part is this:
    assert (health["status"], health["quota"]) == ("ok", "in-process")


def test_serve_with_quotas_off_enforces_none(tmp_path: Path) -> None:
    settings = {"requests_per_minute_per_user": "1", "quotas": "false"}
    with serve_process(tmp_path, REPO_FIXTURES, "trio", **settings) as url:
        assert _two_requests(url) == [200, 200]
        health = httpx.get(f"{url}/resource_server/health").json()
    assert health["status"] == "ok"
    assert "quota" not in health  # no counters at all, so none to report
