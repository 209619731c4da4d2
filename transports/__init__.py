"""Backend IO behind one interface (see `transports._base`)."""

from transports._base import (
    BackendRequest,
    BackendResponse,
    BackendStream,
    ConnectError,
    ProtocolError,
    Timeout,
    Transport,
    TransportError,
    TransportTimeout,
)

__all__ = [
    "BackendRequest",
    "BackendResponse",
    "BackendStream",
    "ConnectError",
    "ProtocolError",
    "Timeout",
    "Transport",
    "TransportError",
    "TransportTimeout",
]
