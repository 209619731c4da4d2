"""The log-store benchmark still runs (a few records; its figures are not judged here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_log_store_benchmark_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.log_store", "--records", "50", "--batch-size", "7"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split()[0] for line in result.stdout.splitlines()[2:]]
    assert rows == ["sqlite", "postgresql"]
