"""The canned backend of `python -m bench`: nginx answering fixed OpenAI-shaped bodies, so
that the backend costs almost nothing and what is measured is the gateway (or the floor).

Two models, one per kind of answer, because nginx does not read request bodies: the
endpoint of `bench-json` points at `/json/v1`, whose chat completion is one JSON object;
the endpoint of `bench-sse` at `/sse/v1`, whose chat completion is a short SSE stream (a
few content chunks, a usage chunk, `[DONE]`).  The floor answers the same bodies.

nginx comes from Debian's packages; `ensure_tools` installs it (and wrk) with apt-get
when missing, as `.ci/run` does for PostgreSQL.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["CHAT_JSON", "CHAT_SSE", "ensure_tools", "running_nginx", "sse_body"]

MODEL_JSON = "bench-json"
MODEL_SSE = "bench-sse"

CHAT_JSON = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1764000000,
        "model": MODEL_JSON,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "A canned answer for the bench."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16},
    },
    separators=(",", ":"),
)


def _chunk(delta: dict[str, object], finish: str | None = None) -> str:
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1764000000,
            "model": MODEL_SSE,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        },
        separators=(",", ":"),
    )


def sse_body() -> str:
    """A short stream as vLLM sends it: role, five words, stop, usage, `[DONE]`."""
    events = [_chunk({"role": "assistant", "content": ""})]
    events += [_chunk({"content": word}) for word in ("A ", "canned ", "stream ", "for ", "it.")]
    events.append(_chunk({}, "stop"))
    usage = {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}
    events.append(
        json.dumps(
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion.chunk",
                "created": 1764000000,
                "model": MODEL_SSE,
                "choices": [],
                "usage": usage,
            },
            separators=(",", ":"),
        )
    )
    return "".join(f"data: {e}\n\n" for e in events) + "data: [DONE]\n\n"


CHAT_SSE = sse_body()
MODELS = json.dumps(
    {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "owned_by": "bench"} for m in (MODEL_JSON, MODEL_SSE)
        ],
    },
    separators=(",", ":"),
)


def ensure_tools(*names: str) -> None:
    """nginx and wrk from Debian's packages, installed when missing (needs root)."""
    packages = {"nginx": "nginx", "wrk": "wrk"}
    missing = [n for n in names if shutil.which(n) is None and not Path(f"/usr/sbin/{n}").exists()]
    if not missing:
        return
    if os.geteuid() != 0:
        raise SystemExit(f"the bench needs {', '.join(missing)}: apt-get install them as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    wanted = [packages[n] for n in missing]
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *wanted]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, capture_output=True)
        subprocess.run(install, env=env, check=True, capture_output=True)


def _nginx_quote(text: str) -> str:
    """A string for nginx's `return`: its parser reads \\n, \\" and \\\\ escapes."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _config(folder: Path, port: int) -> str:
    return f"""
worker_processes 1;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/error.log error;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{port} reuseport;
        location = /json/v1/chat/completions {{
            default_type application/json;
            return 200 {_nginx_quote(CHAT_JSON)};
        }}
        location = /sse/v1/chat/completions {{
            default_type text/event-stream;
            return 200 {_nginx_quote(CHAT_SSE)};
        }}
        location ~ ^/(json|sse)/v1/models$ {{
            default_type application/json;
            return 200 {_nginx_quote(MODELS)};
        }}
    }}
}}
"""


def _nginx() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


@contextmanager
def running_nginx(folder: Path, port: int, cpu: int | None = None) -> Iterator[str]:
    """nginx on 127.0.0.1:`port` (one worker, pinned to `cpu` when given); yields its URL."""
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "nginx.conf"
    conf.write_text(_config(folder, port))
    command = [_nginx(), "-c", str(conf), "-p", str(folder)]
    if cpu is not None and shutil.which("taskset"):
        command = ["taskset", "-c", str(cpu), *command]
    process = subprocess.Popen(command, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, process, "nginx")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGQUIT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for_port(port: int, process: subprocess.Popen[bytes] | None, what: str) -> None:
    """Until something accepts on 127.0.0.1:`port` (30 s), or the process died."""
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            err = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"{what} exited with {process.returncode}: {err[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within 30 s")
