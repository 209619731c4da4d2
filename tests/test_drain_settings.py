"""The drain's settings: the deadline after SIGTERM and the keep-alive idle timeout, with
their defaults, from the environment, and refused when invalid (naming the setting)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from core import ConfigurationError
from frontends.settings import load_settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("INFERENCE_GATEWAY_"):
            monkeypatch.delenv(name)
    yield


@pytest.mark.usefixtures("clean_env")
def test_drain_defaults() -> None:
    settings = load_settings()
    assert settings.drain_seconds == 30
    assert settings.keep_alive_seconds == 5  # Hypercorn's own default


@pytest.mark.usefixtures("clean_env")
def test_drain_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERENCE_GATEWAY_DRAIN_SECONDS", "0")  # end what runs at once
    monkeypatch.setenv("INFERENCE_GATEWAY_KEEP_ALIVE_SECONDS", "0.5")
    settings = load_settings()
    assert (settings.drain_seconds, settings.keep_alive_seconds) == (0, 0.5)


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("INFERENCE_GATEWAY_DRAIN_SECONDS", "-1", "drain_seconds"),
        ("INFERENCE_GATEWAY_DRAIN_SECONDS", "soon", "drain_seconds"),
        ("INFERENCE_GATEWAY_KEEP_ALIVE_SECONDS", "0", "keep_alive_seconds"),
    ],
)
def test_invalid_drain_settings_fail_naming_the_setting(
    variable: str, value: str, named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    assert named in str(raised.value)
