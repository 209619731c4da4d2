"""A soak: many mixed requests through one gateway process, and what it holds before and
after (RSS, open file descriptors), to show that nothing accumulates.

    python -m bench.soak [--requests 100000] [--concurrency 32]

The gateway (`serve`, as `python -m bench` starts it: request log, quotas and metrics
on) sits in front of the canned nginx backend.  The mix, in a fixed rotation: JSON chat
completions, streams read to the end, streams the client abandons after the first
chunk, an unknown model (404), a body that is not JSON (400) and no key (401).  RSS and
descriptors are read after a warm-up, every tenth of the run, and at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import httpx

from bench.canned import MODEL_JSON, MODEL_SSE, ensure_tools, running_nginx
from bench.suite import KEY_ENV, ROOT, _fixtures, _process, _rss_kb, free_port
from tests.support.gateway_server import ALICE, write_tokens

AUTH = {"Authorization": f"Bearer {ALICE}"}
MIX = ("json", "json", "json", "json", "stream", "stream", "abandon", "404", "400", "401")


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _one(client: httpx.AsyncClient, url: str, kind: str) -> str:
    chat = f"{url}/v1/chat/completions"
    hello = [{"role": "user", "content": "soak"}]
    if kind == "json":
        answer = await client.post(
            chat, json={"model": MODEL_JSON, "messages": hello}, headers=AUTH
        )
    elif kind in ("stream", "abandon"):
        body = {"model": MODEL_SSE, "messages": hello, "stream": True}
        async with client.stream("POST", chat, json=body, headers=AUTH) as answer:
            async for _ in answer.aiter_raw():
                if kind == "abandon":
                    break  # leaving the block closes the connection mid-stream
        return f"{kind} {answer.status_code}"
    elif kind == "404":
        answer = await client.post(
            chat, json={"model": "no-such-model", "messages": hello}, headers=AUTH
        )
    elif kind == "400":
        answer = await client.post(
            chat, content=b"{not json", headers={**AUTH, "Content-Type": "application/json"}
        )
    else:
        answer = await client.post(chat, json={"model": MODEL_JSON, "messages": hello})
    return f"{kind} {answer.status_code}"


async def _soak(
    url: str, pid: int, requests: int, concurrency: int, report: bool = True
) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        next_index = 0
        tenth = max(1, requests // 10)

        async def worker() -> None:
            nonlocal next_index
            while next_index < requests:
                index = next_index
                next_index += 1
                try:
                    outcomes[await _one(client, url, MIX[index % len(MIX)])] += 1
                except httpx.HTTPError as exc:
                    outcomes[f"{MIX[index % len(MIX)]} {type(exc).__name__}"] += 1
                if report and (index + 1) % tenth == 0:
                    print(
                        f"  {index + 1:>7,} requests: RSS {_rss_kb(pid) / 1024:.1f} MB, "
                        f"{_fds(pid)} fds",
                        flush=True,
                    )

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args(argv)
    ensure_tools("nginx")
    with tempfile.TemporaryDirectory(prefix="igw-soak-") as tmp, ExitStack() as stack:
        folder = Path(tmp)
        canned = stack.enter_context(running_nginx(folder / "nginx", free_port()))
        fixtures = _fixtures(folder, canned, canned)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("INFERENCE_GATEWAY_")}
        env.update(
            PYTHONPATH=str(ROOT),
            INFERENCE_GATEWAY_TOKENS_FILE=str(write_tokens(folder)),
            INFERENCE_GATEWAY_STATE_DIR=str(folder / "state"),
            INFERENCE_GATEWAY_LOG_LEVEL="WARNING",
        )
        env[KEY_ENV] = "soak-backend-key"
        serve = [sys.executable, "-m", "frontends.cli", "serve", "--port", str(port)]
        gateway = stack.enter_context(
            _process(
                [*serve, "--fixtures", str(fixtures)],
                env,
                folder / "gateway.log",
                port,
                "the gateway",
            )
        )
        url = f"http://127.0.0.1:{port}"
        asyncio.run(_soak(url, gateway.pid, 2_000, args.concurrency, report=False))  # warm-up
        start_rss, start_fds, started = _rss_kb(gateway.pid), _fds(gateway.pid), time.monotonic()
        print(f"after a 2,000-request warm-up: RSS {start_rss / 1024:.1f} MB, {start_fds} fds")
        outcomes = asyncio.run(_soak(url, gateway.pid, args.requests, args.concurrency))
        seconds = time.monotonic() - started
        end_rss, end_fds = _rss_kb(gateway.pid), _fds(gateway.pid)
    print(
        f"{args.requests:,} mixed requests at concurrency {args.concurrency} in {seconds:.0f} s: "
        f"RSS {start_rss / 1024:.1f} → {end_rss / 1024:.1f} MB "
        f"({(end_rss - start_rss) / start_rss:+.1%}), fds {start_fds} → {end_fds}"
    )
    print("outcomes: " + ", ".join(f"{k}: {v:,}" for k, v in sorted(outcomes.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
