"""What one open stream costs the served gateway (or the floor), by allocation site.

    python -m bench.stream_memory [--streams 2000] [--server gateway|floor] [--trace]
                                  [--loop asyncio|trio] [--top 30]

Starts the drip backend and the server as `python -m bench` does (the gateway with its
production features on), holds N streams, then N more, and prints RSS per stream over the
second N (the marginal cost, warm-up excluded) and from idle.  With `--trace` the server
runs under tracemalloc and dumps a snapshot after each N; the difference, divided by N,
is printed grouped by the innermost frame and by the innermost frame in this repository:
bytes per stream by allocation site.  (tracemalloc's own bookkeeping inflates RSS then;
compare RSS without `--trace`.)
"""

from __future__ import annotations

import argparse
import os
import runpy
import signal
import sys
import tempfile
import time
import tracemalloc
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path

from bench.suite import (
    KEY_ENV,
    ROOT,
    _descriptor_limit,
    _fixtures,
    _process,
    _rss_kb,
    free_port,
    holding,
    running_drip,
)
from tests.support.gateway_server import write_tokens

DUMP_ENV = "IGW_BENCH_TRACEMALLOC_DUMP"


def _child(module: str, argv: list[str]) -> None:
    """Runs `module` as __main__ with tracemalloc on; SIGUSR1 dumps a snapshot."""
    dump = os.environ.get(DUMP_ENV)
    if dump:
        import gc

        frames = int(os.environ.get("IGW_BENCH_TRACEMALLOC_FRAMES", "12"))

        def on_signal(signum: int, frame: object) -> None:
            # Tracing starts at the first signal: the start-up and the first N streams
            # run at full speed, and the snapshots' difference is what came after.
            if not tracemalloc.is_tracing():
                tracemalloc.start(frames)
            gc.collect()
            path = Path(dump)
            tracemalloc.take_snapshot().dump(str(path) + ".part")
            os.replace(str(path) + ".part", path)

        signal.signal(signal.SIGUSR1, on_signal)
    sys.argv = [module, *argv]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def _snapshot(pid: int, path: Path) -> tracemalloc.Snapshot:
    if path.exists():
        path.unlink()
    os.kill(pid, signal.SIGUSR1)
    for _ in range(1200):
        if path.exists():
            return tracemalloc.Snapshot.load(str(path))
        time.sleep(0.1)
    raise RuntimeError("no snapshot from the server")


def _ours(filename: str) -> bool:
    return filename.startswith(str(ROOT)) and "/.venv/" not in filename


def _report(
    before: tracemalloc.Snapshot,
    after: tracemalloc.Snapshot,
    n: int,
    top: int,
    tracebacks: int,
    match: str | None,
) -> None:
    diffs = after.compare_to(before, "traceback")
    total = sum(d.size_diff for d in diffs)
    print(f"tracemalloc: {total / n:,.0f} B per stream traced in all")
    inner: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    mine: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for d in diffs:
        frames = list(reversed(d.traceback))  # innermost first (a traceback is oldest first)
        first = frames[0]
        key = f"{first.filename}:{first.lineno}"
        inner[key][0] += d.size_diff
        inner[key][1] += d.count_diff
        own = next((f for f in frames if _ours(f.filename)), None)
        own_key = "(none of ours)" if own is None else f"{own.filename}:{own.lineno}"
        mine[own_key][0] += d.size_diff
        mine[own_key][1] += d.count_diff
    print("\n-- the largest allocation sites, whole tracebacks (innermost first)")
    chosen = [d for d in diffs if match is None or any(match in f.filename for f in d.traceback)]
    for d in sorted(chosen, key=lambda d: -d.size_diff)[:tracebacks]:
        print(f"{d.size_diff / n:9,.0f} B {d.count_diff / n:7.2f}")
        for f in reversed(d.traceback):
            print(f"      {f.filename.replace(str(ROOT) + '/', '')}:{f.lineno}")
    for title, table in (("innermost frame", inner), ("innermost frame of ours", mine)):
        print(f"\n-- by {title}: bytes / blocks per stream")
        ranked = sorted(table.items(), key=lambda kv: -abs(kv[1][0]))[:top]
        for key, (size, count) in ranked:
            print(f"{size / n:9,.0f} B {count / n:7.2f}  {key.replace(str(ROOT) + '/', '')}")


