"""`inference-gateway serve --loop trio`: the same app on quart-trio and Hypercorn's trio
worker, in front of a real backend, including a client that leaves mid-stream."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from tests.support.fake_openai import running_fake_openai
from tests.support.gateway_server import ALICE, write_fixtures, write_tokens

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]
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
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("INFERENCE_GATEWAY_")},
            "PYTHONPATH": str(ROOT),
            "INFERENCE_GATEWAY_TOKENS_FILE": str(write_tokens(tmp_path)),
            "INFERENCE_GATEWAY_STATE_DIR": str(tmp_path / "state"),
        }
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "frontends.cli",
                "serve",
                "--port",
                "0",
                "--loop",
                "trio",
                "--fixtures",
                str(fixtures),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stdout is not None
            url = re.search(r"on (http://\S+)/v1", process.stdout.readline())
            assert url
            with openai.OpenAI(base_url=f"{url[1]}/v1", api_key=ALICE, max_retries=0) as client:
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
        finally:
            process.send_signal(signal.SIGINT)
            _out, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
