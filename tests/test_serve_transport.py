"""The served gateway's outbound transport (`TRANSPORT`: h11, the default, or httpx) and
its asyncio loop (uvloop with `UVLOOP`): each transport chosen by the setting, refused
when unknown (naming the setting), and each serving real JSON and streamed answers on
both loops, with a client that leaves mid-stream cancelling the backend's stream."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from core import ConfigurationError
from frontends.cli import _transport
from frontends.event_loop import run_asyncio, uvloop_installed
from frontends.settings import load_settings
from tests.support.fake_openai import running_fake_openai
from tests.support.gateway_server import ALICE
from tests.support.quota import limited_fixtures
from tests.support.serve_process import serving
from transports.h11_transport import H11Transport
from transports.httpx_transport import HttpxTransport

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("INFERENCE_GATEWAY_"):
            monkeypatch.delenv(name)
    yield


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("value", "kind"),
    [(None, H11Transport), ("h11", H11Transport), ("httpx", HttpxTransport)],
)
def test_the_transport_setting_picks_the_served_transport(
    value: str | None, kind: type[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    if value is not None:
        monkeypatch.setenv("INFERENCE_GATEWAY_TRANSPORT", value)
    settings = load_settings()
    assert type(_transport(settings)) is kind
    assert settings.transport == (value or "h11")


@pytest.mark.usefixtures("clean_env")
def test_an_unknown_transport_is_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INFERENCE_GATEWAY_TRANSPORT", "curl")
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    assert "transport" in str(raised.value)


def _loop_of(uvloop: bool) -> str:
    runs: list[str] = []

    async def main() -> None:
        runs.append(type(asyncio.get_running_loop()).__module__.split(".")[0])

    run_asyncio(main, uvloop=uvloop)
    return runs[0]


def test_run_asyncio_runs_on_asyncio_unless_uvloop_is_asked_for() -> None:
    assert _loop_of(uvloop=False) == "asyncio"
    if uvloop_installed():
        assert _loop_of(uvloop=True) == "uvloop"


def test_uvloop_asked_for_but_not_installed_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError
    assert not uvloop_installed()
    with pytest.raises(RuntimeError, match="not installed"):
        _loop_of(uvloop=True)


@pytest.mark.usefixtures("clean_env")
def test_the_uvloop_setting_is_off_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().uvloop is False
    monkeypatch.setenv("INFERENCE_GATEWAY_UVLOOP", "true")
    assert load_settings().uvloop is True


@pytest.mark.e2e
@pytest.mark.parametrize("loop", ["asyncio", "trio", "uvloop"])
@pytest.mark.parametrize("transport", ["h11", "httpx"])
def test_each_transport_serves_answers_and_streams_on_each_loop(
    transport: str, loop: str, tmp_path: Path
) -> None:
    with running_fake_openai(models=["gpt-test", "hang-stream"]) as (fake, backend_url):
        models = ["gpt-test", "hang-stream"]
        fixtures = limited_fixtures(tmp_path / "fixtures", backend_url, models)
        with (
            serving(
                tmp_path,
                stop_signal=signal.SIGTERM,
                fixtures=fixtures,
                loop="asyncio" if loop == "uvloop" else loop,
                settings={"transport": transport, "uvloop": str(loop == "uvloop").lower()},
            ) as served,
            openai.OpenAI(base_url=f"{served.url}/v1", api_key=ALICE, max_retries=0) as client,
        ):
            answer = client.chat.completions.create(model="gpt-test", messages=MESSAGES)
            assert answer.choices[0].message.content
            chunks = list(
                client.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True)
            )
            assert chunks[-1].choices[0].finish_reason == "stop"
            fake.stream_cancelled.clear()
            stream = client.chat.completions.create(
                model="hang-stream", messages=MESSAGES, stream=True
            )
            next(iter(stream))
            stream.close()
            assert fake.stream_cancelled.wait(timeout=20), "backend stream not cancelled"
