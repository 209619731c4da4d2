"""`inference-gateway serve --loop trio`: the same app on quart-trio and Hypercorn's trio
worker, in front of a real backend, including a client that leaves mid-stream."""

from __future__ import annotations

import signal
from pathlib import Path

import openai
import pytest

from tests.support.fake_openai import running_fake_openai
from tests.support.gateway_server import ALICE
from tests.support.quota import limited_fixtures
from tests.support.serve_process import serving

pytestmark = pytest.mark.e2e
MESSAGES = [{"role": "user", "content": "hello"}]


def test_trio_server_relays_and_cancels_upstream(tmp_path: Path) -> None:
    with running_fake_openai(models=["gpt-test", "hang-stream"]) as (fake, backend_url):
        models = ["gpt-test", "hang-stream"]
        fixtures = limited_fixtures(tmp_path / "fixtures", backend_url, models)
        # SIGINT (Ctrl-C) stops it; it must exit cleanly.
        with (
            serving(tmp_path, stop_signal=signal.SIGINT, fixtures=fixtures, loop="trio") as served,
            openai.OpenAI(base_url=f"{served.url}/v1", api_key=ALICE, max_retries=0) as client,
        ):
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
