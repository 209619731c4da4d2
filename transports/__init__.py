"""Backend IO behind one interface (see `transports._base`)."""

from transports._base import (
    AnswerTooLarge,
    BackendRequest,
    BackendResponse,
    BackendStream,
    ConnectError,
    ConnectTimeout,
    FirstByteTimeout,
    IdleTimeout,
    ProtocolError,
    Saturated,
    Timeout,
    TLSOptions,
    TotalTimeout,
    Transport,
    TransportError,
    TransportTimeout,
)
from transports._limits import DEFAULT_MAX_ANSWER_BYTES, ConnectionLimits
from transports._tls import TLSConfigError, check_readable, ssl_context_for
from transports.function import FunctionTransport
from transports.h11_transport import H11Transport

__all__ = [
    "DEFAULT_MAX_ANSWER_BYTES",
    "AnswerTooLarge",
    "BackendRequest",
    "BackendResponse",
    "BackendStream",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionLimits",
    "FirstByteTimeout",
    "FunctionTransport",
    "H11Transport",
    "IdleTimeout",
    "ProtocolError",
    "Saturated",
    "TLSConfigError",
    "TLSOptions",
    "Timeout",
    "TotalTimeout",
    "Transport",
    "TransportError",
    "TransportTimeout",
    "check_readable",
    "ssl_context_for",
]
