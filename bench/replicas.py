"""One replica against two behind nginx, on this machine, in one run.

    python -m bench.replicas [--seconds 10] [--rounds 3]

Starts the canned backend (nginx, as `python -m bench` does), then two topologies from
`deploy.topology` on the machine's PostgreSQL and Redis: nginx in front of one replica,
and nginx in front of two.  wrk drives each at concurrency 32 (JSON chat completions)
in alternating rounds, and the run prints requests/s for both, their ratio, and how much
of the machine's cores the load generator and both nginx took meanwhile: on a 2-core
machine they share the cores with the replicas, and the ratio says as much about that
as about the gateway.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

from bench.canned import MODEL_JSON, ensure_tools, running_nginx
from bench.load import run_wrk
from bench.suite import Cell, _cpu_seconds, free_port
from deploy.topology import _ensure_database, running_topology
from frontends.identity import ensure_tokens_file
from tests.support.gateway_server import write_fixtures

DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/inference_gateway_bench"
REDIS = "redis://127.0.0.1:6379/0"


def _fixtures(folder: Path, canned: str) -> Path:
    cluster = {
        "cluster_name": "bench",
        "frameworks": ["api"],
        "openai_endpoints": ["chat/completions"],
        "cluster_adapter": "adaptors.clusters.openai_compatible.OpenAICompatibleCluster",
        "config": {"api_url": f"{canned}/json/v1"},
    }
    endpoint = {
        "endpoint_slug": "bench-api-json",
        "cluster": "bench",
        "framework": "api",
        "model": MODEL_JSON,
        "endpoint_adapter": "adaptors.endpoints.direct_api.DirectAPIEndpoint",
        "config": {"api_url": f"{canned}/json/v1", "api_key_env_name": "IGW_BENCH_KEY"},
        "tpm_model": 10**12,
        "tpm_user": 10**12,
    }
    return write_fixtures(folder / "fixtures", [cluster], [endpoint])


def _children_cpu(pid: int) -> float:
    """CPU seconds of a process and its children (an nginx master and its workers)."""
    total = _cpu_seconds(pid)
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return total + sum(_cpu_seconds(int(c)) for c in children)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replicas", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ensure_tools("nginx", "wrk")
    _ensure_database(DATABASE)
    body = {"model": MODEL_JSON, "messages": [{"role": "user", "content": "How fast?"}]}
    rates = {1: Cell(), 2: Cell()}
    cores = os.cpu_count() or 1
    wrk_cpu = proxy_cpu = backend_cpu = wall = 0.0
    with tempfile.TemporaryDirectory(prefix="igw-bench-replicas-") as tmp, ExitStack() as stack:
        folder = Path(tmp)
        canned = stack.enter_context(running_nginx(folder / "canned", free_port()))
        backend_pid = int((folder / "canned" / "nginx.pid").read_text())
        fixtures = _fixtures(folder, canned)
        tokens = folder / "tokens.json"
        key = ensure_tokens_file(tokens)
        assert key is not None
        prefix = f"igw-bench-{uuid.uuid4().hex}:{{quota}}:"
        topologies = {
            n: stack.enter_context(
                running_topology(
                    folder / f"topology-{n}",
                    replicas=n,
                    database_url=DATABASE,
                    redis_url=REDIS,
                    tokens_file=tokens,
                    fixtures=fixtures,
                    settings={"redis_key_prefix": prefix, "log_level": "WARNING"},
                )
            )
            for n in (1, 2)
        }
        for n in range(args.rounds):
            for replicas in (1, 2) if n % 2 == 0 else (2, 1):
                topology = topologies[replicas]
                proxy_pid = int((folder / f"topology-{replicas}" / "nginx.pid").read_text())
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                proxy0, backend0 = _children_cpu(proxy_pid), _children_cpu(backend_pid)
                start = time.monotonic()
                rates[replicas].rounds.append(
                    run_wrk(
                        f"{topology.url}/v1/chat/completions",
                        body,
                        concurrency=32,
                        seconds=args.seconds,
                        token=key,
                        folder=folder,
                    )
                )
                if replicas == 2:
                    after = resource.getrusage(resource.RUSAGE_CHILDREN)
                    wrk_cpu += after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
                    proxy_cpu += _children_cpu(proxy_pid) - proxy0
                    backend_cpu += _children_cpu(backend_pid) - backend0
                    wall += time.monotonic() - start
    one, two = rates[1], rates[2]
    print(
        f"replicas behind nginx, JSON at concurrency 32, {args.rounds} round(s) of "
        f"{args.seconds:g} s each, alternating, {cores} cores, nothing pinned\n"
        f"1 replica:  {one.per_second:,.0f} req/s (p50 {one.p50:.1f} ms, p99 {one.p99:.1f} ms, "
        f"errors {one.errors})\n"
        f"2 replicas: {two.per_second:,.0f} req/s (p50 {two.p50:.1f} ms, p99 {two.p99:.1f} ms, "
        f"errors {two.errors})\n"
        f"ratio 2/1: {two.per_second / one.per_second:.2f}\n"
        f"during the 2-replica rounds: wrk {wrk_cpu / (wall * cores):.0%}, nginx in front "
        f"{proxy_cpu / (wall * cores):.0%}, the canned backend {backend_cpu / (wall * cores):.0%} "
        f"of the machine's {cores} cores"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
