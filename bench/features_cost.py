"""What the service features cost on the request path: the same embedded gateway with
quotas, metrics and the request log on, against the same gateway with them off.

Both gateways serve the same fixtures over an in-process transport that answers at
once, so the figure is the gateway's own Python; requests alternate between the two in
rounds, so whatever else the machine is doing hits both alike.  The quota limits are
set far above the load: the admission path runs on every request but never refuses.

    python -m bench.features_cost [--requests 4000] [--rounds 5]

Prints microseconds per request for each side (median of the rounds) and the ratio.
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

from bench.core_cost import ALICE, ANSWER, BODY, _Canned
from bench.core_cost import _fixtures as core_fixtures
from core import QuotaPolicy
from frontends.assembly import build_gateway
from frontends.embedding import FixedIdentity
from frontends.gateway import Gateway
from frontends.log_sink import FanOut, LoggerSink
from frontends.metrics import MetricsSink
from frontends.quota import InProcessCounters

KEY_ENV = "IGW_BENCH_FEATURES_KEY"
HEADERS = {"Authorization": "Bearer k", "Content-Type": "application/json"}
BIG = 10**12


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
    start = time.perf_counter()
    for _ in range(count):
        reply = await gateway.request("chat/completions", BODY, headers=HEADERS)
        assert reply.status == 200 and reply.body == ANSWER, reply.body
    return (time.perf_counter() - start) / count * 1e6


async def _measure(requests: int, rounds: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        off, on = _gateways(_fixtures(Path(tmp)), [])
        async with AsyncExitStack() as stack:
            stack.push_async_callback(off.aclose)
            stack.push_async_callback(on.aclose)
            await _run(off, 200)
            await _run(on, 200)
            samples: dict[str, list[float]] = {"off": [], "on": []}
            for _ in range(rounds):
                samples["off"].append(await _run(off, requests))
                samples["on"].append(await _run(on, requests))
    return statistics.median(samples["off"]), statistics.median(samples["on"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    off, on = asyncio.run(_measure(args.requests, args.rounds))
    print(f"{'features':<34}{'us/request':>12}")
    print(f"{'off':<34}{off:>12.1f}")
    print(f"{'on (quotas, metrics, stream usage)':<34}{on:>12.1f}")
    print(f"{'ratio on/off':<34}{on / off:>12.2f}")


if __name__ == "__main__":
    main()
