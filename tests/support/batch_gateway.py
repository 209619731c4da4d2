"""A real gateway serving the files and batches API, its runner in the background, on a
real database, in front of the fake OpenAI backend."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from frontends.assembly import build_gateway
from frontends.batch_runner import BatchRunner
from frontends.batches import Batches, BatchLimits
from frontends.identity import StaticKeys
from frontends.store import BatchStore, Store
from frontends.web import create_app
from tests.support.gateway_server import write_fixtures, write_tokens
from tests.support.servers import serve_app
from transports.httpx_transport import HttpxTransport

KEY_ENV = "IGW_TEST_BATCH_BACKEND_KEY"
MODELS = ("gpt-test", "fail-500", "slow", "restricted")


def batch_fixtures(
    folder: Path,
    backend_url: str,
    models: Sequence[str] = MODELS,
    aliases: Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """One cluster on the fake backend, an endpoint per model (with its `aliases`, if
    given); `restricted` only for the group g-physics (alice has it, bob has not)."""
    cluster = {
        "cluster_name": "fake",
        "frameworks": ["api"],
        "openai_endpoints": ["chat/completions", "completions", "embeddings"],
        "cluster_adapter": "adaptors.clusters.openai_compatible.OpenAICompatibleCluster",
        "config": {"api_url": f"{backend_url}/v1", "api_key_env_name": KEY_ENV},
    }
    endpoints: list[dict[str, Any]] = []
    for model in models:
        entry: dict[str, Any] = {
            "endpoint_slug": f"fake-api-{model}",
            "cluster": "fake",
            "framework": "api",
            "model": model,
            "endpoint_adapter": "resource_server_async.endpoints.direct_api.DirectAPIEndpoint",
            "config": {
                "api_url": f"{backend_url}/v1",
                "api_key_env_name": KEY_ENV,
                "api_request_timeout": 30,
            },
        }
        if model == "restricted":
            entry["allowed_globus_groups"] = ["g-physics"]
        if aliases and model in aliases:
            entry["config"]["aliases"] = list(aliases[model])
        endpoints.append(entry)
    return write_fixtures(folder / "fixtures", [cluster], endpoints)


@attrs.frozen
class BatchGateway:
    url: str
    runner: BatchRunner | None
    store: BatchStore


@contextmanager
def running_batch_gateway(
    folder: Path,
    backend_url: str,
    database_url: str,
    *,
    limits: BatchLimits | None = None,
    with_runner: bool = True,
    poll_interval: float = 0.2,
    max_body_bytes: int = 16 * 1024 * 1024,
    aliases: Mapping[str, Sequence[str]] | None = None,
) -> Iterator[BatchGateway]:
    """A gateway with files and batches on `database_url`, served on a free port."""
    fixtures = batch_fixtures(folder, backend_url, aliases=aliases)
    tokens = write_tokens(folder)
    gateway = build_gateway(
        fixtures,
        identity=StaticKeys.from_file(tokens),
        transport=HttpxTransport(),
        environ={KEY_ENV: "unused"},
    )
    store = Store.connect(database_url)
    try:
        batch_store = BatchStore(store.engine)
        limits = limits or BatchLimits()
        batches = Batches(gateway, batch_store, limits=limits)
        runner = (
            BatchRunner(
                gateway, batch_store, concurrency=limits.concurrency, poll_interval=poll_interval
            )
            if with_runner
            else None
        )
        app = create_app(
            gateway, batches=batches, batch_runner=runner, max_body_bytes=max_body_bytes
        )
        with serve_app(app) as url:
            yield BatchGateway(url=url, runner=runner, store=batch_store)
    finally:
        store.close()
