"""`serve --workers N`: N gateway processes sharing one listening socket, so one machine's
cores all serve.

The parent binds the socket, prepares what must happen once (the store's migrations,
the tokens file, an empty metrics directory for prometheus-client's multiprocess mode),
prints the banner, and then starts N children, each `inference-gateway serve` on the
inherited socket (`--listen-fd`): the very same single-process server, graceful stop
included, so there is one way of serving.  The kernel spreads connections over the
children's accept calls.  SIGTERM or SIGINT to the parent is passed to every child; the
parent exits when they have all stopped, with the first non-zero exit code if any.
A child that dies makes the parent stop the others: a half-sized server that looks
healthy is worse than one that is visibly down.

What the workers do not share, and how that is kept correct:
* quota counters: with `INFERENCE_GATEWAY_REDIS_URL` they are exact and shared; without,
  each worker counts apart and holds its part of every limit (`QuotaPolicy.part`), so
  the workers together never admit beyond a limit;
* batches: on SQLite (no row locks) only the first worker runs the batch runner; on
  PostgreSQL every worker does, the store's leases keep each batch on one of them;
* metrics: one directory shared by the workers (`INFERENCE_GATEWAY_METRICS_DIR`, or one
  made under the state directory), so `/metrics` from any worker counts them all.

Why not Hypercorn's own `run()` with `workers`: it loads the app from an import path in
each spawned process and owns signal handling and shutdown, which would give workers a
different start and stop path from the single-process server.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Sequence
from types import FrameType

from core import ConfigurationError
from frontends.metrics import prepare_multiprocess_dir
from frontends.settings import Settings

__all__ = ["inherited_socket", "run_workers"]


def run_workers(
    settings: Settings,
    sock: socket.socket,
    *,
    workers: int,
    child_args: Sequence[str],
) -> int:
    """Starts `workers` children serving on `sock` and waits for them (see the module)."""
    metrics_dir = settings.metrics_dir or settings.state_dir / "metrics" / f"serve-{os.getpid()}"
    prepare_multiprocess_dir(metrics_dir)
    sqlite = settings.store_url.startswith("sqlite")
    replica_id = settings.replica_id or uuid.uuid4().hex  # one server, however many workers
    children: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)
        if len(children) == workers:
            # Our copy of the listening socket would keep it open while the children
            # drain: new connections would wait in its backlog instead of being refused.
            sock.close()

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for index in range(workers):
            env = {
                **os.environ,
                "INFERENCE_GATEWAY_METRICS_DIR": str(metrics_dir),
                "INFERENCE_GATEWAY_WORKERS": str(workers),
                "INFERENCE_GATEWAY_WORKER_INDEX": str(index),
                "INFERENCE_GATEWAY_REPLICA_ID": replica_id,
                "INFERENCE_GATEWAY_BATCH_RUNNER": "true" if index == 0 or not sqlite else "false",
            }
            command = [
                sys.executable,
                "-m",
                "frontends.cli",
                "serve",
                "--listen-fd",
                str(sock.fileno()),
                *child_args,
            ]
            children.append(subprocess.Popen(command, env=env, pass_fds=[sock.fileno()]))
        return _wait(children, lambda: stopping)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()


def _wait(children: list[subprocess.Popen[bytes]], stopping: Callable[[], bool]) -> int:
    """Until every child has exited; a child that exits unasked stops the others."""
    running = {child.pid: child for child in children}
    code = 0
    while running:
        pid, status = os.wait()  # a signal runs its handler and the wait goes on (PEP 475)
        child = running.pop(pid, None)
        if child is None:
            continue
        child.returncode = os.waitstatus_to_exitcode(status)
        if stopping() and child.returncode in (-signal.SIGTERM, -signal.SIGINT):
            # Ended by the signal passed on before it had set its own handlers (it was
            # still starting): nothing was in flight, a clean stop.
            child.returncode = 0
        if child.returncode != 0 and code == 0:
            code = child.returncode if child.returncode > 0 else 128 - child.returncode
        if not stopping():
            print(
                f"inference-gateway: worker {pid} exited with {child.returncode}; stopping",
                file=sys.stderr,
                flush=True,
            )
            for other in running.values():
                other.send_signal(signal.SIGTERM)
            code = code or 1
    return code


def inherited_socket(fd: int) -> socket.socket:
    """The listening socket a parent handed down (`--listen-fd`)."""
    sock = socket.socket(fileno=fd)
    if sock.type != socket.SOCK_STREAM:
        raise ConfigurationError(
            f"{fd} is not a listening stream socket", file="command line", field="--listen-fd"
        )
    return sock
