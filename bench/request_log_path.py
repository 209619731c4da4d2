"""The request log through the whole request path: an embedded gateway (the built-in demo
model) answering requests from concurrent callers, with no store, then recording to an
SQLite file, then to a scratch PostgreSQL database.

    python -m bench.request_log_path [--requests 4000] [--concurrency 32] [--loop asyncio|trio]

Prints, per run: requests/s through `Gateway.request` (the log's cost on the request
path shows as the difference from "none"), and the time until every record was
committed after the last answer (the flush).  Every record is checked to be there.
Figures are from one run on one machine; compare runs only side by side.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio

from core import Identity
from frontends.embedding import FixedIdentity, open_gateway
from frontends.store import Store
from tests.support.databases import scratch_postgres_database

CHAT = {"model": "demo-model", "messages": [{"role": "user", "content": "Hi"}]}
AUTH = {"Authorization": "Bearer bench"}


async def _run(store: str | None, requests: int, concurrency: int) -> tuple[float, float]:
    """(requests/s while answering, seconds from the last answer until flushed)."""
    identity = FixedIdentity(Identity(username="bench@example.org"))
    async with open_gateway(identity=identity, store=store) as gateway:
        remaining = iter(range(requests))

        async def caller() -> None:
            for _ in remaining:
                answer = await gateway.request("chat/completions", CHAT, headers=AUTH)
                assert answer.status == 200

        started = time.perf_counter()
        async with anyio.create_task_group() as tasks:
            for _ in range(concurrency):
                tasks.start_soon(caller)
        answered = time.perf_counter()
    flushed = time.perf_counter()
    return requests / (answered - started), flushed - answered


def _count(url: str) -> int:
    store = Store.connect(url)
    try:
        return store.count()
    finally:
        store.close()


@contextmanager
def _databases() -> Iterator[list[tuple[str, str | None]]]:
    with tempfile.TemporaryDirectory() as folder, scratch_postgres_database("igw_bench") as pg:
        yield [
            ("none", None),
            ("sqlite", f"sqlite:///{Path(folder) / 'gateway.db'}"),
            ("postgresql", pg),
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--loop", choices=("asyncio", "trio"), default="asyncio")
    args = parser.parse_args()
    print(f"{args.requests} requests, {args.concurrency} concurrent callers, {args.loop}")
    print(f"{'store':<12}{'requests/s':>12}{'flush s':>10}")
    # A first run warms imports and caches, so "none" is not charged for them.
    anyio.run(_run, None, min(args.requests, 500), args.concurrency, backend=args.loop)
    with _databases() as runs:
        for name, url in runs:
            rate, flush = anyio.run(_run, url, args.requests, args.concurrency, backend=args.loop)
            if url is not None:
                stored = _count(url)
                assert stored == args.requests, f"{name}: {stored} of {args.requests} recorded"
            print(f"{name:<12}{rate:>12.0f}{flush:>10.3f}")


if __name__ == "__main__":
    main()
