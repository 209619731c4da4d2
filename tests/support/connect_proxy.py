"""A real HTTP CONNECT proxy for tests, on a port the OS picks, in a thread of its own.

It answers `CONNECT host:port` with 200 and then copies bytes both ways, so TLS to the
backend runs end to end through it (it never sees the plaintext); a plain-HTTP request
in absolute form (`GET http://host:port/path`) goes on to its origin in origin form.  It records the
targets asked for and any `Proxy-Authorization` header, so a test can tell whether a
request went through it.  Anything else gets a 405.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from urllib.parse import urlsplit

import attrs

__all__ = ["ProxyLog", "running_connect_proxy"]


@attrs.define
class ProxyLog:
    targets: list[str] = attrs.field(factory=list)
    authorizations: list[str | None] = attrs.field(factory=list)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with suppress(Exception):
            writer.close()


async def _forward(
    method: str,
    target: str,
    lines: list[str],
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    """A plain-HTTP request in absolute form: sent on to its origin in origin form."""
    parts = urlsplit(target)
    if parts.scheme != "http" or not parts.hostname:
        writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()
        return
    up_reader, up_writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    kept = [line for line in lines[1:] if not line.lower().startswith("proxy-authorization:")]
    head = "\r\n".join([f"{method} {path} HTTP/1.1", *kept])
    up_writer.write(head.encode("latin-1"))
    await up_writer.drain()
    await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


def _handler(log: ProxyLog, lock: threading.Lock) -> object:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        auth = next(
            (
                line.split(":", 1)[1].strip()
                for line in lines[1:]
                if line.lower().startswith("proxy-authorization:")
            ),
            None,
        )
        with lock:
            log.targets.append(target)
            log.authorizations.append(auth)
        if method != "CONNECT":
            await _forward(method, target, lines, reader, writer)
            return
        host, _, port = target.rpartition(":")
        try:
            up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    return handle


@contextmanager
def running_connect_proxy() -> Iterator[tuple[str, ProxyLog]]:
    """Yields (proxy URL `http://127.0.0.1:PORT`, its log) until the block ends."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    log, lock = ProxyLog(), threading.Lock()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def serve() -> None:
        server = await asyncio.start_server(_handler(log, lock), sock=listener)  # type: ignore[arg-type]
        await stop.wait()
        server.close()
        # Tunnels a client keeps alive must not hold the shutdown: end them.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}", log
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        with suppress(Exception):
            loop.close()
