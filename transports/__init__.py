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
from transports.function import FunctionTransport
from transports.h11_transport import H11Transport

__all__ = [
    "BackendRequest",
    "BackendResponse",
    "BackendStream",
    "ConnectError",
    "FunctionTransport",
    "H11Transport",
    "ProtocolError",
    "Timeout",
    "Transport",
    "TransportError",
    "TransportTimeout",
]
