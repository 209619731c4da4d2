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
        env=os.environ,  # the installed gateway, as the reader has it
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "200 Hello from the demo model! You said: Hi"
    assert lines[-1] == "[DONE]"
    assert len(lines) > 3


SHELL = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
COMMAND = re.compile(r"((?:[\w.-]+/)*)inference-gateway (?=\w)")


def test_every_shell_command_runs_in_a_fresh_shell() -> None:
    # Not activated, the bare name is not on PATH: the README uses the install's own path.
    uses = [m[1] for block in SHELL for m in COMMAND.finditer(block)]
    assert len(uses) >= 10
    assert set(uses) == {".venv/bin/"}


def test_the_readme_says_where_to_run_the_examples() -> None:
    start = (ROOT / "README.md").read_text().split("## Start here", 1)[1].split("\n## ", 1)[0]
    assert "foreground" in start and "second terminal" in start


def test_the_static_keys_commands_run_as_written(tmp_path: Path) -> None:
    [block] = [b for b in SHELL if "keys revoke --id" in b]
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERENCE_GATEWAY_")}
    env.update(INFERENCE_GATEWAY_STATE_DIR=str(tmp_path / "state"))
    # The command the install made, in the virtualenv running these tests.
    program = Path(sys.executable).parent / "inference-gateway"
    assert program.is_file(), f"{program}: install the gateway first (pip install -e '.[test]')"

    def run(line: str) -> subprocess.CompletedProcess[str]:
        args = line.split("#", 1)[0].split()
        assert args[0] == ".venv/bin/inference-gateway"
        return subprocess.run(
            [program, *args[1:]],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    add, listing, by_id, by_user = block.strip().splitlines()
    assert run(add).returncode == 0
    assert run(add).returncode == 0  # a second key, for the two kinds of revoke
    ids = [line.split()[0] for line in run(listing).stdout.splitlines()]
    assert len(ids) == 2
    example_id = re.search(r"--id (k-\w+)", by_id)
    assert example_id
    revoked = run(by_id.replace(example_id[1], ids[0]))
    assert revoked.returncode == 0, revoked.stderr
    assert run(listing).stdout.split()[0] == ids[1]
    assert run(by_user).returncode == 0
    assert run(listing).stdout == ""
