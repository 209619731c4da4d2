"""The operator's commands, run as a person would: as subprocesses of the installed CLI."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from tests.support.gateway_server import REPO_FIXTURES, write_fixtures

CLI = [sys.executable, "-m", "frontends.cli"]
ROOT = Path(__file__).resolve().parents[1]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERENCE_GATEWAY_")}
    env.update(INFERENCE_GATEWAY_STATE_DIR=str(tmp_path / "state"), PYTHONPATH=str(ROOT), **extra)
    return env


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_serve_on_embedded_defaults_answers_a_chat_completion(tmp_path: Path, loop: str) -> None:
    process = subprocess.Popen(
        [*CLI, "serve", "--port", "0", "--loop", loop],
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = [process.stdout.readline() for _ in range(4)]
        url = re.search(r"on (http://\S+)/v1", banner[0])
        token = re.search(r"your token \(new.*\): (\S+)", banner[3])
        assert url and token, banner
        with openai.OpenAI(base_url=f"{url[1]}/v1", api_key=token[1], max_retries=0) as client:
            reply = client.chat.completions.create(
                model="demo-model", messages=[{"role": "user", "content": "ping"}]
            )
            chunks = list(
                client.chat.completions.create(
                    model="demo-model", messages=[{"role": "user", "content": "ping"}], stream=True
                )
            )
        assert "ping" in (reply.choices[0].message.content or "")
        assert chunks[-1].choices[0].finish_reason == "stop"
    finally:
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    # The token is kept for next time and `token` prints it.
    printed = subprocess.run(
        [*CLI, "token"], env=_env(tmp_path), capture_output=True, text=True, check=True
    )
    assert printed.stdout.strip() == token[1]


def test_check_prints_the_catalog(tmp_path: Path) -> None:
    result = subprocess.run(
        [*CLI, "check", str(REPO_FIXTURES)], env=_env(tmp_path), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "local-demo-demo-model" in result.stdout
    assert "1 cluster(s), 1 endpoint(s)" in result.stdout


def test_check_accepts_the_examples(tmp_path: Path) -> None:
    result = subprocess.run(
        [*CLI, "check", str(ROOT / "fixtures" / "examples")],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("endpoint_change", "expected"),
    [
        ({"endpoint_adapter": "no.such.module.Adaptor"}, "field 'endpoint_adapter'"),
        ({"endpoint_slug": "a/b"}, "field 'endpoint_slug'"),
        ({"colour": "blue"}, "field 'colour'"),
        ({"config": {"api_url": 5}}, "field 'config"),
    ],
)
def test_check_names_file_entry_and_field(
    tmp_path: Path, endpoint_change: dict[str, object], expected: str
) -> None:
    endpoint = {
        "endpoint_slug": "c-api-m",
        "cluster": "c",
        "framework": "api",
        "model": "m",
        "endpoint_adapter": "adaptors.endpoints.direct_api.DirectAPIEndpoint",
        "config": {"api_url": "http://127.0.0.1:1/v1", "api_key_env_name": "K"},
        **endpoint_change,
    }
    cluster = {
        "cluster_name": "c",
        "frameworks": ["api"],
        "openai_endpoints": ["chat/completions"],
        "cluster_adapter": "adaptors.clusters.demo.DemoCluster",
    }
    fixtures = write_fixtures(tmp_path / "fx", [cluster], [endpoint])
    result = subprocess.run(
        [*CLI, "check", str(fixtures)], env=_env(tmp_path), capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "endpoints.json" in result.stderr
    assert "entry pk=1" in result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_setting_fails_at_start_naming_the_field(tmp_path: Path) -> None:
    result = subprocess.run(
        [*CLI, "serve"],
        env=_env(tmp_path, INFERENCE_GATEWAY_PORT="not-a-port"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "field 'port'" in result.stderr


def test_config_file_sets_the_fixtures(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(f'fixtures_dir = "{tmp_path / "missing"}"\n')
    result = subprocess.run(
        [*CLI, "serve"],
        env=_env(tmp_path, INFERENCE_GATEWAY_CONFIG=str(config)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert str(tmp_path / "missing" / "clusters.json") in result.stderr


def test_tokens_file_holds_only_a_hash_and_the_local_key_is_private(tmp_path: Path) -> None:
    from frontends.identity import ensure_tokens_file, first_token

    path = tmp_path / "t" / "tokens.json"
    key_path = tmp_path / "t" / "local-key"
    token = ensure_tokens_file(path, key_path)
    assert token and (path.stat().st_mode & 0o077) == 0
    assert (key_path.stat().st_mode & 0o077) == 0
    assert token not in path.read_text()
    entry = json.loads(path.read_text())["keys"][0]
    assert set(entry) >= {"salt", "sha256", "username"}
    assert first_token(path, key_path) == token
    assert ensure_tokens_file(path, key_path) is None
