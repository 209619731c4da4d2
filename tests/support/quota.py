"""Quota helpers for tests: the local Redis, a key prefix per test, fixtures with limits."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
import redis.exceptions

from tests.support.gateway_server import write_fixtures
from tests.support.serve_process import serving

__all__ = [
    "REDIS_URL",
    "closed_port_url",
    "limited_fixtures",
    "private_redis",
    "redis_prefix",
    "serve_process",
]

REDIS_URL = "redis://127.0.0.1:6379/0"


@contextmanager
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own (so tests cannot see each other's counts); its
    keys are deleted afterwards."""
    prefix = f"igw-test-{uuid.uuid4().hex}:{{quota}}:"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        try:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


def closed_port_url() -> str:
    """A Redis URL on a local port nothing listens on (the OS chose it, then we let go)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


def limited_fixtures(
    folder: Path,
    backend_url: str,
    models: Sequence[str],
    *,
    tpm_model: int = 0,
    tpm_user: int = 0,
    key_env: str = "UNSET_KEY",
) -> Path:
    """Fixtures with one endpoint per model of the fake backend, with these limits, whose
    API key is the environment variable `key_env` (unset: none is sent)."""
    cluster: Mapping[str, Any] = {
        "cluster_name": "fake",
        "frameworks": ["api"],
        "openai_endpoints": [
            "chat/completions",
            "completions",
            "embeddings",
            "responses",
            "messages",
        ],
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
            "config": {"api_url": f"{backend_url}/v1", "api_key_env_name": key_env},
            "tpm_model": tpm_model,
            "tpm_user": tpm_user,
        }
        for model in models
    ]
    return write_fixtures(folder, [cluster], endpoints)


@contextmanager
def serve_process(tmp_path: Path, fixtures: Path, loop: str, **settings: str) -> Iterator[str]:
    """`inference-gateway serve` as a subprocess on a port the OS picks; yields its URL
    and stops it with SIGTERM afterwards (it must exit cleanly)."""
    with serving(tmp_path / f"serve-{loop}", fixtures=fixtures, loop=loop, settings=settings) as s:
        yield s.url


@contextmanager
def private_redis(
    folder: Path, *, persist: bool = False
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A Redis server of the test's own on a Unix socket in `folder` (keep its path
    short), for a test that stops it: yields its URL and its process.

    `persist`: it saves its data to `folder` when the block ends (and stops cleanly), so
    the next one started on the same folder finds the counts it had."""
    socket_path = folder / "redis.sock"
    command = [shutil.which("redis-server") or "redis-server", "--port", "0"]
    command += ["--unixsocket", str(socket_path), "--dir", str(folder)]
    command += ["--save", "", "--appendonly", "no"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(unix_socket_path=str(socket_path))
    try:
        deadline = time.monotonic() + 20
        while True:  # a real process starting: poll it, with a deadline
            try:
                if client.ping():
                    break
            except redis.exceptions.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        yield f"unix://{socket_path}", process
        if persist:
            client.save()
            process.terminate()
            assert process.wait(timeout=20) == 0
    finally:
        client.close()
        if process.poll() is None:
            process.kill()
        process.wait()
