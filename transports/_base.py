"""The one contract between adaptors (and identity providers) and backend IO.

Adaptors speak their backend's protocol by building a `BackendRequest` and handing it to
the transport the gateway gave them; they never build an HTTP client of their own, so the
same adaptor runs over httpx, h11 on anyio or a replayed cassette.

The contract is two calls and a close: `send` for a whole answer, `open_stream` for an
answer read chunk by chunk, `aclose` to release the pool.  Every failure below HTTP
(refused connection, timeout, a peer that breaks the protocol) surfaces as one of the
`TransportError` subclasses here, whatever library sits underneath.

Why three methods and not httpx's one (`handle(request) -> response`, body as a stream):

* Most calls want the whole answer, and a whole answer is what a transport can bound
  best: `send` runs under one total deadline and returns with the connection already
  back in the pool.  With one streaming method, every such caller would have to read
  and close the body itself, and a forgotten close leaks a pooled connection.
* A stream is a different obligation: its status and headers arrive first (so an
  adaptor can turn a refusal into an error before relaying anything), its body is read
  under a deadline renewed per read, and it must be closed early when the client
  leaves, which cancels the backend call.  `open_stream` returns that object, typed
  `BackendStream`, so the obligation is visible where it is taken on.
* Adaptors, identity providers and the recording and replay transports already call
  `send` and `open_stream`; one method would change every one of them for no new power.

What one method buys httpx, a trivial function-backed test double, we keep anyway:
`transports.function.FunctionTransport(handler)` derives `open_stream` from the
handler's answer, so a test double is still one function.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

import attrs

__all__ = [
    "AnswerTooLarge",
    "BackendRequest",
    "BackendResponse",
    "BackendStream",
    "ConnectError",
    "ConnectTimeout",
    "FirstByteTimeout",
    "IdleTimeout",
    "ProtocolError",
    "Saturated",
    "TLSOptions",
    "Timeout",
    "TotalTimeout",
    "Transport",
    "TransportError",
    "TransportTimeout",
]


Headers = tuple[tuple[str, str], ...]


def _headers(value: object) -> Headers:
    """Accept a mapping or pairs; keep order and duplicates, as HTTP does."""
    if value.__class__ is list:
        # What adaptors build: copied into a tuple as it is (in C), then checked as one,
        # instead of a generator and a str() per name and value.
        value = tuple(value)
    if value.__class__ is tuple:
        # A plain loop, not all() over a generator: one generator resume per header was
        # half the cost of building a request or a response.
        for pair in value:
            if not (
                pair.__class__ is tuple
                and len(pair) == 2
                and pair[0].__class__ is str
                and pair[1].__class__ is str
            ):
                break
        else:
            return value  # already the exact shape: no copy
    items = value.items() if hasattr(value, "items") else value
    return tuple((str(k), str(v)) for k, v in items)  # type: ignore[union-attr]


def _upper(value: str) -> str:
    return value.upper()


def _like_read(instance: Timeout) -> float | None:
    return instance.read


@attrs.frozen(kw_only=True)
class Timeout:
    """How long a backend call may take, in seconds; None means no limit.

    `connect`: the TCP (and TLS) connect.  `read`: each write, and each receive of a
    whole answer's body.  `first_byte`: from the request sent until the answer's head
    arrives, and for a stream until its first body bytes too (a model's time to first
    token).  `idle`: each silence between a stream's later chunks, however long the
    stream keeps sending.  `total`: a whole `send`; for a stream, its opening and every
    read (so callers that must never cut a stream that keeps sending leave it None).
    `first_byte` and `idle` default to `read`.  Each limit that runs out raises its own
    `TransportTimeout` subclass, so the caller can say which one it was.
    """

    connect: float | None = 10.0
    read: float | None = 120.0
    total: float | None = None
    first_byte: float | None = attrs.field(default=attrs.Factory(_like_read, takes_self=True))
    idle: float | None = attrs.field(default=attrs.Factory(_like_read, takes_self=True))


def _key_needs_cert(instance: TLSOptions, _: object, value: str | None) -> None:
    if value is not None and instance.client_cert_path is None:
        raise ValueError("client_key_path needs client_cert_path (the certificate it belongs to)")


@attrs.frozen(kw_only=True)
class TLSOptions:
    """How one backend is trusted and how the gateway proves itself to it.

    `ca_cert_path`: a PEM bundle (or an OpenSSL hashed directory) of the CAs to trust
    instead of the default ones.  `client_cert_path` / `client_key_path`: the client
    certificate for mutual TLS (the key may sit in the certificate file).
    `check_hostname`: False accepts a certificate, still signed by a trusted CA, issued
    for another name.  `trust_env`, as in httpx: read `SSL_CERT_FILE` / `SSL_CERT_DIR`
    (when no `ca_cert_path` is given) and the proxy variables (`HTTP_PROXY`,
    `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`); None leaves it to the transport.

    Equal options share one SSL context and one pool in a transport; a request without
    options (`BackendRequest.tls is None`) uses the transport's own defaults.
    """

    ca_cert_path: str | None = None
    client_cert_path: str | None = None
    client_key_path: str | None = attrs.field(default=None, validator=_key_needs_cert)
    check_hostname: bool = True
    trust_env: bool | None = None


@attrs.frozen(kw_only=True)
class BackendRequest:
    method: str = attrs.field(converter=_upper)
    url: str
    headers: Headers = attrs.field(default=(), converter=_headers)
    body: bytes = b""
    timeout: Timeout = attrs.field(factory=Timeout)
    tls: TLSOptions | None = None


@attrs.frozen(kw_only=True)
class BackendResponse:
    status: int
    headers: Headers = attrs.field(default=(), converter=_headers)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """First value of a header, compared case-insensitively."""
        return _first_header(self.headers, name)


def _first_header(headers: Headers, name: str) -> str | None:
    lowered = name.lower()
    return next((v for k, v in headers if k.lower() == lowered), None)


@runtime_checkable
class BackendStream(Protocol):
    """An answer whose status and headers are known and whose body is still arriving.

    Iterate `chunks()` once; always `aclose()` (also after a full read) so the
    connection goes back to the pool or is shut down.
    """

    status: int
    headers: Headers

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def aread(self) -> bytes: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Transport(Protocol):
    """Backend IO.  A transport may also offer `check_tls(options: TLSOptions) -> None`,
    raising `TLSConfigError` for options it cannot honour; adaptors call it when bound,
    at start, so such options stop start-up instead of failing requests."""

    async def send(self, request: BackendRequest) -> BackendResponse: ...

    async def open_stream(self, request: BackendRequest) -> BackendStream: ...

    async def aclose(self) -> None: ...


class TransportError(Exception):
    """The backend could not be talked to; the message never holds a URL or a key."""


class ConnectError(TransportError):
    """No connection could be made (refused, unresolvable, TLS failure)."""


class TransportTimeout(TransportError):
    """A time limit ran out (a write or a receive, when no subclass says more)."""


class ConnectTimeout(TransportTimeout):
    """No connection was made within `Timeout.connect`."""


class FirstByteTimeout(TransportTimeout):
    """The backend sent no answer (or, for a stream, no first bytes of its body) within
    `Timeout.first_byte` of the request."""


class IdleTimeout(TransportTimeout):
    """A stream that had started went silent for longer than `Timeout.idle`."""


class TotalTimeout(TransportTimeout):
    """The call as a whole ran past `Timeout.total`."""


class ProtocolError(TransportError):
    """The peer broke HTTP (closed mid-body, sent garbage)."""


class AnswerTooLarge(ProtocolError):
    """A whole answer's body grew past the transport's `max_answer_bytes`; reading
    stopped there and the connection was closed."""

    def __init__(self, message: str, *, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class Saturated(TransportError):
    """No connection to the backend could be had within the transport's pool wait: every
    connection allowed to that backend (or to all backends together) is in use.  The
    gateway's own limit, not the backend's fault, and distinct from a timeout."""
