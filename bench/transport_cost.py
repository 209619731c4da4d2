"""What one backend call costs the transport in CPU, with nothing else in the process.

Two measurements of `H11Transport` from one process, on asyncio (uvloop when
installed) or trio, against backends in other processes so that only the transport's
own CPU is counted (`time.process_time`, the whole process, spent in the calls):

* **send**: `send` of a small chat completion to the bench's canned nginx, one after
  the other on one kept-alive connection: microseconds of CPU per whole call;
* **chunk**: `open_stream` + `chunks()` of a long chunked answer from a tiny server
  that writes its chunks one by one with a pause between them, so each arrives in a
  read of its own, as a model's tokens do: microseconds of CPU per chunk (the loop's
  wake-up for each read included);
* **burst**: the same without the pauses, so that reads carry several chunks: the
  transport's own cost per chunk, with fewer wake-ups.

    python -m bench.transport_cost [--calls 5000] [--chunks 2000] [--trio]

Compare figures only with a run of the other version on the same machine, side by side
(e.g. `PYTHONPATH=OTHER_TREE python -m bench.transport_cost`, alternating).
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

from bench.canned import running_nginx, wait_for_port
from transports import BackendRequest, H11Transport

BODY = b'{"model":"bench-json","messages":[{"role":"user","content":"Say something."}]}'

# A server for the chunk measurement, run in its own process so its CPU is not counted.
_CHUNK_SERVER = r"""
import socket, sys, time
count, port, pause = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
listener = socket.create_server(("127.0.0.1", port))
chunk = b'data: {"choices":[{"delta":{"content":"token"}}]}\n\n'
frame = b"%x\r\n%s\r\n" % (len(chunk), chunk)
while True:
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with conn:
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                data = conn.recv(65536)
                if not data:
                    break
                buffer += data
            if b"\r\n\r\n" not in buffer:
                break
            buffer = buffer.split(b"\r\n\r\n", 1)[1]
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                         b"transfer-encoding: chunked\r\n\r\n")
            for _ in range(count):
                conn.sendall(frame)
                if pause:
                    time.sleep(pause)
            conn.sendall(b"0\r\n\r\n")
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _sends(url: str, calls: int) -> float:
    transport = H11Transport()
    request = BackendRequest(
        method="POST", url=url, headers=(("content-type", "application/json"),), body=BODY
    )
    for _ in range(200):  # warm up: the connection, caches
        await transport.send(request)
    start = time.process_time()
    for _ in range(calls):
        response = await transport.send(request)
        assert response.status == 200
    spent = time.process_time() - start
    await transport.aclose()
    return spent / calls * 1e6


async def _chunks(url: str, rounds: int) -> float:
    transport = H11Transport()
    request = BackendRequest(method="POST", url=url, body=BODY)
    spent = 0.0
    count = 0
    for round_ in range(rounds + 1):
        start = time.process_time()
        stream = await transport.open_stream(request)
        seen = 0
        async for _ in stream.chunks():
            seen += 1
        await stream.aclose()
        if round_:  # the first round warms up
            spent += time.process_time() - start
            count += seen
    await transport.aclose()
    return spent / max(count, 1) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--trio", action="store_true")
    args = parser.parse_args()
    backend = "trio" if args.trio else "asyncio"
    options: dict[str, object] = {}
    if not args.trio:
        try:
            import uvloop  # noqa: F401

            options = {"use_uvloop": True}
        except ImportError:
            pass
    per_round = 500
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_nginx(Path(tmp) / "nginx", _free_port()) as canned,
    ):
        send_us = anyio.run(
            _sends,
            f"{canned}/json/v1/chat/completions",
            args.calls,
            backend=backend,
            backend_options=options,
        )
    chunk_us = {}
    for kind, pause in (("chunk", "0.0002"), ("burst", "0")):
        chunk_port = _free_port()
        server = subprocess.Popen(
            [sys.executable, "-c", _CHUNK_SERVER, str(per_round), str(chunk_port), pause]
        )
        try:
            wait_for_port(chunk_port, server, "chunk server")
            chunk_us[kind] = anyio.run(
                _chunks,
                f"http://127.0.0.1:{chunk_port}/stream",
                max(1, args.chunks // per_round),
                backend=backend,
                backend_options=options,
            )
        finally:
            server.kill()
            server.wait()
    loop = "trio" if args.trio else ("uvloop" if options else "asyncio")
    print(
        f"{loop}: send {send_us:.0f} us cpu/call, stream {chunk_us['chunk']:.1f} us cpu/chunk, "
        f"burst {chunk_us['burst']:.1f} us cpu/chunk"
    )


if __name__ == "__main__":
    main()
