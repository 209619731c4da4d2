"""The README's embedding examples, run exactly as written, as a reader would."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


@pytest.mark.parametrize("runner", ["asyncio.run(main())", "trio.run(main)"])
def test_embedding_example_runs_as_written(tmp_path: Path, runner: str) -> None:
    [example] = [block for block in BLOCKS if runner in block]
    script = tmp_path / "example.py"
    script.write_text(example)
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "200 Hello from the demo model! You said: Hi"
    assert lines[-1] == "[DONE]"
    assert len(lines) > 3
