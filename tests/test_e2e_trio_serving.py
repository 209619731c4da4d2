"""`inference-gateway serve --loop trio`: the same app on quart-trio and Hypercorn's trio
worker, in front of a real backend, including a client that leaves mid-stream."""

from __future__ import annotations

import signal
from pathlib import Path

import openai
import pytest

from tests.support.fake_openai import running_fake_openai
from tests.support.gateway_server import ALICE, write_fixtures
from tests.support.serve_process import serving

pytestmark = pytest.mark.e2e
MESSAGES = [{"role": "user", "content": "hello"}]


def test_trio_server_relays_and_cancels_upstream(tmp_path: Path) -> None:
    with running_fake_openai(models=["gpt-test", "hang-stream"]) as (fake, backend_url):
        cluster = {
            "cluster_name": "fake",
            "frameworks": ["api"],
            "openai_endpoints": ["chat/completions"],
            "cluster_adapter": "adaptors.clusters.openai_compatible.OpenAICompatibleCluster",
            "config": {"api_url": f"{backend_url}/v1"},
        }
        endpoints = [
            {
                "endpoint_slug": f"fake-api-{model}",
                "cluster": "fake",
                "framework": "api",
                "model": model,
                "endpoint_adapter": "adaptors.endpoints.direct_api.DirectAPIEndpoint",
                "config": {"api_url": f"{backend_url}/v1", "api_key_env_name": "UNSET_KEY"},
            }
            for model in ("gpt-test", "hang-stream")
        ]
        fixtures = write_fixtures(tmp_path / "fixtures", [cluster], endpoints)
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
