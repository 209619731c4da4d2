"""`inference-gateway serve` as a process of its own, for the tests that need a real one:
to stop it with a signal and check how it ended, to kill it outright (SIGKILL) and start
another on the same database, or to run two side by side.

The process listens on a port the OS picks (`--port 0`); its URL is read off the banner
it prints, and it counts as started only once its health route answers, polled with a
deadline (the banner comes before the signal handlers and the background tasks are set
up, so a signal sent on the banner alone could find it half started).  Its output goes
to files in the test's folder, never to a pipe nobody reads (a full pipe would stop
the server), and `log()` shows them when an assertion fails.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.gateway_server import write_tokens

__all__ = ["ROOT", "ServeProcess", "serving", "start_serve"]

ROOT = Path(__file__).resolve().parents[2]
BANNER = re.compile(r"on (http://\S+)/v1")
HEALTH = "/resource_server/health"


class ServeProcess:
    """One running `serve`: its URL, its process id, and the ways to end it."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, out: Path, err: Path) -> None:
        self.process = process
        self.url = url
        self._out = out
        self._err = err
        self.killed = False

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        """What it wrote so far: stdout (the banner), then stderr (logs, access lines)."""
        return self._out.read_text(errors="replace") + self._err.read_text(errors="replace")

    def kill(self, *, timeout: float = 30.0) -> None:
        """SIGKILL: no handler runs, nothing is flushed, no lease is let go."""
        self.killed = True
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=timeout)

    def stop(self, signum: int = signal.SIGTERM, *, timeout: float = 60.0) -> int:
        """Send `signum` (a graceful stop) and wait for the exit; its exit code."""
        if self.running:
            self.process.send_signal(signum)
        return self.process.wait(timeout=timeout)


def _free_name(folder: Path) -> str:
    number = 0
    while (folder / f"serve-{number}.out").exists():
        number += 1
    return f"serve-{number}"


def start_serve(
    folder: Path,
    *,
    fixtures: Path | None = None,
    loop: str = "asyncio",
    settings: Mapping[str, str] | None = None,
    environ: Mapping[str, str | None] | None = None,
    tokens: bool = True,
    deadline: float = 60.0,
) -> ServeProcess:
    """Start `serve` with these `settings` (names of `Settings` fields, each passed as its
    INFERENCE_GATEWAY_* variable; none inherited from the test's own environment) and
    wait until it answers.  `folder` holds its state directory, its tokens file (the
    test keys of `gateway_server`, unless `tokens` is false) and its output; `environ`
    sets variables of other kinds (an API key the fixtures name), or with None unsets one."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERENCE_GATEWAY_")}
    env["PYTHONPATH"] = str(ROOT)
    env["INFERENCE_GATEWAY_STATE_DIR"] = str(folder / "state")
    if tokens:
        env["INFERENCE_GATEWAY_TOKENS_FILE"] = str(write_tokens(folder))
    for name, value in (settings or {}).items():
        env[f"INFERENCE_GATEWAY_{name.upper()}"] = value
    for name, given in (environ or {}).items():
        if given is None:
            env.pop(name, None)
        else:
            env[name] = given
    command = [sys.executable, "-m", "frontends.cli", "serve", "--port", "0", "--loop", loop]
    if fixtures is not None:
        command += ["--fixtures", str(fixtures)]
    name = _free_name(folder)
    out, err = folder / f"{name}.out", folder / f"{name}.log"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(command, env=env, stdout=stdout, stderr=stderr)
    try:
        url = _wait_for_banner(process, out, time.monotonic() + deadline)
        served = ServeProcess(process, url, out, err)
        _wait_for_health(served, time.monotonic() + deadline)
    except BaseException:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        raise
    return served


def _wait_for_banner(process: subprocess.Popen[bytes], out: Path, deadline: float) -> str:
    while True:
        found = BANNER.search(out.read_text(errors="replace"))
        if found is not None:
            return found[1]
        if process.poll() is not None:
            raise AssertionError(
                f"serve exited ({process.returncode}) before it listened:\n"
                + out.read_text(errors="replace")
                + out.with_suffix(".log").read_text(errors="replace")
            )
        assert time.monotonic() < deadline, "serve printed no banner in time"
        time.sleep(0.02)


def _wait_for_health(served: ServeProcess, deadline: float) -> None:
    while True:
        try:
            if httpx.get(served.url + HEALTH, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert served.running, f"serve exited before it answered:\n{served.log()}"
        assert time.monotonic() < deadline, f"serve never answered {HEALTH}:\n{served.log()}"
        time.sleep(0.02)


@contextmanager
def serving(
    folder: Path,
    *,
    stop_signal: int = signal.SIGTERM,
    fixtures: Path | None = None,
    loop: str = "asyncio",
    settings: Mapping[str, str] | None = None,
    environ: Mapping[str, str | None] | None = None,
    tokens: bool = True,
) -> Iterator[ServeProcess]:
    """`start_serve`, stopped with `stop_signal` afterwards (unless the test killed it);
    a process that then exits with anything but 0 fails the test."""
    served = start_serve(
        folder, fixtures=fixtures, loop=loop, settings=settings, environ=environ, tokens=tokens
    )
    try:
        yield served
    finally:
        if served.running:
            served.stop(stop_signal)
    if not served.killed:
        assert served.process.returncode == 0, served.log()
