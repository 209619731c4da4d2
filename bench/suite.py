"""`python -m bench`: the gateway against the framework's own floor, side by side in one run.

    python -m bench            # about 4 minutes: 3 rounds of 10 s per cell, 10,000 open streams
    python -m bench --quick    # about 40 s: 1 round of 2 s per cell, 200 open streams

What it starts, all on 127.0.0.1:
* a canned backend (nginx, `bench.canned`) answering a fixed chat completion as JSON and
  as a short SSE stream;
* the floor (`bench.floor`): a bare Quart app on Hypercorn, served like the gateway, that
  reads and parses the body and answers the same bytes with no upstream call;
* the gateway (`inference-gateway serve`, one worker) with Direct API endpoints on the
  canned backend, a static key, and the request log (SQLite), quotas (in process, limits
  set high enough never to refuse) and metrics on, as in production;
* for the open-streams figure, a backend that keeps streams open and drips a chunk every
  few seconds (`bench.open_streams drip`) and a client holding N streams through the
  gateway (`bench.open_streams hold`); the same client holds N streams on the floor,
  which drips them itself, so the gateway's KB per stream has the framework's beside it.

wrk (one thread) drives the floor and the gateway alike at concurrency 1 and 32, for JSON
and for streams, in alternating rounds so that drift hits both.  On a machine with two
or more cores the server under test is pinned to core 0 and wrk and nginx to core 1 with
`taskset`, so the figures are one core's worth of server; the table says so.  Ratios are
gateway/floor from this one run; absolute figures are this machine's only.  Each cell
also gives each server's CPU per request (the process's user and system time over the
round, all threads, divided by the requests answered): the figure a pinned server's
throughput follows, and the steadiest one when the machine is busy.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import attrs
import httpx

from bench.canned import MODEL_JSON, MODEL_SSE, ensure_tools, running_nginx, wait_for_port
from bench.load import Round, first_byte_ms, run_wrk
from bench.open_streams import DRIP_MODEL
from tests.support.gateway_server import ALICE, write_fixtures, write_tokens

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
KEY_ENV = "IGW_BENCH_KEY"


@attrs.frozen
class Plan:
    rounds: int
    seconds: float
    first_bytes: int
    open_streams: int
    # The descriptor limit that cut `open_streams` down, if one did.
    descriptor_cap: int | None = None


FULL = Plan(rounds=3, seconds=10, first_bytes=200, open_streams=10_000)
QUICK = Plan(rounds=1, seconds=2, first_bytes=20, open_streams=200)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pinned(command: list[str], cpu: int | None) -> list[str]:
    if cpu is None or shutil.which("taskset") is None:
        return command
    return ["taskset", "-c", str(cpu), *command]


def _rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for process {pid}")


def _fixtures(folder: Path, canned: str, drip: str) -> Path:
    cluster = {
        "cluster_name": "bench",
        "frameworks": ["api"],
        "openai_endpoints": ["chat/completions"],
        "cluster_adapter": "adaptors.clusters.openai_compatible.OpenAICompatibleCluster",
        "config": {"api_url": f"{canned}/json/v1"},
    }
    # Quotas on and counted for every request, with limits no bench run reaches.
    limits = {"tpm_model": 10**12, "tpm_user": 10**12}
    endpoints = [
        {
            "endpoint_slug": f"bench-api-{model}",
            "cluster": "bench",
            "framework": "api",
            "model": model,
            "endpoint_adapter": "adaptors.endpoints.direct_api.DirectAPIEndpoint",
            "config": {"api_url": url, "api_key_env_name": KEY_ENV},
            **limits,
        }
        for model, url in (
            (MODEL_JSON, f"{canned}/json/v1"),
            (MODEL_SSE, f"{canned}/sse/v1"),
            (DRIP_MODEL, f"{drip}/v1"),
        )
    ]
    return write_fixtures(folder / "fixtures", [cluster], endpoints)


@contextmanager
def _process(
    command: list[str], env: dict[str, str], log: Path, port: int, what: str
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            try:
                wait_for_port(port, process, what)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}\n{log.read_text()[-3000:]}") from exc
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _chat(model: str, stream: bool) -> dict[str, object]:
    body: dict[str, object] = {
        "model": model,
        "messages": [{"role": "user", "content": "How fast is this?"}],
        "max_tokens": 16,
    }
    if stream:
        body["stream"] = True
    return body


@attrs.define
class Cell:
    """One (server, kind, concurrency) cell's rounds."""

    rounds: list[Round] = attrs.Factory(list)
    # The server process's CPU seconds (user and system, all threads) in each round.
    cpu_seconds: list[float] = attrs.Factory(list)

    @property
    def cpu_us_per_request(self) -> float:
        """Microseconds of the server's CPU per request answered: the steadiest figure on
        a noisy machine, and the one a pinned server's throughput follows."""
        requests = sum(r.requests for r in self.rounds)
        return sum(self.cpu_seconds) / requests * 1e6 if requests else 0.0

    @property
    def per_second(self) -> float:
        seconds = sum(r.seconds for r in self.rounds)
        return sum(r.requests for r in self.rounds) / seconds if seconds else 0.0

    @property
    def p50(self) -> float:
        return statistics.median(r.p50_ms for r in self.rounds)

    @property
    def p99(self) -> float:
        return statistics.median(r.p99_ms for r in self.rounds)

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.rounds)


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def ensure_uvloop() -> str:
    """uvloop (the `fast` extra) for the floor and the gateway alike, installed with pip
    when missing; the loop both will run on ('uvloop', or 'asyncio' if it cannot be had)."""
    from frontends.event_loop import uvloop_installed

    if not uvloop_installed():
        install = [sys.executable, "-m", "pip", "install", "-q", "uvloop>=0.19"]
        if subprocess.run(install, capture_output=True).returncode != 0:
            print("uvloop could not be installed: floor and gateway both run on asyncio's loop")
            return "asyncio"
        importlib.invalidate_caches()
    return "uvloop" if uvloop_installed() else "asyncio"


