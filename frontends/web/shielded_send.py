"""ASGI middleware: each `send()` of the app runs to its end, even while the app is being
cancelled.  A workaround for quart-trio under Hypercorn's trio worker, which otherwise
never closes a connection.

Why: Hypercorn's trio server does connection work inside the app's last `send()` (the
one that ends the response).  That call tells the app's request the client is done
(`http.disconnect`), then closes the socket when the response said `Connection: close`,
or starts the keep-alive idle timer.  quart-trio answers `http.disconnect` by cancelling
its request's task group, which is the very task making that `send()`; the close or the
timer start is cancelled half-way, and the socket stays open until the client goes.  A
bare ASGI app that does not cancel itself is not affected; Hypercorn already shields the
socket writes themselves, so shielding the whole call adds no new way to hang.  The
cancellation still arrives, at the app's next checkpoint after `send()` returns.

The fix belongs upstream (Hypercorn's trio server should shield that work, or
quart-trio should not cancel the task that is sending); until then this wraps the app.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio

__all__ = ["ShieldedSend"]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]


class ShieldedSend:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        async def shielded(message: Message) -> None:
            with anyio.CancelScope(shield=True):
                await send(message)

        await self.app(scope, receive, shielded)
