"""The status page's tests' gateway: fixtures with public and restricted models on the
demo backend, and some traffic in the request log to show figures and usage for."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.gateway_server import ALICE, BOB, write_fixtures

OPERATIONS = ["chat/completions", "completions", "embeddings", "responses", "messages"]
TPM_USER = 5000  # alice's tokens per minute on the public demo model


def _endpoint(slug: str, cluster: str, model: str, **extra: Any) -> dict[str, Any]:
    return {
        "endpoint_slug": slug,
        "cluster": cluster,
        "framework": "demo",
        "model": model,
        "endpoint_adapter": "adaptors.endpoints.demo.DemoEndpoint",
        "config": {},
        **extra,
    }


def status_fixtures(folder: Path) -> Path:
    """`local` (open to all): `demo-model` (running, tpm_user 5000), `idle-model` (not
    in the cluster's job report: unknown) and `secret-model` (example.org only);
    `physics` (group g-physics only): `physics-model`."""
    clusters = [
        {
            "cluster_name": "local",
            "frameworks": ["demo"],
            "openai_endpoints": OPERATIONS,
            "cluster_adapter": "adaptors.clusters.demo.DemoCluster",
            "config": {"models": ["demo-model", "secret-model"]},
        },
        {
            "cluster_name": "physics",
            "frameworks": ["demo"],
            "openai_endpoints": OPERATIONS,
            "cluster_adapter": "adaptors.clusters.demo.DemoCluster",
            "allowed_globus_groups": ["g-physics"],
            "config": {"models": ["physics-model"]},
        },
    ]
    endpoints = [
        _endpoint("local-demo-demo-model", "local", "demo-model", tpm_user=TPM_USER),
        _endpoint("local-demo-idle-model", "local", "idle-model"),
        _endpoint(
            "local-demo-secret-model", "local", "secret-model", allowed_domains=["example.org"]
        ),
        _endpoint("physics-demo-physics-model", "physics", "physics-model"),
    ]
    return write_fixtures(folder, clusters, endpoints)


PUBLIC_MODELS = {"demo-model": "running", "idle-model": "unknown"}
ALICE_MODELS = {**PUBLIC_MODELS, "secret-model": "running", "physics-model": "running"}
RESTRICTED = ("secret-model", "physics-model", "physics")


def _chat(client: httpx.Client, url: str, key: str, model: str, *, stream: bool) -> None:
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}], "stream": stream}
    answer = client.post(
        f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert answer.status_code == 200, answer.text
    answer.read()


def make_traffic(url: str) -> int:
    """Requests from alice (demo-model whole and streamed, physics-model) and bob, then
    wait until the request log holds them; returns how many alice made on demo-model."""
    with httpx.Client(timeout=30) as client:
        for stream in (False, True, False, True):
            _chat(client, url, ALICE, "demo-model", stream=stream)
        _chat(client, url, ALICE, "physics-model", stream=False)
        _chat(client, url, BOB, "demo-model", stream=False)
        deadline = time.monotonic() + 30
        while True:
            log = client.get(f"{url}/resource_server/health").json()["request_log"]
            if log.get("written", 0) >= 6:
                return 4
            assert time.monotonic() < deadline, f"the request log never held 6 records: {log}"
            time.sleep(0.05)  # polling an observable state, with a deadline