# Descriptors a gateway process needs besides two per held stream (its listener, the
# request log, the pool to the canned backend, the normal requests meanwhile, Python's own).
_SPARE_DESCRIPTORS = 256


def _descriptor_limit(streams: int) -> int:
    """Raises this process's descriptor limit (inherited by everything it starts) as far
    as the streams need and the machine allows; returns the limit in force."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(hard, 2 * streams + _SPARE_DESCRIPTORS)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def held_streams(asked: int, descriptor_limit: int) -> int:
    """How many streams one gateway process can hold: each takes two descriptors (the
    client's and the backend's), so a limit the machine will not raise caps the figure
    (the table says so) rather than failing the last opens with 502s."""
    return max(0, min(asked, (descriptor_limit - _SPARE_DESCRIPTORS) // 2))


def run(plan: Plan, out: Path | None, transport: str = "h11") -> str:
    limit = _descriptor_limit(plan.open_streams)
    capped = held_streams(plan.open_streams, limit)
    if capped < plan.open_streams:
        plan = attrs.evolve(plan, open_streams=capped, descriptor_cap=limit)
    ensure_tools("nginx", "wrk")
    loop = ensure_uvloop()
    cores = os.cpu_count() or 1
    server_cpu, load_cpu = (0, 1) if cores >= 2 else (None, None)
    with tempfile.TemporaryDirectory(prefix="igw-bench-") as tmp, ExitStack() as stack:
        folder = Path(tmp)
        canned_port, drip_port, floor_port, gateway_port = (free_port() for _ in range(4))
        canned = stack.enter_context(running_nginx(folder / "nginx", canned_port, load_cpu))
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("INFERENCE_GATEWAY_")}
        base_env["PYTHONPATH"] = str(ROOT)
        drip_every = 5.0
        stack.enter_context(running_drip(folder, drip_port, drip_every, base_env, load_cpu))
        servers_stack = stack.enter_context(ExitStack())
        floor = servers_stack.enter_context(
            _process(
                _pinned(
                    [
                        sys.executable,
                        "-m",
                        "bench.floor",
                        "--port",
                        str(floor_port),
                        *(["--uvloop"] if loop == "uvloop" else []),
                        "--every",
                        str(drip_every),
                    ],
                    server_cpu,
                ),
                base_env,
                folder / "floor.log",
                floor_port,
                "the floor",
            )
        )
        fixtures = _fixtures(folder, canned, f"http://127.0.0.1:{drip_port}")
        gateway_env = {
            **base_env,
            KEY_ENV: "bench-backend-key",
            "INFERENCE_GATEWAY_TOKENS_FILE": str(write_tokens(folder)),
            "INFERENCE_GATEWAY_STATE_DIR": str(folder / "state"),
            "INFERENCE_GATEWAY_LOG_LEVEL": "WARNING",
            "INFERENCE_GATEWAY_TRANSPORT": transport,
            "INFERENCE_GATEWAY_UVLOOP": str(loop == "uvloop").lower(),
            # The open-streams figure holds this many streams to one backend at once.
            "INFERENCE_GATEWAY_MAX_CONNECTIONS_PER_BACKEND": str(plan.open_streams + 100),
            "INFERENCE_GATEWAY_MAX_CONNECTIONS": str(plan.open_streams + 1000),
        }
        serve = [sys.executable, "-m", "frontends.cli", "serve"]
        gateway = servers_stack.enter_context(
            _process(
                _pinned(
                    [*serve, "--port", str(gateway_port), "--fixtures", str(fixtures)], server_cpu
                ),
                gateway_env,
                folder / "gateway.log",
                gateway_port,
                "the gateway",
            )
        )
        servers = {
            "floor": (floor, f"http://127.0.0.1:{floor_port}", None),
            "gateway": (gateway, f"http://127.0.0.1:{gateway_port}", ALICE),
        }
        # Warm both up (imports, first connections, JIT-free but cache-warm), then idle RSS.
        with httpx.Client(timeout=30) as client:
            for _, url, token in servers.values():
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                for stream in (False, True):
                    for _ in range(20):
                        model = MODEL_SSE if stream else MODEL_JSON
                        answer = client.post(
                            f"{url}/v1/chat/completions", json=_chat(model, stream), headers=headers
                        )
                        answer.raise_for_status()
        idle = {name: _rss_kb(p.pid) for name, (p, _, _) in servers.items()}

        cells: dict[tuple[str, str, int], Cell] = {}
        for n in range(plan.rounds):
            for kind in ("json", "sse"):
                for concurrency in (1, 32):
                    order = list(servers) if n % 2 == 0 else list(reversed(servers))
                    for name in order:
                        process, url, token = servers[name]
                        model = MODEL_SSE if kind == "sse" else MODEL_JSON
                        cpu_before = _cpu_seconds(process.pid)
                        round_ = run_wrk(
                            f"{url}/v1/chat/completions",
                            _chat(model, kind == "sse"),
                            concurrency=concurrency,
                            seconds=plan.seconds,
                            token=token,
                            folder=folder,
                            cpu=load_cpu,
                        )
                        cell = cells.setdefault((name, kind, concurrency), Cell())
                        cell.rounds.append(round_)
                        cell.cpu_seconds.append(_cpu_seconds(process.pid) - cpu_before)

        first: dict[str, list[float]] = {"floor": [], "gateway": []}
        for _ in range(plan.first_bytes):
            for name in servers:
                _, url, token = servers[name]
                port = int(url.rsplit(":", 1)[1])
                first[name].append(first_byte_ms("127.0.0.1", port, _chat(MODEL_SSE, True), token))
        peak = {name: _rss_kb(p.pid, "VmHWM") for name, (p, _, _) in servers.items()}

        streams = {
            name: _open_streams(plan, process, int(url.rsplit(":", 1)[1]), base_env, load_cpu)
            for name, (process, url, _) in servers.items()
        }
        servers_stack.close()  # the pinned floor and gateway stop; nginx stays
        scaling = _workers_phase(plan, fixtures, gateway_env, folder, serve)

    report = _report(plan, cells, first, idle, peak, streams, scaling, server_cpu is not None)
    report += f"\nevent loop of floor and gateway: {loop}; gateway transport: {transport}"
    if out is not None:
        out.write_text(report + "\n")
    return report


@attrs.frozen
class StreamsFigure:
    asked: int
    opened: int
    failed: dict[str, int]
    rss_before_kb: int
    rss_after_kb: int
    normal_median_ms: float
    normal_max_ms: float
    normal_failed: dict[str, int]

    @property
    def kb_per_stream(self) -> float:
        return (self.rss_after_kb - self.rss_before_kb) / self.opened if self.opened else 0.0


def running_drip(
    folder: Path, port: int, every: float, env: dict[str, str], cpu: int | None = None
) -> AbstractContextManager[subprocess.Popen[bytes]]:
    """The drip backend (`bench.open_streams drip`) on `port`, a chunk every `every`
    seconds on each stream it holds open, for as long as the context lasts."""
    command = [sys.executable, "-m", "bench.open_streams", "drip", "--port", str(port)]
    return _process(
        _pinned([*command, "--every", str(every)], cpu),
        env,
        folder / "drip.log",
        port,
        "the drip backend",
    )


@contextmanager
def holding(
    port: int, count: int, env: dict[str, str], cpu: int | None = None
) -> Iterator[dict[str, object]]:
    """`bench.open_streams hold` of `count` drip streams on the server at `port`, for the
    block's length: yields its report (how many are open, how many failed how) once
    every stream has its first chunk, and lets them all go when the block ends."""
    command = [
        sys.executable,
        "-m",
        "bench.open_streams",
        "hold",
        "--port",
        str(port),
        "--count",
        str(count),
        "--token",
        ALICE,
    ]
    holder = subprocess.Popen(
        _pinned(command, cpu), env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        line = holder.stdout.readline()
        if not line:
            raise RuntimeError("the stream holder ended before it reported")
        yield json.loads(line)
        holder.stdin.close()
        holder.wait(timeout=120)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def _open_streams(
    plan: Plan,
    server: subprocess.Popen[bytes],
    port: int,
    env: dict[str, str],
    cpu: int | None,
) -> StreamsFigure:
    """Holds `plan.open_streams` streams on the server (the gateway's through to the drip
    backend, the floor's from itself); RSS and a normal request's latency while they are
    open.  The floor ignores the key."""
    before = _rss_kb(server.pid)
    with holding(port, plan.open_streams, env, cpu) as held:
        after = _rss_kb(server.pid)
        times = []
        normal_failed: dict[str, int] = {}
        with httpx.Client(timeout=30) as client:
            for _ in range(20):
                start = time.perf_counter()
                answer = client.post(
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    json=_chat(MODEL_JSON, False),
                    headers={"Authorization": f"Bearer {ALICE}"},
                )
                times.append((time.perf_counter() - start) * 1000)
                if answer.status_code != 200:
                    key = str(answer.status_code)
                    normal_failed[key] = normal_failed.get(key, 0) + 1
    return StreamsFigure(
        asked=plan.open_streams,
        opened=held["open"],
        failed=held["failed"],
        rss_before_kb=before,
        rss_after_kb=after,
        normal_median_ms=statistics.median(times),
        normal_max_ms=max(times),
        normal_failed=normal_failed,
    )


@attrs.frozen
class WorkersFigure:
    one: float
    two: float
    wrk_share: float
    nginx_share: float


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _nginx_worker(folder: Path) -> int:
    master = int((folder / "nginx" / "nginx.pid").read_text())
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return int(children[0])


def _workers_phase(
    plan: Plan, fixtures: Path, env: dict[str, str], folder: Path, serve: list[str]
) -> WorkersFigure:
    """One worker against two, on the whole machine (nothing pinned), JSON at
    concurrency 32 in alternating rounds; what wrk and nginx took of the cores meanwhile."""
    rates: dict[int, Cell] = {1: Cell(), 2: Cell()}
    nginx = _nginx_worker(folder)
    cores = os.cpu_count() or 1
    wrk_cpu = nginx_cpu = wall = 0.0
    with ExitStack() as stack:
        urls = {}
        for workers in (1, 2):
            port = free_port()
            worker_env = {**env, "INFERENCE_GATEWAY_STATE_DIR": str(folder / f"state-{workers}")}
            stack.enter_context(
                _process(
                    [
                        *serve,
                        "--port",
                        str(port),
                        "--fixtures",
                        str(fixtures),
                        "--workers",
                        str(workers),
                    ],
                    worker_env,
                    folder / f"gateway-{workers}w.log",
                    port,
                    f"the gateway with {workers} worker(s)",
                )
            )
            urls[workers] = f"http://127.0.0.1:{port}/v1/chat/completions"
            with httpx.Client(timeout=30) as client:  # every worker warmed (new connections)
                for _ in range(40):
                    client.post(
                        urls[workers],
                        json=_chat(MODEL_JSON, False),
                        headers={"Authorization": f"Bearer {ALICE}", "Connection": "close"},
                    ).raise_for_status()
        for n in range(plan.rounds):
            for workers in (1, 2) if n % 2 == 0 else (2, 1):
                children = resource.getrusage(resource.RUSAGE_CHILDREN)
                nginx_before, start = _cpu_seconds(nginx), time.monotonic()
                round_ = run_wrk(
                    urls[workers],
                    _chat(MODEL_JSON, False),
                    concurrency=32,
                    seconds=plan.seconds,
                    token=ALICE,
                    folder=folder,
                )
                rates[workers].rounds.append(round_)
                if workers == 2:
                    after = resource.getrusage(resource.RUSAGE_CHILDREN)
                    wrk_cpu += (after.ru_utime + after.ru_stime) - (
                        children.ru_utime + children.ru_stime
                    )
                    nginx_cpu += _cpu_seconds(nginx) - nginx_before
                    wall += time.monotonic() - start
    return WorkersFigure(
        one=rates[1].per_second,
        two=rates[2].per_second,
        wrk_share=wrk_cpu / (wall * cores) if wall else 0.0,
        nginx_share=nginx_cpu / (wall * cores) if wall else 0.0,
    )


def mb(kilobytes: int) -> str:
    return f"{kilobytes / 1024:.0f} MB"


def _report(
    plan: Plan,
    cells: dict[tuple[str, str, int], Cell],
    first: dict[str, list[float]],
    idle: dict[str, int],
    peak: dict[str, int],
    streams_on: dict[str, StreamsFigure],
    scaling: WorkersFigure,
    pinned: bool,
) -> str:
    rows = [
        [
            "kind",
            "conc.",
            "floor req/s",
            "gateway req/s",
            "ratio",
            "floor p50/p99 ms",
            "gateway p50/p99 ms",
            "CPU µs/request",
            "errors",
        ]
    ]
    for kind in ("json", "sse"):
        for concurrency in (1, 32):
            f, g = cells["floor", kind, concurrency], cells["gateway", kind, concurrency]
            rows.append(
                [
                    kind,
                    str(concurrency),
                    f"{f.per_second:,.0f}",
                    f"{g.per_second:,.0f}",
                    f"{g.per_second / f.per_second:.2f}" if f.per_second else "-",
                    f"{f.p50:.2f} / {f.p99:.2f}",
                    f"{g.p50:.2f} / {g.p99:.2f}",
                    f"{f.cpu_us_per_request:,.0f} / {g.cpu_us_per_request:,.0f}",
                    f"{f.errors} / {g.errors}",
                ]
            )
    ttfb_f, ttfb_g = statistics.median(first["floor"]), statistics.median(first["gateway"])
    streams, floor_streams = streams_on["gateway"], streams_on["floor"]
    opened = streams.opened
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    lines = [
        f"python -m bench{' --quick' if plan.rounds == QUICK.rounds else ''} — {now} — {machine}",
        (
            "server under test pinned to core 0, wrk and nginx to core 1"
            if pinned
            else "one core: server, wrk and nginx share it"
        ),
        f"rounds per cell: {plan.rounds} of {plan.seconds:g} s, alternating floor and gateway",
        "",
        _table(rows),
        "",
        f"stream time to first byte (median of {len(first['gateway'])}, concurrency 1): "
        f"floor {ttfb_f:.2f} ms, gateway {ttfb_g:.2f} ms, overhead {ttfb_g - ttfb_f:+.2f} ms",
        f"RSS idle: floor {mb(idle['floor'])}, gateway {mb(idle['gateway'])}; "
        f"peak under load: floor {mb(peak['floor'])}, gateway {mb(peak['gateway'])}",
        f"open streams: {opened:,} of {streams.asked:,} held"
        + (
            f" (the machine's limit of {plan.descriptor_cap:,} descriptors per process "
            "allows no more: two per stream)"
            if plan.descriptor_cap is not None
            else ""
        )
        + (f" (failed: {streams.failed})" if streams.failed else "")
        + f"; gateway RSS {mb(streams.rss_before_kb)} → {mb(streams.rss_after_kb)} "
        f"({streams.kb_per_stream:.1f} KB per stream); a normal request meanwhile: "
        f"median {streams.normal_median_ms:.1f} ms, max {streams.normal_max_ms:.1f} ms"
        + (f" (not 200: {streams.normal_failed})" if streams.normal_failed else ""),
        f"open streams on the floor (dripped by the app itself, no upstream): "
        f"{floor_streams.opened:,} held"
        + (f" (failed: {floor_streams.failed})" if floor_streams.failed else "")
        + f"; floor RSS {mb(floor_streams.rss_before_kb)} → {mb(floor_streams.rss_after_kb)} "
        f"({floor_streams.kb_per_stream:.1f} KB per stream); gateway/floor per stream: "
        + (
            f"{streams.kb_per_stream / floor_streams.kb_per_stream:.2f}"
            if floor_streams.kb_per_stream > 0
            else "-"
        ),
        f"workers (JSON, concurrency 32, nothing pinned): 1 worker {scaling.one:,.0f} req/s, "
        f"2 workers {scaling.two:,.0f} req/s, ratio {scaling.two / scaling.one:.2f}; "
        f"during the 2-worker rounds wrk used {scaling.wrk_share:.0%} and nginx "
        f"{scaling.nginx_share:.0%} of the machine's {os.cpu_count()} cores",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (about 40 s)")
    parser.add_argument("--streams", type=int, help="open streams to hold (default 10,000)")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    parser.add_argument(
        "--transport",
        choices=("h11", "httpx"),
        default="h11",
        help="the gateway's TRANSPORT setting (default h11, serve's own default)",
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.streams is not None:
        plan = attrs.evolve(plan, open_streams=args.streams)
    print(run(plan, args.out, args.transport))
    return 0
