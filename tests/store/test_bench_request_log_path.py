"""The whole-path request log benchmark still runs, and every request it sends is
recorded (a few requests; its figures are not judged here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_request_log_path_benchmark_runs_and_records_every_request() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.request_log_path", "--requests", "40", "--concurrency", "4"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split()[0] for line in result.stdout.splitlines()[2:]]
    assert rows == ["none", "sqlite", "postgresql"]
