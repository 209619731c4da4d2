"""How fast the request log writes: records submitted to a `LogWriter` as fast as the
loop can, then flushed, on an SQLite file and on a scratch PostgreSQL database.

    python -m bench.log_store [--records 20000] [--batch-size 500] [--loop asyncio|trio]

Prints, per database: records/s from the first submit until the last record is
committed, and the cost of one `submit()` on the request path.  Figures are from one run
on one machine; compare runs only side by side.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio

from frontends.store import LogWriter, RequestRecord, Store
from tests.support.databases import scratch_postgres_database

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _records(count: int) -> list[RequestRecord]:
    return [
        RequestRecord(
            id=f"bench-{n:08d}",
            request_id=f"req-{n:08d}",
            received_at=T0 + timedelta(milliseconds=n),
            first_byte_at=T0 + timedelta(milliseconds=n + 40),
            done_at=T0 + timedelta(milliseconds=n + 900),
            route="chat/completions",
            status=200,
            streamed=n % 2 == 0,
            username=f"user{n % 50}@example.org",
            identity_provider="static",
            cluster="local",
            framework="vllm",
            model=f"model-{n % 5}",
            endpoint_slug=f"local-vllm-model-{n % 5}",
            backend_task_id=f"task-{n}",
            prompt_tokens=120,
            completion_tokens=80,
            total_tokens=200,
            bytes_in=900,
            bytes_out=1500,
            client_address="127.0.0.1",
        )
        for n in range(count)
    ]


async def _measure(url: str, records: list[RequestRecord], batch_size: int) -> tuple[float, float]:
    """(records/s end to end, seconds per submit)."""
    store = await Store.open(url)
    try:
        writer = LogWriter(store, queue_size=len(records), batch_size=batch_size)
        async with anyio.create_task_group() as tasks:
            await tasks.start(writer.run)
            start = time.perf_counter()
            for record in records:
                writer.submit(record)
            submitted = time.perf_counter()
            await writer.aclose()
            done = time.perf_counter()
        stored = await anyio.to_thread.run_sync(store.count)
        if (writer.written, stored) != (len(records), len(records)):
            raise SystemExit(f"lost records: written {writer.written}, stored {stored}")
        return len(records) / (done - start), (submitted - start) / len(records)
    finally:
        await store.aclose()


@contextmanager
def _databases(folder: Path) -> Iterator[list[tuple[str, str]]]:
    with scratch_postgres_database("igw_bench") as postgres:
        yield [("sqlite", f"sqlite:///{folder / 'bench.db'}"), ("postgresql", postgres)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--loop", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args()
    records = _records(args.records)
    print(f"{args.records} records, batches of up to {args.batch_size}, on {args.loop}")
    print(f"{'database':<12}{'records/s':>12}{'submit µs':>12}")
    with tempfile.TemporaryDirectory() as folder, _databases(Path(folder)) as databases:
        for name, url in databases:
            rate, submit = anyio.run(_measure, url, records, args.batch_size, backend=args.loop)
            print(f"{name:<12}{rate:>12,.0f}{submit * 1e6:>12.2f}")


if __name__ == "__main__":
    main()
