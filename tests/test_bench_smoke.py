"""The benchmark still runs (a handful of requests; its figures are not judged here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_bench(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """`python -m <args>` from the checkout, as a user runs a bench."""
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_overhead_benchmark_runs() -> None:
    result = run_bench(["bench.overhead", "--requests", "3"], timeout=120)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith(("whole", "stream"))]
    assert len(rows) == 3


def test_batch_runner_benchmark_runs() -> None:
    result = run_bench(
        ["bench.batch_runner", "--lines", "10", "--databases", "sqlite"], timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "lines/s" in result.stdout


def test_features_cost_benchmark_runs_with_the_request_log_on() -> None:
    result = run_bench(["bench.features_cost", "--requests", "20", "--rounds", "1"], timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("on: request log (SQLite), quotas, metrics")
    assert [line.split()[0] for line in lines if line.startswith(("off", "on,", "ratio"))] == [
        "off",
        "on,",
        "on,",
        "ratio",
        "ratio",
    ]
    # Every "on" request, the warm-up's included, reached the database.
    assert "request log: 220 of 220 records written, 0 dropped, 0 failed" in result.stdout


def test_the_web_layer_cost_runs_on_both_loops_flavours() -> None:
    for loop in ("asyncio", "uvloop"):
        result = run_bench(
            ["bench.web_cost", "--requests", "5", "--rounds", "1", "--loop", loop], timeout=120
        )
        assert result.returncode == 0, result.stderr
        sides = [line.split()[0] for line in result.stdout.splitlines()[2:]]
        assert sides == ["floor", "web", "app", "embedded", "web", "app"]


def test_the_floor_comparison_runs_and_prints_its_table() -> None:
    """`python -m bench --quick` with nginx and wrk (which `.ci/run` installs): four
    rows of gateway against floor, no failed request, and every stream held."""
    result = run_bench(["bench", "--quick", "--streams", "20"], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith(("| json", "| sse"))]
    assert len(rows) == 4, result.stdout
    for row in rows:
        assert row.rstrip(" |").endswith("0 / 0"), row  # no errors on either side
    assert "open streams: 20 of 20 held" in result.stdout, result.stdout
    assert "stream time to first byte" in result.stdout


def test_the_replicas_benchmark_runs() -> None:
    """One replica against two behind nginx, on the machine's PostgreSQL and Redis."""
    result = run_bench(["bench.replicas", "--seconds", "1", "--rounds", "1"], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ratio 2/1:" in result.stdout
    assert "errors 0)" in result.stdout.split("1 replica:", 1)[1]


def test_the_soak_runs_and_every_kind_of_request_gets_its_answer() -> None:
    result = run_bench(["bench.soak", "--requests", "200"], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes = result.stdout.rsplit("outcomes: ", 1)[1].strip()
    assert outcomes == (
        "400 400: 20, 401 401: 20, 404 404: 20, abandon 200: 20, json 200: 80, stream 200: 40"
    )
    assert "200 mixed requests" in result.stdout and "RSS" in result.stdout


def test_the_open_streams_figure_holds_no_more_than_the_descriptor_limit_allows() -> None:
    """Two descriptors per stream in one process: a limit the machine will not raise
    caps the streams asked for (and the table says so) instead of failing the last."""
    from bench.suite import held_streams

    assert held_streams(10_000, 1_048_576) == 10_000
    assert held_streams(10_000, 20_000) == 9_872
    assert held_streams(200, 20_000) == 200
    assert held_streams(10, 100) == 0


def test_the_stream_memory_bench_holds_its_streams_and_names_allocation_sites() -> None:
    """Every stream asked for is held twice over (N, then N more), and with `--trace`
    the per-stream difference is printed by allocation site, ours among them."""
    result = run_bench(["bench.stream_memory", "--streams", "20", "--trace"], timeout=180)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("{'open': 20, 'failed': {}}") == 2, out
    assert "marginal" in out and "per stream" in out, out
    assert "by innermost frame of ours" in out, out
