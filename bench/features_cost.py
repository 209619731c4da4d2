"""What the service features cost on the request path: the same embedded gateway with
the request log, quotas, metrics and stream usage on, against the same gateway with
them all off.

Both gateways serve the same fixtures over an in-process transport that answers at
once, so the figure is the gateway's own Python; requests alternate between the two in
rounds, so whatever else the machine is doing hits both alike.  The quota limits are
set far above the load: the admission path runs on every request but never refuses.
The request log is what `serve` runs: a `RequestLog` on an SQLite file (WAL) in a
scratch folder, its writer draining the queue on a worker thread.

The log's writing happens off the request path, so "on" is reported twice: the time to
answer (what a caller waits for), and the time until every record of the round is in
the database (what the machine spends, writing included).  After each "on" round the
bench waits for the writer to finish, so the next "off" round is not charged for it.

    python -m bench.features_cost [--requests 4000] [--rounds 5]

Prints microseconds per request for each side (median of the rounds), the ratios, and
how many records the log wrote (every request of the "on" side; none may be dropped).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import attrs

from bench.core_cost import ALICE, ANSWER, BODY, _Canned
from bench.core_cost import _fixtures as core_fixtures
from core import QuotaPolicy
from frontends.assembly import build_gateway
from frontends.embedding import FixedIdentity
from frontends.gateway import Gateway
from frontends.log_sink import FanOut, LoggerSink
from frontends.metrics import MetricsSink
from frontends.quota import InProcessCounters
from frontends.request_log import RequestLog
from frontends.store import default_database_url

KEY_ENV = "IGW_BENCH_FEATURES_KEY"
HEADERS = {"Authorization": "Bearer k", "Content-Type": "application/json"}
BIG = 10**12
WARM_UP = 200
ON = "request log (SQLite), quotas, metrics, stream usage"


def _fixtures(folder: Path) -> Path:
    return core_fixtures(folder, key_env=KEY_ENV, tpm_model=BIG, tpm_user=BIG)


def _gateways(folder: Path, extra_sinks: list[Any]) -> tuple[Gateway, Gateway]:
    common: dict[str, Any] = {
        "identity": FixedIdentity(ALICE),
        "transport": _Canned(),
        "environ": {KEY_ENV: "sk-bench"},
    }
    off = build_gateway(folder, log_sink=LoggerSink(), **common)
    metrics = MetricsSink()
    on = build_gateway(
        folder,
        log_sink=FanOut(LoggerSink(), metrics, *extra_sinks),
        stream_observer=metrics,
        quota=InProcessCounters(),
        quota_policy=QuotaPolicy(requests_per_minute_per_user=BIG),
        stream_usage=True,
        **common,
    )
    return off, on


async def _run(gateway: Gateway, count: int) -> float:
    """Seconds to answer `count` requests, one after the other."""
    start = time.perf_counter()
    for _ in range(count):
        reply = await gateway.request("chat/completions", BODY, headers=HEADERS)
        assert reply.status == 200 and reply.body == ANSWER, reply.body
    return time.perf_counter() - start


async def _written(request_log: RequestLog, expected: int) -> None:
    """Until the log has dealt with `expected` records (a bench may poll)."""
    while True:
        status = request_log.status()
        if status["written"] + status["dropped"] + status["failed"] >= expected:
            return
        await asyncio.sleep(0.001)


@attrs.frozen
class Figures:
    """Medians over the rounds, in microseconds per request, and the log's counts."""

    off: float
    on: float
    on_written: float
    log: dict[str, int]


async def _measure(requests: int, rounds: int) -> Figures:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url = default_database_url(folder / "state")  # where serve keeps it
        request_log = await asyncio.to_thread(RequestLog.open, url)
        off, on = _gateways(_fixtures(folder), [request_log])
        async with AsyncExitStack() as stack:
            stack.push_async_callback(off.aclose)
            stack.push_async_callback(on.aclose)
            await stack.enter_async_context(request_log.running())
            await _run(off, WARM_UP)
            await _run(on, WARM_UP)
            sent = WARM_UP
            await _written(request_log, sent)
            samples: dict[str, list[float]] = {"off": [], "on": [], "on_written": []}
            for _ in range(rounds):
                samples["off"].append(await _run(off, requests) / requests * 1e6)
                start = time.perf_counter()
                samples["on"].append(await _run(on, requests) / requests * 1e6)
                sent += requests
                await _written(request_log, sent)
                samples["on_written"].append((time.perf_counter() - start) / requests * 1e6)
        log = {k: v for k, v in request_log.status().items() if k != "queue_depth"}
    return Figures(
        off=statistics.median(samples["off"]),
        on=statistics.median(samples["on"]),
        on_written=statistics.median(samples["on_written"]),
        log={**log, "requests": sent},
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    figures = asyncio.run(_measure(args.requests, args.rounds))
    log = figures.log
    print(f"on: {ON}; off: none of them")
    print(f"{args.requests} requests per round, {args.rounds} rounds, medians")
    print(f"{'side':<36}{'us/request':>12}")
    print(f"{'off':<36}{figures.off:>12.1f}")
    print(f"{'on, answered':<36}{figures.on:>12.1f}")
    print(f"{'on, answered and written':<36}{figures.on_written:>12.1f}")
    print(f"{'ratio on/off, answered':<36}{figures.on / figures.off:>12.2f}")
    print(f"{'ratio on/off, answered and written':<36}{figures.on_written / figures.off:>12.2f}")
    print(
        f"request log: {log['written']} of {log['requests']} records written, "
        f"{log['dropped']} dropped, {log['failed']} failed"
    )
    if log["written"] != log["requests"]:
        raise SystemExit("the request log lost records: the figures leave its cost out")


if __name__ == "__main__":
    main()
