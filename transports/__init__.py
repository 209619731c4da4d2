"""Backend IO behind one interface (see `transports._base`)."""

from transports._base import (
    BackendRequest,
    BackendResponse,
    BackendStream,
    ConnectError,
    ProtocolError,
    Timeout,
    TLSOptions,
    Transport,
    TransportError,
    TransportTimeout,
)
from transports._tls import TLSConfigError, check_readable, ssl_context_for
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
    "TLSConfigError",
    "TLSOptions",
    "Timeout",
    "Transport",
    "TransportError",
    "TransportTimeout",
    "check_readable",
    "ssl_context_for",
]
