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
from transports.h11_transport import TrioTransport

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
    "TrioTransport",
]
