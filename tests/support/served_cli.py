"""`inference-gateway serve` as an operator runs it: a process of its own, on either loop.

Settings go in as `INFERENCE_GATEWAY_*` variables (none leak in from the test's own
environment), the port is picked by the OS (`--port 0`) and read from the banner, and
the access log (one JSON line per request, stderr) goes to a file, never a pipe nobody
reads, so a busy gateway can never block on it.  On leaving, the process gets SIGTERM
and must exit.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from tests.support.gateway_server import write_tokens

__all__ = ["ServedGateway", "served_gateway"]

ROOT = Path(__file__).resolve().parents[2]
STOP_TIMEOUT = 30.0


@attrs.frozen
class ServedGateway:
    url: str  # the base URL, e.g. http://127.0.0.1:PORT
    process: subprocess.Popen[str]
    stderr: Path

    def access_log(self) -> dict[str, dict[str, Any]]:
        """The access log's lines so far, by request id."""
        lines: dict[str, dict[str, Any]] = {}
        for line in self.stderr.read_text().splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if "request_id" in entry:
                    lines[entry["request_id"]] = entry
        return lines

    def rss_bytes(self) -> int:
        """The process's resident memory now (Linux /proc)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc status")


@contextmanager
def served_gateway(
    folder: Path, fixtures: Path, *, loop: str, settings: Mapping[str, str] = {}
) -> Iterator[ServedGateway]:
    """`serve --loop LOOP` over `fixtures`, its state and logs under `folder`; `settings`
    maps setting names (`first_byte_timeout`) to their values."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERENCE_GATEWAY_")}
    env.update(
        PYTHONPATH=str(ROOT),
        INFERENCE_GATEWAY_TOKENS_FILE=str(write_tokens(folder)),
        INFERENCE_GATEWAY_STATE_DIR=str(folder / "state"),
    )
    env.update({f"INFERENCE_GATEWAY_{name.upper()}": value for name, value in settings.items()})
    stderr = folder / f"serve-{loop}.log"
    with stderr.open("w") as sink:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "frontends.cli",
                "serve",
                "--port",
                "0",
                "--loop",
                loop,
                "--fixtures",
                str(fixtures),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=sink,
            text=True,
        )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        found = re.search(r"on (http://\S+)/v1", banner)
        if not found:
            process.kill()
            raise RuntimeError(f"serve did not start: {banner!r}\n{stderr.read_text()}")
        yield ServedGateway(url=found[1], process=process, stderr=stderr)
    finally:
        died = process.poll()
        if died is not None:
            tail = "\n".join(stderr.read_text().splitlines()[-30:])
            raise RuntimeError(f"serve --loop {loop} exited by itself ({died}):\n{tail}")
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise RuntimeError(f"serve --loop {loop} did not stop on SIGTERM") from None
        if process.stdout is not None:
            process.stdout.close()
