"""A real gateway whose catalog has, beside the fake OpenAI backend's models, a cluster
whose batches run as jobs of the fake scheduler (`CommandBatchEndpoint`), served with the
built-in runner and the delegated batches' watcher in the background."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from frontends.assembly import build_gateway
from frontends.batch_delegation import BatchDelegation
from frontends.batch_runner import BatchRunner
from frontends.batches import Batches, BatchLimits
from frontends.identity import StaticKeys
from frontends.store import BatchStore, Store
from frontends.web import create_app
from tests.support.batch_gateway import KEY_ENV, batch_fixtures
from tests.support.fake_scheduler import FakeScheduler
from tests.support.gateway_server import write_fixtures, write_tokens
from tests.support.servers import serve_app
from transports.httpx_transport import HttpxTransport

COMMAND_ADAPTOR = "adaptors.endpoints.command_batch.CommandBatchEndpoint"
# Models on the scheduler's cluster "hpc" (framework "vllm"): `batch-model` for anyone,
# `batch-restricted` only for the group g-physics; the cluster "hpc-private" is for
# g-physics alone.  (Alice is in g-physics, Bob is not.)
BATCH_MODEL = "batch-model"
# On "hpc" too: a delegating adaptor written as the seed's guide shows, whose batches run
# on a remote system that reads `input_file` itself (`tests.guide_adaptors.batch_endpoint`).
SEED_STYLE_MODEL = "seed-style-model"


def delegating_fixtures(folder: Path, backend_url: str, scheduler: FakeScheduler) -> Path:
    fixtures = batch_fixtures(folder, backend_url)
    clusters = [row["fields"] for row in json.loads((fixtures / "clusters.json").read_text())]
    endpoints = [row["fields"] for row in json.loads((fixtures / "endpoints.json").read_text())]
    backend = {"api_url": f"{backend_url}/v1", "api_key_env_name": KEY_ENV}
    for name, groups in (("hpc", []), ("hpc-private", ["g-physics"])):
        clusters.append(
            {
                "cluster_name": name,
                "frameworks": ["vllm"],
                "openai_endpoints": ["chat/completions"],
                "cluster_adapter": "adaptors.clusters.openai_compatible.OpenAICompatibleCluster",
                "allowed_globus_groups": groups,
                "config": backend,
            }
        )
    for cluster, model, groups in (
        ("hpc", BATCH_MODEL, []),
        ("hpc", "batch-restricted", ["g-physics"]),
        ("hpc-private", BATCH_MODEL, []),
    ):
        endpoints.append(
            {
                "endpoint_slug": f"{cluster}-vllm-{model}",
                "cluster": cluster,
                "framework": "vllm",
                "model": model,
                "endpoint_adapter": COMMAND_ADAPTOR,
                "allowed_globus_groups": groups,
                "config": scheduler.config(),
            }
        )
    endpoints.append(
        {
            "endpoint_slug": f"hpc-vllm-{SEED_STYLE_MODEL}",
            "cluster": "hpc",
            "framework": "vllm",
            "model": SEED_STYLE_MODEL,
            "endpoint_adapter": "tests.guide_adaptors.batch_endpoint.RemoteBatchEndpoint",
            "config": {"remote": "anywhere"},
        }
    )
    return write_fixtures(fixtures, clusters, endpoints)


@attrs.frozen
class DelegatingGateway:
    url: str
    store: BatchStore
    delegation: BatchDelegation
    work_dir: Path


@contextmanager
def running_delegating_gateway(
    folder: Path,
    backend_url: str,
    database_url: str,
    scheduler: FakeScheduler,
    *,
    poll_seconds: float = 0.2,
    limits: BatchLimits | None = None,
) -> Iterator[DelegatingGateway]:
    """The gateway on `database_url`, served on a free port, polling jobs every
    `poll_seconds`; inputs and outputs under `folder/work`."""
    fixtures = delegating_fixtures(folder, backend_url, scheduler)
    gateway = build_gateway(
        fixtures,
        identity=StaticKeys.from_file(write_tokens(folder)),
        transport=HttpxTransport(),
        environ={KEY_ENV: "unused"},
    )
    store = Store.connect(database_url)
    try:
        batch_store = BatchStore(store.engine)
        limits = limits or BatchLimits(max_active=1)
        work_dir = folder / "work"
        delegation = BatchDelegation(
            gateway, batch_store, work_dir=work_dir, poll_seconds=poll_seconds
        )
        runner = BatchRunner(
            gateway,
            batch_store,
            concurrency=limits.concurrency,
            poll_interval=0.2,
            delegation=delegation,
        )
        batches = Batches(gateway, batch_store, limits=limits)
        app = create_app(gateway, batches=batches, batch_runner=runner)
        with serve_app(app) as url:
            yield DelegatingGateway(
                url=url, store=batch_store, delegation=delegation, work_dir=work_dir
            )
    finally:
        store.close()


def seed_body(input_file: str, model: str = BATCH_MODEL, **extra: Any) -> dict[str, Any]:
    return {"input_file": input_file, "model": model, **extra}
