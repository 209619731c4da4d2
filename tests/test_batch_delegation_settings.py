"""The delegated batches' settings: how often jobs are polled and where their files go,
read once at start; a bad value stops start-up naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from core import ConfigurationError
from frontends.assembly import build_gateway
from frontends.cli import _batch_parts
from frontends.identity import StaticKeys
from frontends.settings import load_settings
from frontends.store import Store
from tests.support.gateway_server import REPO_FIXTURES, write_tokens
from transports.httpx_transport import HttpxTransport


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("INFERENCE_GATEWAY_CONFIG", raising=False)
    monkeypatch.setenv("INFERENCE_GATEWAY_STATE_DIR", str(tmp_path / "state"))
    for name in ("BATCH_POLL_SECONDS", "BATCH_WORK_DIR", "DATABASE_URL"):
        monkeypatch.delenv(f"INFERENCE_GATEWAY_{name}", raising=False)


def test_the_serve_command_polls_jobs_as_configured(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("INFERENCE_GATEWAY_BATCH_POLL_SECONDS", "2.5")
    settings = load_settings()
    gateway = build_gateway(
        REPO_FIXTURES,
        identity=StaticKeys.from_file(write_tokens(tmp_path)),
        transport=HttpxTransport(),
    )
    store = Store.connect(settings.store_url)
    try:
        parts = _batch_parts(settings, gateway, store)
        delegation = parts["batch_runner"].delegation
        assert delegation.poll_seconds == 2.5
        assert delegation.work_dir == tmp_path / "state" / "batch-jobs"
        assert delegation.lease.total_seconds() > 2 * 2.5
    finally:
        store.close()
    monkeypatch.setenv("INFERENCE_GATEWAY_BATCH_WORK_DIR", str(tmp_path / "jobs"))
    assert load_settings().batch_work_dir == tmp_path / "jobs"


@pytest.mark.parametrize("value", ["0", "-1", "often"])
def test_a_bad_poll_interval_stops_start_up_naming_it(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("INFERENCE_GATEWAY_BATCH_POLL_SECONDS", value)
    with pytest.raises(ConfigurationError, match="batch_poll_seconds"):
        load_settings()