_T0 = time.monotonic()


def _say(what: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f} s] {what}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--server", choices=("gateway", "floor"), default="gateway")
    parser.add_argument("--loop", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument("--trace", action="store_true")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--tracebacks", type=int, default=0, help="print this many in full")
    parser.add_argument("--match", help="print only tracebacks with a frame naming this")
    parser.add_argument("--tree", help="run the servers from this checkout (another version)")
    parser.add_argument("--transport", default="h11")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between drips")
    args = parser.parse_args()
    n = args.streams
    _descriptor_limit(2 * n)
    uvloop = args.loop == "asyncio" and not args.no_uvloop
    with tempfile.TemporaryDirectory(prefix="igw-mem-") as tmp, ExitStack() as stack:
        folder = Path(tmp)
        drip_port, port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("INFERENCE_GATEWAY_")}
        # --tree: the servers run that checkout's code (this file and the drip and hold
        # clients come from this one, behind it on the path).
        env["PYTHONPATH"] = f"{args.tree}:{ROOT}" if args.tree else str(ROOT)
        if args.tree:
            env["PYTHONSAFEPATH"] = "1"  # not the working directory first: the path decides
        stack.enter_context(running_drip(folder, drip_port, args.every, env))
        dump = folder / "snapshot"
        server_env = dict(env)
        if args.trace:
            server_env[DUMP_ENV] = str(dump)
        child = [sys.executable, str(Path(__file__).resolve()), "--child"]
        if args.server == "floor":
            command = [*child, "bench.floor", "--port", str(port), "--loop", args.loop]
            command += ["--every", str(args.every)]
            command += ["--uvloop"] if uvloop else []
        else:
            fixtures = _fixtures(folder, "http://127.0.0.1:9", f"http://127.0.0.1:{drip_port}")
            server_env.update(
                {
                    KEY_ENV: "bench-backend-key",
                    "INFERENCE_GATEWAY_TOKENS_FILE": str(write_tokens(folder)),
                    "INFERENCE_GATEWAY_STATE_DIR": str(folder / "state"),
                    "INFERENCE_GATEWAY_LOG_LEVEL": "WARNING",
                    "INFERENCE_GATEWAY_TRANSPORT": args.transport,
                    "INFERENCE_GATEWAY_UVLOOP": str(uvloop).lower(),
                    "INFERENCE_GATEWAY_MAX_CONNECTIONS_PER_BACKEND": str(2 * n + 100),
                    "INFERENCE_GATEWAY_MAX_CONNECTIONS": str(2 * n + 1000),
                }
            )
            command = [*child, "frontends.cli", "serve", "--port", str(port)]
            command += ["--fixtures", str(fixtures), "--loop", args.loop]
        server = stack.enter_context(
            _process(command, server_env, folder / "server.log", port, args.server)
        )
        _say("server up")
        # Warm up: a few streams opened and closed (imports, first connections).
        with holding(port, 20, env):
            pass
        time.sleep(1)
        idle = _rss_kb(server.pid)
        with holding(port, n, env) as first:
            one = _rss_kb(server.pid)
            _say("first N held")
            snap1 = _snapshot(server.pid, dump) if args.trace else None
            with holding(port, n, env) as second:
                two = _rss_kb(server.pid)
                _say("second N held")
                snap2 = _snapshot(server.pid, dump) if args.trace else None
        _say("released")
        print(f"{args.server} ({args.loop}{', uvloop' if uvloop else ''}): held {first}, {second}")
        print(
            f"RSS idle {idle / 1024:.1f} MB, {n} streams {one / 1024:.1f} MB, "
            f"{2 * n} streams {two / 1024:.1f} MB; per stream: from idle "
            f"{(one - idle) / n:.1f} KB, marginal {(two - one) / n:.1f} KB"
        )
        if snap1 is not None and snap2 is not None:
            _report(snap1, snap2, n, args.top, args.tracebacks, args.match)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3:])
    else:
        main()
