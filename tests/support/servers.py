"""Real HTTP servers for tests: any ASGI app under Hypercorn, in a thread of its own.

The test binds and listens on the socket itself (127.0.0.1, a port the OS picks) before
Hypercorn starts, so a client may connect at once: the connection waits in the listen
backlog until Hypercorn accepts it, and no readiness poll or sleep is needed.  Hypercorn
gets a duplicate of the descriptor (`fd://`), because it closes the socket it is given.

Hypercorn runs the ASGI lifespan, so a Quart app's `before_serving` / `after_serving`
hooks run as in production.  Shutdown goes through Hypercorn's `shutdown_trigger`,
set from the test's thread with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config

__all__ = ["serve_app"]

STOP_TIMEOUT = 15.0


def _close_if_unclaimed(fd: int, listener: socket.socket) -> None:
    """Close our duplicate if Hypercorn never took it (its start-up failed first).

    Hypercorn closes the descriptor it adopted; if it never adopted it, the number still
    names our listening socket (same inode) and is ours to close.  A number that was
    closed, or reused for another file, is left alone.
    """
    try:
        unclaimed = os.fstat(fd).st_ino == os.fstat(listener.fileno()).st_ino
    except OSError:
        return
    if unclaimed:
        os.close(fd)


@contextmanager
def serve_app(
    app: Any,
    *,
    graceful_timeout: float = 1.0,
    tls: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    port: int = 0,
) -> Iterator[str]:
    """Serve `app` until the block ends; yields its base URL `http://127.0.0.1:PORT`.

    `port` 0 lets the OS pick a free one; a test that stops a server and starts it
    again where its clients expect it passes the port it had (bound with SO_REUSEADDR).

    With `tls` (Hypercorn settings: `certfile`, `keyfile`, and for mutual TLS `ca_certs`
    and `verify_mode`), it serves HTTPS and yields `https://127.0.0.1:PORT`.  `options`
    are other Hypercorn settings (`frontends.web.limits.hypercorn_limits`, say).
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if port:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    port = listener.getsockname()[1]

    handed_over = os.dup(listener.fileno())
    config = Config()
    config.bind = [f"fd://{handed_over}"]
    config.accesslog = None
    config.graceful_timeout = graceful_timeout
    config.loglevel = "WARNING"
    for name, value in {**(tls or {}), **(options or {})}.items():
        setattr(config, name, value)

    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(serve(app, config, shutdown_trigger=stop.wait))
        except BaseException as exc:
            failure.append(exc)
        finally:
            # Refuse further connections at once instead of leaving them in the backlog.
            _close_if_unclaimed(handed_over, listener)
            listener.close()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=run, name=f"hypercorn-{port}", daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        if not loop.is_closed():
            with suppress(RuntimeError):  # the loop closed in between: already stopped
                loop.call_soon_threadsafe(stop.set)
        thread.join(STOP_TIMEOUT)
        listener.close()
        if thread.is_alive():
            raise RuntimeError(f"the test server on port {port} did not stop")
        if failure:
            raise RuntimeError(f"the test server on port {port} failed") from failure[0]
