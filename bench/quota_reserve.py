"""What a quota reserve adds to a request: `reserve()` on the in-process counters and on
the Redis counters (a script on the local Redis, from a worker thread), one at a time and
with many in flight.

    python -m bench.quota_reserve [--reserves 2000] [--concurrency 50] [--held 1000]
                                  [--loop asyncio|trio] [--redis-url redis://...]

Each reserve holds the three reservations a request with every limit on makes
(tpm_model, tpm_user, requests per minute), under capacities it never reaches, settled
at once as a request would be.  Before measuring, `--held` reservations are made on the
model's key (a model that served that many requests in the last minute); every key
then grows by what is measured.  Prints, per counter: the median and 99th percentile of
one reserve awaited alone, and reserves/s with `--concurrency` in flight.  Keys go under
a prefix of the run's own, deleted afterwards.  Figures are from one run on one
machine; compare runs only side by side.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

import anyio
import redis

from core import Limit, Reservation
from frontends.quota import InProcessCounters, QuotaCounters, RedisCounters

BIG = 10**12


def _reservations(user: int) -> list[Reservation]:
    return [
        Reservation(limit=Limit.MODEL_TOKENS, key="tpm_model:m", amount=1100, capacity=BIG),
        Reservation(limit=Limit.USER_TOKENS, key=f"tpm_user:m:u{user}", amount=1100, capacity=BIG),
        Reservation(limit=Limit.USER_REQUESTS, key=f"rpm_user:u{user}", amount=1, capacity=BIG),
    ]


async def _one_at_a_time(counters: QuotaCounters, count: int) -> list[float]:
    seconds = []
    for n in range(count):
        wanted = _reservations(n % 50)
        start = time.perf_counter()
        refusal = await counters.reserve(f"alone-{n}", wanted)
        seconds.append(time.perf_counter() - start)
        assert refusal is None
        counters.settle(f"alone-{n}", [r.key for r in wanted if r.limit.counts_tokens], 200)
    return seconds


async def _fill(counters: QuotaCounters, held: int) -> None:
    for n in range(held):
        assert await counters.reserve(f"held-{n}", _reservations(n % 50)[:1]) is None


async def _in_flight(counters: QuotaCounters, count: int, concurrency: int) -> float:
    """Reserves per second with `concurrency` callers reserving back to back."""
    per_caller = count // concurrency

    async def caller(c: int) -> None:
        for n in range(per_caller):
            wanted = _reservations(c)
            assert await counters.reserve(f"flight-{c}-{n}", wanted) is None

    start = time.perf_counter()
    async with anyio.create_task_group() as tasks:
        for c in range(concurrency):
            tasks.start_soon(caller, c)
    return per_caller * concurrency / (time.perf_counter() - start)


def _ms(value: float) -> str:
    return f"{value * 1000:8.3f} ms"


async def _bench(args: argparse.Namespace) -> None:
    prefix = f"bench-{uuid.uuid4().hex}:{{quota}}:"
    candidates: list[tuple[str, QuotaCounters]] = [
        ("in-process", InProcessCounters()),
        ("redis", RedisCounters(args.redis_url, prefix=prefix)),
    ]
    print(
        f"loop {args.loop}, {args.reserves} reserves of 3 limits each, "
        f"{args.held} held on the model's key before"
    )
    print(f"{'counters':<12}{'median':>12}{'p99':>12}{'reserves/s':>16}")
    try:
        for name, counters in candidates:
            await _fill(counters, args.held)
            alone = sorted(await _one_at_a_time(counters, args.reserves))
            rate = await _in_flight(counters, args.reserves, args.concurrency)
            p99 = alone[int(len(alone) * 0.99) - 1]
            print(
                f"{name:<12}{_ms(statistics.median(alone)):>12}{_ms(p99):>12}"
                f"{rate:>12.0f} (x{args.concurrency})"
            )
            status = getattr(counters, "status", None)
            if status is not None and status().get("redis") == "unreachable":
                print("  (Redis was unreachable: these are the in-process fallback's figures)")
    finally:
        for _, counters in candidates:
            close = getattr(counters, "aclose", None)
            if close is not None:
                await close()
        client = redis.Redis.from_url(args.redis_url)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reserves", type=int, default=2000)
    parser.add_argument("--held", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--loop", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    anyio.run(_bench, args, backend=args.loop)


if __name__ == "__main__":
    main()
