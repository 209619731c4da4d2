"""`SwitchingTransport`: one transport for a long-lived gateway, whose target changes.

A gateway is built once with one transport, yet a replay runner answers each recorded
conversation from that conversation's own records.  This transport forwards every call
to `current` (which the runner replaces between conversations) and keeps the requests
sent since the last switch, so the runner can compare them with what was recorded.
"""

from __future__ import annotations

from transports._base import BackendRequest, BackendResponse, BackendStream, Transport

__all__ = ["SwitchingTransport"]


class SwitchingTransport:
    """Forwards to `current`; `sent` holds the requests since the last `switch`."""

    def __init__(self, current: Transport) -> None:
        self.current = current
        self.sent: list[BackendRequest] = []

    def switch(self, current: Transport) -> None:
        """Send later calls to `current`, and start `sent` afresh."""
        self.current = current
        self.sent = []

    async def send(self, request: BackendRequest) -> BackendResponse:
        self.sent.append(request)
        return await self.current.send(request)

    async def open_stream(self, request: BackendRequest) -> BackendStream:
        self.sent.append(request)
        return await self.current.open_stream(request)

    async def aclose(self) -> None:
        """Close nothing: each `current` belongs to whoever switched to it."""
        return None
