"""Many open streams at once: a backend that keeps every stream open and drips a chunk
every few seconds, and a client that opens N streams through the gateway and holds them.

    python -m bench.open_streams drip --port P [--every 5]
    python -m bench.open_streams hold --port P --count N --token T --model M

Both are plain asyncio on raw sockets, so that they cost little beside the gateway they
load.  `hold` prints one JSON line when every stream has its first chunk (or failed),
then keeps them open until its stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys

DRIP_MODEL = "bench-drip"

_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def drip_event(n: int) -> bytes:
    """The nth chunk of a dripping stream, as an SSE event."""
    chunk = {
        "id": "chatcmpl-drip",
        "object": "chat.completion.chunk",
        "created": 1764000000,
        "model": DRIP_MODEL,
        "choices": [{"index": 0, "delta": {"content": f"{n} "}, "finish_reason": None}],
    }
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


async def _read_request(reader: asyncio.StreamReader) -> bool:
    """Reads one request (headers and a Content-Length body); False at end of input."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return False
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)
    return True


async def drip(port: int, every: float) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if not await _read_request(reader):
                return
            writer.write(_HEAD + _chunked(drip_event(0)))
            n = 1
            while True:
                await writer.drain()
                try:
                    await asyncio.wait_for(reader.read(1), every)
                    return  # the client sent more or closed: this stream is over
                except TimeoutError:
                    writer.write(_chunked(drip_event(n)))
                    n += 1
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


async def hold(port: int, count: int, token: str, model: str) -> None:
    body = json.dumps(
        {"model": model, "stream": True, "messages": [{"role": "user", "content": "drip"}]}
    ).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    opening = asyncio.Semaphore(64)
    held: list[asyncio.StreamWriter] = []
    failures: dict[str, int] = {}

    async def open_one() -> None:
        async with opening:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(head + body)
                answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
                status = answer.split(b" ", 2)[1].decode()
                if status != "200":
                    failures[status] = failures.get(status, 0) + 1
                    writer.close()
                    return
                await asyncio.wait_for(reader.readuntil(b"data:"), 60)
                held.append(writer)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                kind = type(exc).__name__
                failures[kind] = failures.get(kind, 0) + 1

    await asyncio.gather(*(open_one() for _ in range(count)))
    print(json.dumps({"open": len(held), "failed": failures}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for writer in held:
        writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    d = commands.add_parser("drip")
    d.add_argument("--port", type=int, required=True)
    d.add_argument("--every", type=float, default=5.0)
    h = commands.add_parser("hold")
    h.add_argument("--port", type=int, required=True)
    h.add_argument("--count", type=int, required=True)
    h.add_argument("--token", required=True)
    h.add_argument("--model", default=DRIP_MODEL)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.command == "drip":
        asyncio.run(drip(args.port, args.every))
    else:
        asyncio.run(hold(args.port, args.count, args.token, args.model))


if __name__ == "__main__":
    main()
