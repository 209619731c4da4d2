"""The load generators of `python -m bench`: wrk (from Debian's packages) with a POST
script for throughput and latency, and a small sequential client for a stream's time to
first byte, which wrk does not report.

wrk runs one thread at the concurrency asked; its Lua `done` hook prints one JSON line
(requests, duration, errors, non-2xx answers, p50 and p99 in microseconds), which is all
this module reads of its output.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import attrs

__all__ = ["Round", "first_byte_ms", "run_wrk"]

_SCRIPT = """
wrk.method = "POST"
wrk.body = %(body)s
wrk.headers["Content-Type"] = "application/json"
%(auth)s
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %%d, "duration_us": %%d, "errors": %%d, "non_2xx": %%d, '
    .. '"p50_us": %%d, "p99_us": %%d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


@attrs.frozen
class Round:
    """One wrk run's figures."""

    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def _lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


def run_wrk(
    url: str,
    body: dict[str, object],
    *,
    concurrency: int,
    seconds: float,
    token: str | None,
    folder: Path,
    cpu: int | None = None,
) -> Round:
    """wrk -t1 -c`concurrency` POSTing `body` to `url` for `seconds`."""
    script = folder / "post.lua"
    auth = f'wrk.headers["Authorization"] = "Bearer {token}"' if token else ""
    script.write_text(_SCRIPT % {"body": _lua_string(json.dumps(body)), "auth": auth})
    command = [
        shutil.which("wrk") or "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    if cpu is not None and shutil.which("taskset"):
        command = ["taskset", "-c", str(cpu), *command]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    line = next(
        (x for x in reversed(done.stdout.splitlines()) if x.startswith('{"requests"')), None
    )
    if line is None:
        raise RuntimeError(f"wrk printed no summary: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    figures = json.loads(line)
    return Round(
        requests=figures["requests"],
        seconds=figures["duration_us"] / 1e6,
        errors=figures["errors"] + figures["non_2xx"],
        p50_ms=figures["p50_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
    )


def first_byte_ms(host: str, port: int, body: dict[str, object], token: str | None) -> float:
    """One streamed request on a new connection: milliseconds from sending it to the
    first byte of the response's body (the status line and headers are not the stream)."""
    payload = json.dumps(body).encode()
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        f"{auth}Connection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.perf_counter()
        sock.sendall(head + payload)
        received = b""
        while b"\r\n\r\n" not in received:
            data = sock.recv(65536)
            if not data:
                raise RuntimeError("connection closed before the headers")
            received += data
        status = received.split(b"\r\n", 1)[0]
        if b" 200 " not in status:
            raise RuntimeError(f"stream answered {status!r}")
        if received.split(b"\r\n\r\n", 1)[1] == b"" and not sock.recv(65536):
            raise RuntimeError("connection closed before the body")
        return (time.perf_counter() - start) * 1000
