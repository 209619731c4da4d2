"""The operator's commands, run as a person would: as subprocesses of the installed CLI."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from frontends.cli import _MessageOnly, command_name
from frontends.identity import ensure_tokens_file, local_username
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


def test_check_accepts_the_seed_dump_example_and_shows_the_filled_in_slugs(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [*CLI, "check", str(ROOT / "fixtures" / "examples" / "seed-dump")],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "metis-api-meta-llamallama-4-maverick-17b-128e-instruct" in result.stdout


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


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=_env(tmp_path), capture_output=True, text=True, timeout=60
    )


def test_serve_leaves_an_existing_tokens_file_as_it_is(tmp_path: Path) -> None:
    # `keys add` before the first `serve` makes the tokens file, but no key of the user's own.
    added = _cli(tmp_path, "keys", "add", "ada@example.org")
    assert added.returncode == 0
    ada = added.stdout.strip()
    tokens = tmp_path / "state" / "tokens.json"
    before_serving = tokens.read_bytes()
    before = _cli(tmp_path, "token")
    assert before.returncode == 1 and before.stdout == ""
    assert f"no key of yours in {tmp_path / 'state' / 'local-key'}" in before.stderr
    assert f"serve adds none to the existing {tokens}" in before.stderr
    assert f"keys add {local_username()}` makes a key now" in before.stderr
    process = subprocess.Popen(
        [*CLI, "serve", "--port", "0"],
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = [process.stdout.readline() for _ in range(5)]
        url = re.search(r"on (http://\S+)/v1", banner[0])
        assert url, banner
        # The banner says how to add a key, and makes none.
        assert "your token: no key of yours" in banner[3], banner
        assert f"keys add {local_username()}` makes a key now" in banner[3]
        assert "in a second terminal" in banner[4]
        reply = httpx.post(
            f"{url[1]}/v1/chat/completions",
            headers={"Authorization": f"Bearer {ada}"},
            json={"model": "demo-model", "messages": [{"role": "user", "content": "ping"}]},
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
    finally:
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert tokens.read_bytes() == before_serving
    assert not (tmp_path / "state" / "local-key").exists()


def test_a_key_is_made_only_with_a_tokens_file_that_did_not_exist(tmp_path: Path) -> None:
    path, key_path = tmp_path / "tokens.json", tmp_path / "local-key"
    path.write_text('{"keys": []}\n')  # an operator's file, even an empty one
    assert ensure_tokens_file(path, key_path) is None
    assert path.read_text() == '{"keys": []}\n' and not key_path.exists()
    path.unlink()
    key = ensure_tokens_file(path, key_path)
    assert key is not None and key_path.read_text().strip() == key
    assert [e["username"] for e in json.loads(path.read_text())["keys"]] == [local_username()]


def test_token_says_so_when_the_local_key_was_revoked(tmp_path: Path) -> None:
    state = tmp_path / "state"
    key = ensure_tokens_file(state / "tokens.json", state / "local-key")
    assert key and _cli(tmp_path, "token").stdout.strip() == key
    assert _cli(tmp_path, "keys", "revoke", local_username()).returncode == 0
    after = _cli(tmp_path, "token")
    assert after.returncode == 1 and key not in after.stdout
    assert f"the key in {state / 'local-key'} is not in {state / 'tokens.json'}" in after.stderr
    assert f"keys add {local_username()}` makes a key now" in after.stderr
    # A restart does not undo the revocation.
    assert ensure_tokens_file(state / "tokens.json", state / "local-key") is None


def test_token_says_when_static_keys_are_off(tmp_path: Path) -> None:
    env = _env(
        tmp_path,
        INFERENCE_GATEWAY_IDENTITY_PROVIDERS="oidc",
        INFERENCE_GATEWAY_OIDC_ISSUER="https://issuer.example.org",
        INFERENCE_GATEWAY_OIDC_AUDIENCE="gateway",
    )
    done = subprocess.run([*CLI, "token"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "static API keys are off (identity providers: oidc)" in done.stderr


def test_the_banner_names_a_command_a_fresh_shell_can_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    program = bin_dir / "inference-gateway"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    monkeypatch.setattr(sys, "argv", [str(program), "serve"])
    # Not activated: PATH does not lead to this program, so only its full path works.
    monkeypatch.setenv("PATH", str(tmp_path / "elsewhere"))
    assert command_name() == str(program.resolve())
    # Activated (or installed on PATH): the bare name is this very program.
    monkeypatch.setenv("PATH", str(bin_dir))
    assert command_name() == "inference-gateway"
    monkeypatch.setattr(sys, "argv", [str(ROOT / "frontends" / "cli.py")])
    assert command_name().endswith(" -m frontends.cli")


def test_serve_keeps_batches_and_the_request_log_on_one_engine(tmp_path: Path) -> None:
    from frontends.assembly import build_gateway
    from frontends.cli import _batch_parts
    from frontends.identity import StaticKeys
    from frontends.request_log import RequestLog
    from frontends.settings import Settings
    from transports.httpx_transport import HttpxTransport

    settings = Settings(state_dir=tmp_path / "state")
    gateway = build_gateway(REPO_FIXTURES, identity=StaticKeys(), transport=HttpxTransport())
    request_log = RequestLog.open(settings.store_url)
    try:
        parts = _batch_parts(settings, gateway, request_log.store)
        # One database, one engine: one connection pool (and for SQLite, one writer).
        assert parts["batches"].store.engine is request_log.store.engine
        assert parts["batch_runner"]._store is parts["batches"].store
    finally:
        request_log.store.close()


def test_the_access_logs_formatter_writes_what_the_plain_message_format_writes() -> None:
    plain, lean = logging.Formatter("%(message)s"), _MessageOnly("%(message)s")

    def record(**given: object) -> logging.LogRecord:
        made = logging.LogRecord("inference_gateway.access", logging.INFO, "", 0, "", (), None)
        made.__dict__.update(given)
        return made

    try:
        raise ValueError("boom")
    except ValueError:
        failure = sys.exc_info()
    for given in (
        {"msg": '{"request_id": "r1", "path": "/v1/%s"}'},
        {"msg": "%s of %d", "args": ("one", 2)},
        {"msg": "failed", "exc_info": failure},
        {"msg": "relayed", "exc_text": "Traceback (most recent call last): ..."},
        {"msg": "where", "stack_info": "Stack (most recent call last): ..."},
    ):
        assert lean.format(record(**given)) == plain.format(record(**given))
