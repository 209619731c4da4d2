"""How fast the built-in batch runner goes: one batch of N chat lines through the runner
(each line through `Gateway.handle`, each outcome written to the store) against the fake
OpenAI backend, on an SQLite file and on a scratch PostgreSQL database; beside it, the
same N requests sent straight to the backend at the same concurrency.

    python -m bench.batch_runner [--lines 1000] [--concurrency 8] [--databases sqlite,postgresql]

Prints lines/s for each.  The backend runs in this process (another thread), so on a
small machine the figures are CPU-bound; compare them only side by side.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx

from frontends.assembly import build_gateway
from frontends.batch_runner import BatchRunner
from frontends.batches import Batches, BatchLimits
from frontends.identity import StaticKeys
from frontends.store import BatchStore, Store
from tests.support.batch_gateway import KEY_ENV, batch_fixtures
from tests.support.databases import scratch_postgres_database
from tests.support.fake_openai import running_fake_openai
from tests.support.gateway_server import ALICE, write_tokens
from transports.httpx_transport import HttpxTransport


def _body(i: int) -> dict[str, object]:
    return {"model": "gpt-test", "messages": [{"role": "user", "content": f"line {i}"}]}


def _input(lines: int) -> bytes:
    return "".join(
        json.dumps(
            {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": _body(i),
            }
        )
        + "\n"
        for i in range(lines)
    ).encode()


@contextmanager
def _database(kind: str, folder: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'bench.db'}"
    else:
        with scratch_postgres_database("igw_bench") as url:
            yield url


async def _runner(backend_url: str, url: str, folder: Path, lines: int, concurrency: int) -> float:
    gateway = build_gateway(
        batch_fixtures(folder, backend_url, models=["gpt-test"]),
        identity=StaticKeys.from_file(write_tokens(folder)),
        transport=HttpxTransport(),
        environ={KEY_ENV: "unused"},
    )
    store = await Store.open(url)
    try:
        batches = BatchStore(store.engine)
        api = Batches(gateway, batches, limits=BatchLimits(concurrency=concurrency))
        auth = f"Bearer {ALICE}"
        uploaded = await api.upload(auth, purpose="batch", filename="in", content=_input(lines))
        request = {
            "input_file_id": uploaded.json()["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        }
        batch_id = (await api.create(auth, json.dumps(request).encode())).json()["id"]
        runner = BatchRunner(gateway, batches, concurrency=concurrency, poll_interval=0.05)
        started = time.perf_counter()
        async with anyio.create_task_group() as group:
            group.start_soon(runner.run)
            while True:
                batch = await batches.call(batches.get_batch, batch_id)
                if batch is not None and batch.status == "completed":
                    break
                await anyio.sleep(0.02)
            runner.stop()
        return lines / (time.perf_counter() - started)
    finally:
        await gateway.aclose()
        await store.aclose()


async def _direct(backend_url: str, lines: int, concurrency: int) -> float:
    limiter = anyio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=backend_url) as client:

        async def one(i: int) -> None:
            async with limiter:
                (await client.post("/v1/chat/completions", json=_body(i))).raise_for_status()

        started = time.perf_counter()
        async with anyio.create_task_group() as group:
            for i in range(lines):
                group.start_soon(one, i)
        return lines / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--databases", default="sqlite,postgresql")
    args = parser.parse_args()
    with running_fake_openai(models=["gpt-test"]) as (_, backend_url):
        direct = anyio.run(_direct, backend_url, args.lines, args.concurrency)
        print(f"direct to the backend  {direct:8.0f} requests/s")
        for kind in args.databases.split(","):
            with tempfile.TemporaryDirectory() as tmp, _database(kind, Path(tmp)) as url:
                rate = anyio.run(_runner, backend_url, url, Path(tmp), args.lines, args.concurrency)
                print(f"batch runner, {kind:10s} {rate:8.0f} lines/s")


if __name__ == "__main__":
    main()
