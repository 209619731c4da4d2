"""A loop-native transport: HTTP/1.1 over anyio (or asyncio) streams, pooled per host.

(The `h11` in its names and in the `TRANSPORT` setting is historical: it was first
written on the h11 library.  HTTP/1.1 itself is now `transports._http1`: request heads
written there, answers parsed by httptools, llhttp in C, which costs a fraction of h11's
pure-Python parsing per exchange.)

Theory of operation.  `transports._http1` is Sans-IO: it turns a request into the bytes
of its head, and the bytes of an answer into its status, headers, body pieces and end,
and knows nothing of sockets.  This module is its driver.  It opens TCP (and TLS)
streams with anyio, so the same code runs natively on trio and on asyncio, and feeds
what each read gives to the `_http1.Answer` of the exchange on that socket.  One
exception: on asyncio, a plain `http` connection made
without a proxy is asyncio's own transport and protocol (`transports._loop_stream`),
which reads without anyio's per-receive pause and resume of the socket; it offers the
same three calls and fails the same way, so nothing else here tells them apart.

* **Pool.**  Idle connections are kept per (scheme, host, port) in a `_HostPool`.  A
  call first takes a permit of its backend and of the whole transport
  (`transports._limits`: at most `ConnectionLimits.per_backend` and `.total` exchanges
  at once, waiting at most `pool_wait`, else `Saturated`), then an idle connection if
  one is still sound (not readable: an idle socket with something to read was closed or
  spoken to by the peer), else a new one.  Because a new connection is only made when
  no idle one is left, a backend's open sockets never outnumber its permits.
* **Reuse.**  After a response, a connection goes back to the pool only when its
  answer says it may (`_http1.Answer.reusable`: the answer ended by its own framing, no
  `Connection: close` either way, HTTP/1.1, nothing after its end), and each exchange
  gets an `Answer` of its own (the last one renewed when llhttp allows it:
  `_http1.Answer.renew`).  Anything else (a body not read to its end, a `Connection:
  close`, a close-delimited body, bytes past the answer, an error, a cancellation)
  closes the socket, so a half-read connection is never handed out again.
* **Bodies.**  Requests are sent whole, with `Content-Length`.  Responses may be framed
  by `Content-Length`, chunked, or delimited by the close of the connection (none after
  HEAD, 1xx, 204, 304); `_http1` decides which.  `chunks()` yields each body piece as
  it is parsed (a chunk of a chunked body, or what one read held), so one read from the
  socket is never held back to be merged with the next.  Bodies are handed over as
  sent: no content-encoding is asked for or decoded.
* **Time.**  `Timeout.connect` bounds the TCP+TLS connect; `read` the write of the
  request and each receive of a whole answer's body; `first_byte` the wait from the
  request sent to the answer's head and, for a stream, to its first body bytes;
  `idle` each later receive of a stream; `total` a whole `send` (from the moment it
  holds its permits), and for a stream the time from `open_stream` to the last read.
  Each raises its own `TransportTimeout` subclass.  A call runs under one `_Watch`: a
  single cancel scope whose deadline is moved at each phase change and each receive
  (nesting a `fail_after` per limit and per receive cost more CPU than the parsing);
  on asyncio's own stream, no scope but a timer of the loop's on each wait's future,
  at the same deadline.  A stream keeps its deadlines and opens one `_Watch` per read,
  because a cancel scope may not stay open across the yields of a generator the
  caller drives.
* **Size.**  A whole answer (`send`, or `aread` of a stream) is read piece by piece and
  refused with `AnswerTooLarge` as soon as it passes `max_answer_bytes` (or at once,
  when its `Content-Length` says it will): the connection is closed and what was read
  is dropped, so a huge answer costs at most the cap in memory.
* **Errors.**  Everything below HTTP, and `_http1`'s protocol errors, is translated in
  one place, `_translated` (applied by the call's `_Watch`), keyed by the phase of the
  call (connect, write, first byte, read, idle, total), into the `transports._base`
  family, with short messages of our own (no URL, host or header) and the original
  chain dropped.  A request we cannot
  send (bad URL, bad header) is refused before any IO, in the same family and manner.
  Cancellation is never translated (only `Exception`s are caught), but it always closes
  the connection it interrupted.

* **TLS options.**  A request with `TLSOptions` gets the SSL context built for those
  options by `transports._tls` (kept, one per distinct set) and pools of its own, so a
  connection made with one client certificate is never handed to a request that asked
  for another.  `trust_env` (the options' own, else the transport's, default False) reads
  `SSL_CERT_FILE` / `SSL_CERT_DIR` when no CA is given, and the proxy variables:
  `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` (lower-case too) name an `http://` proxy
  (credentials in it become `Proxy-Authorization: Basic`), `NO_PROXY` exempts hosts.
  An https backend is reached through a `CONNECT` tunnel (spoken with `_http1`, then TLS to
  the backend inside it); an http backend by sending the request to the proxy in
  absolute form.  A proxy this module cannot speak to (`https://`, `socks5://`) is
  refused by `check_tls` (called at start) and by every request that would use it,
  never bypassed.  The environment is read once, when the transport is made.

The request goes out with the caller's headers, plus `Host` (unless given) and
`Content-Length` (replacing any framing header given); nothing else is added: no
`User-Agent`, `Accept` or `Accept-Encoding`.  Response header names come back
lower-cased, values decoded as latin-1, order and duplicates kept.  A transport belongs
to the event loop it is first used on.

Supported: `http` and `https` URLs; certificate and hostname verification (with the
system's CAs, a given `ssl.SSLContext`, or none with `verify=False`); keep-alive with a
bounded pool per host; any method; 1xx interim responses are skipped.

Not supported yet: HTTP/2 (ALPN offers only `http/1.1`); proxies other than `http://`
ones from the environment (with `trust_env`); credentials in the backend URL; non-ASCII
URLs (refused, not percent-encoded); content-encoding (gzip...);
`Expect: 100-continue`; streaming request bodies; an expiry for idle connections (a
stale one is only noticed by the readable check); retrying a request on a kept-alive
connection the server closed at that very moment (it fails as a `ProtocolError`); and
HTTP/1.1 pipelining.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import math
import select
import ssl
from collections.abc import AsyncIterator, Awaitable, Mapping
from functools import lru_cache
from types import TracebackType
from urllib.parse import unquote, urlsplit
from urllib.request import getproxies_environment

import anyio
import anyio.abc
import attrs
from anyio.streams.tls import TLSStream

from transports import _http1
from transports._base import (
    AnswerTooLarge,
    BackendRequest,
    BackendResponse,
    ConnectError,
    ConnectTimeout,
    FirstByteTimeout,
    Headers,
    IdleTimeout,
    ProtocolError,
    Timeout,
    TLSOptions,
    TotalTimeout,
    TransportError,
    TransportTimeout,
)
from transports._deadline import deadline_after
from transports._limits import DEFAULT_MAX_ANSWER_BYTES, Admission, ConnectionLimits, Permit
from transports._loop_stream import DeadlinePassed, LoopStream
from transports._loop_stream import connect as loop_connect
from transports._tls import TLSConfigError, ssl_context_for

__all__ = ["H11Stream", "H11Transport"]

READ_SIZE = 64 * 1024
DEFAULT_PORTS = {"http": 80, "https": 443}
# Headers we frame ourselves; a caller's copy would contradict the body we send.
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding"})
_METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


class _Phase(enum.Enum):
    """Where in a call an error happened; it decides how the error is reported."""

    CONNECT = "connect"
    WRITE = "write"
    FIRST_BYTE = "first_byte"
    IDLE = "idle"
    READ = "read"
    TOTAL = "total"


# Which time limit ran out, and how it reads, by the phase it happened in.
_TIMEOUTS: dict[_Phase, tuple[type[TransportTimeout], str]] = {
    _Phase.CONNECT: (ConnectTimeout, "timed out connecting to the backend"),
    _Phase.WRITE: (TransportTimeout, "timed out sending the request to the backend"),
    _Phase.FIRST_BYTE: (FirstByteTimeout, "the backend sent no answer within the first-byte limit"),
    _Phase.IDLE: (IdleTimeout, "the backend's stream went silent past the idle limit"),
    _Phase.READ: (TransportTimeout, "timed out waiting for the backend to answer"),
    _Phase.TOTAL: (TotalTimeout, "the backend call exceeded its total time limit"),
}
_READING = (_Phase.FIRST_BYTE, _Phase.IDLE, _Phase.READ)
# A socket or TLS stream that broke, in whichever form the loop reports it.
_BROKEN: tuple[type[Exception], ...] = (OSError, anyio.BrokenResourceError, anyio.EndOfStream)
_BROKEN_IN: dict[_Phase, tuple[type[TransportError], str]] = {
    _Phase.CONNECT: (ConnectError, "could not connect to the backend"),
    _Phase.WRITE: (ProtocolError, "the connection broke while sending the request"),
    _Phase.READ: (ProtocolError, "the connection broke while reading the answer"),
}
_BROKEN_ELSEWHERE = (TransportError, "the backend call failed")
# Failures that read the same in every phase.
_ANY_PHASE: tuple[tuple[type[Exception], type[TransportError], str], ...] = (
    (_http1.NoAnswer, ProtocolError, "the backend closed the connection without answering"),
    (_http1.RemoteProtocolError, ProtocolError, "the backend broke the HTTP protocol"),
    (_http1.LocalProtocolError, ProtocolError, "the request could not be sent as valid HTTP"),
    (anyio.ClosedResourceError, TransportError, "the backend answer was already read or closed"),
)


def _translated(exc: Exception, phase: _Phase) -> TransportError | None:
    """The one place where socket, TLS, HTTP and time-out errors become transport errors,
    by the phase of the call they happened in; None for an error already ours (or one we
    do not know, which goes up as it is).

    TimeoutError is tried first, since it is itself an OSError.
    """
    if isinstance(exc, TransportError):
        return None
    if isinstance(exc, TimeoutError):
        return _timeout_of(phase)
    if isinstance(exc, _BROKEN):
        key = _Phase.READ if phase in _READING else phase
        target, message = _BROKEN_IN.get(key, _BROKEN_ELSEWHERE)
        return target(message)
    for source, target, message in _ANY_PHASE:
        if isinstance(exc, source):
            return target(message)
    return None


def _timeout_of(phase: _Phase) -> TransportTimeout:
    timeout, text = _TIMEOUTS[phase]
    return timeout(text)


def _earliest(total: float, phase_deadline: float, seconds: float | None) -> float:
    """The earliest of a call's deadline, its phase's and `seconds` from now, on the
    loop's clock (anyio's on asyncio), read directly: `anyio.current_time()` first looks
    up which async library runs, a third of a streamed chunk's CPU.  Comparisons, not
    `min()`, which parses its keyword arguments on every call in Python 3.11."""
    deadline = phase_deadline if phase_deadline < total else total
    if seconds is not None:
        fresh = asyncio.get_running_loop().time() + seconds
        if fresh < deadline:
            deadline = fresh
    return deadline


class _Watch:
    """The time limits of a call (a `send`, an `open_stream`, one read of a stream) and
    the boundary where its errors are translated: the call's total deadline, the phase
    it is in and that phase's deadline.

    On anyio's streams the watch is one cancel scope, whose deadline moves as the call
    goes from phase to phase: anyio's `fail_after` is a cancel scope and a context
    manager, and a call used to nest several (the total limit, the phase's, one per
    receive), each with its own error-mapping context manager; together they cost more
    CPU than the parsing of the whole exchange.  Here a phase change, or a receive's
    fresh limit, is one assignment of the scope's deadline: the earliest of the call's
    total deadline, the phase's own deadline and (for a receive) now plus its limit.
    When the scope fires, the phase and which of those deadlines was the earliest say
    which `TransportTimeout` it was; any other failure is translated by the phase it
    happened in.

    On asyncio's own stream (`loop=True`: every wait of the call is on a future of the
    loop's) there is no scope at all: each wait is given the same earliest deadline
    (`bound`) as one timer of the loop's on its future, and a wait that reaches it is
    reported the same way (`expired`).  A cancel scope there cost as much CPU as the
    write and the parse together (made, entered, its timer set and moved, exited), for
    limits the loop's timers already keep; the one wait not on such a future, the
    connect, gets a scope of its own (in `_checkout`).
    """

    __slots__ = ("deadline", "phase", "phase_deadline", "scope", "total")

    def __init__(
        self,
        total: float,
        phase: _Phase = _Phase.TOTAL,
        phase_deadline: float = math.inf,
        *,
        loop: bool = False,
    ) -> None:
        self.total = total
        self.phase = phase
        self.phase_deadline = phase_deadline
        # Conditional expressions, not min(): the builtin's generic path cost more than
        # the rest of these methods on every phase change and wait.
        self.deadline = total if total < phase_deadline else phase_deadline
        self.scope = None if loop else anyio.CancelScope(deadline=self.deadline)

    def enter(self, phase: _Phase, phase_deadline: float = math.inf) -> None:
        """From now on the call is in `phase`, which must end by `phase_deadline`."""
        self.phase = phase
        self.phase_deadline = phase_deadline
        total = self.total
        self._move(total if total < phase_deadline else phase_deadline)

    def arm(self, seconds: float | None) -> None:
        """The next write or receive must end within `seconds` (None: only the phase's
        and the call's deadlines bound it)."""
        if seconds is not None:
            self._move(min(self.total, self.phase_deadline, anyio.current_time() + seconds))

    def bound(self, seconds: float | None) -> float:
        """On the loop's own stream: the deadline, on the loop's clock, of the next wait,
        which must end within `seconds` (None: only the phase's and the call's deadlines
        bound it)."""
        return _earliest(self.total, self.phase_deadline, seconds)

    def expired(self, deadline: float) -> TransportTimeout:
        """The error of a wait that reached `deadline` (from `bound`)."""
        return _timeout_of(_Phase.TOTAL if self.total <= deadline else self.phase)

    def _move(self, deadline: float) -> None:
        if deadline != self.deadline:
            self.deadline = deadline
            if self.scope is not None:
                self.scope.deadline = deadline

    def __enter__(self) -> _Watch:
        if self.scope is not None:
            self.scope.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        scope = self.scope
        if scope is not None:
            scope.__exit__(exc_type, exc, tb)
            if scope.cancelled_caught:
                # The scope's own deadline: the call's total limit if it came first.
                raise self.expired(self.deadline) from None
        if isinstance(exc, Exception):
            translated = _translated(exc, self.phase)
            if translated is not None:
                raise translated from None


@attrs.frozen(kw_only=True)
class _Target:
    """What a URL says about where and what to ask; validated once per request."""

    scheme: str
    host: str
    port: int
    path: str
    authority: str

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)


@lru_cache(maxsize=1024)
def _parse_url(url: str) -> _Target:
    """Split a backend URL; errors name no part of it (it may hold a secret).  Kept per
    URL: a gateway calls a handful of URLs over and over."""
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise TransportError("the backend URL has an unsupported scheme")
        host = parts.hostname
        port = parts.port or DEFAULT_PORTS[scheme]
        if not host:
            raise TransportError("the backend URL is invalid")
        if parts.username is not None or parts.password is not None:
            raise TransportError("credentials in the backend URL are not supported")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        path.encode("ascii")  # non-ASCII is refused, not percent-encoded
    except TransportError:
        raise
    except (ValueError, UnicodeError):
        raise TransportError("the backend URL is invalid") from None
    shown_host = f"[{host}]" if ":" in host else host
    authority = shown_host if port == DEFAULT_PORTS[scheme] else f"{shown_host}:{port}"
    return _Target(scheme=scheme, host=host, port=port, path=path, authority=authority)


@attrs.frozen(kw_only=True)
class _Proxy:
    """An `http://` proxy from the environment, and what to tell it about us."""

    host: str
    port: int
    authorization: str | None = attrs.field(default=None, repr=False)


_PROXY_KINDS = ("https", "http", "all")


def _environment_proxies() -> dict[str, str]:
    """The proxy variables as urllib reads them (lower- and upper-case, `no` for NO_PROXY)."""
    return getproxies_environment()


def _proxy_from_url(url: str) -> _Proxy:
    """A proxy URL from the environment; only `http://` ones can be spoken to here."""
    try:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
    except ValueError:
        raise TLSConfigError("trust_env: a proxy variable holds an invalid URL") from None
    if scheme != "http":
        raise TLSConfigError(
            f"trust_env: the environment names a {scheme}:// proxy; the h11 transport "
            "speaks only to http:// proxies (use the httpx transport, or trust_env: false)"
        )
    if not host:
        raise TLSConfigError("trust_env: a proxy variable holds an invalid URL")
    authorization = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    return _Proxy(host=host, port=port or 80, authorization=authorization)


def _proxy_for(target: _Target, proxies: Mapping[str, str]) -> _Proxy | None:
    """The proxy the environment names for this backend, None if none or exempted."""
    url = proxies.get(target.scheme) or proxies.get("all")
    if not url or _exempt(target, proxies.get("no", "")):
        return None
    return _proxy_from_url(url)


def _exempt(target: _Target, no_proxy: str) -> bool:
    """Whether NO_PROXY exempts the backend: `*`, its host (or `host:port`), or a parent
    domain (`example.org` and `.example.org` both cover `api.example.org`)."""
    host = target.host.lower()
    for entry in (part.strip().lower() for part in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        name, _, port = entry.partition(":") if entry.count(":") == 1 else (entry, "", "")
        if port and port != str(target.port):
            continue
        name = name.lstrip(".").strip("[]")
        if host == name or host.endswith("." + name):
            return True
    return False


def _request_head(
    request: BackendRequest, target: _Target, proxy: _Proxy | None = None
) -> tuple[bytes, bool]:
    """The request's head, as bytes ready to send, and whether the caller's own
    `Connection` header closes the connection after this exchange; refused before any IO
    when it is not valid HTTP (the message quotes nothing of it)."""
    headers = []
    has_host = close = False
    for name, value in request.headers:
        lowered = name.lower()
        if lowered in _FRAMING_HEADERS:
            continue
        if lowered == "host":
            has_host = True
        elif lowered == "connection":
            close |= "close" in (token.strip() for token in value.lower().split(","))
        headers.append((name, value))
    if not has_host:
        headers.insert(0, ("Host", target.authority))
    if request.body or request.method in _METHODS_WITH_BODY:
        headers.append(("Content-Length", str(len(request.body))))
    path = target.path
    if proxy is not None and target.scheme == "http":
        # Through a proxy without a tunnel: the absolute form, and our proxy credentials.
        path = f"http://{target.authority}{target.path}"
        if proxy.authorization:
            headers.append(("Proxy-Authorization", proxy.authorization))
    try:
        return _http1.request_head(request.method, path, headers), close
    except _http1.LocalProtocolError:
        raise ProtocolError("the request could not be sent as valid HTTP") from None


class _Connection:
    """One socket, and the answer being received on it (`transports._http1`).

    Its methods do IO only; their failures come up raw, and are translated (and bounded
    in time) by the `_Watch` of the call they serve.
    """

    def __init__(self, stream: anyio.abc.ByteStream | LoopStream) -> None:
        self.stream = stream
        self.answer: _http1.Answer | None = None
        # The last answer while the connection is idle, when `renew` may serve the next.
        self.spare: _http1.Answer | None = None
        # Looked up once: `extra()` walks the stream's attribute providers each time.
        self._socket = (
            stream.socket
            if isinstance(stream, LoopStream)
            else stream.extra(anyio.abc.SocketAttribute.raw_socket, None)
        )
        self._poller: select.poll | None = None  # made at the first check, then kept

    @property
    def reusable(self) -> bool:
        return self.answer is not None and self.answer.reusable

    def readable(self) -> bool:
        """Whether this idle connection has something to read: EOF, a reset, or
        unasked-for bytes (any of which makes it unfit to carry a request)."""
        if isinstance(self.stream, LoopStream) and not self.stream.sound:
            return True  # what the loop already delivered
        # What arrived since the loop last looked (a close the peer just made).
        sock = self._socket
        if sock is None:
            return False  # not a socket we can look at: trust it
        if sock.fileno() < 0:
            return True  # already closed: as unusable as a readable one
        # poll, not select: select refuses descriptors past FD_SETSIZE (1024), which a
        # gateway holding many streams opens as a matter of course.  One poller per
        # connection, so a check is the one system call.
        poller = self._poller
        if poller is None:
            poller = self._poller = select.poll()
            poller.register(sock, select.POLLIN | select.POLLPRI)
        return bool(poller.poll(0))

    async def request(self, data: bytes, answer: _http1.Answer) -> None:
        """Send a request (head and body), whose answer `answer` will receive."""
        self.answer = answer
        await self.stream.send(data)

    async def receive(
        self, watch: _Watch | None = None, timeout: float | None = None, deadline: float = math.inf
    ) -> None:
        """One read from the socket, fed to the answer; the read within `timeout` and the
        deadlines of `watch` (its scope's on anyio's streams, a timer of the loop's on
        asyncio's own stream, reported as the watch's timeout), or, given no watch, by
        `deadline` on the loop's clock (`DeadlinePassed` if nothing arrived by then)."""
        answer = self.answer
        if answer is None:
            raise TransportError("the backend answer was already read or closed")
        if watch is not None:
            if watch.scope is None:
                deadline = watch.bound(timeout)
            else:
                watch.arm(timeout)
        try:
            if deadline == math.inf:
                data = await self.stream.receive(READ_SIZE)
            else:
                assert isinstance(self.stream, LoopStream)
                data = await self.stream.receive(READ_SIZE, deadline)
        except anyio.EndOfStream:
            data = b""
        except DeadlinePassed:
            if watch is None:
                raise
            raise watch.expired(deadline) from None
        answer.receive(data)

    async def close(self) -> None:
        """Close at once: no waiting on the peer, and it works inside a cancelled scope."""
        if isinstance(self.stream, LoopStream):
            self.stream.close()
        else:
            await anyio.aclose_forcefully(self.stream)


class _HostPool:
    """Idle connections for one (scheme, host, port, TLS options)."""

    def __init__(self) -> None:
        self.idle: list[_Connection] = []
        self.retired = False


class H11Transport:
    """A `Transport` speaking HTTP/1.1 (`transports._http1`) over anyio streams (trio or
    asyncio; plain `http` on asyncio over asyncio's own transports).

    `ssl_context` is used as given for every https backend (`verify` is then ignored);
    without one, the system's CAs are trusted and hostnames verified, unless
    `verify=False` turns both off.  A request carrying `TLSOptions` uses the context
    built for them instead.  `trust_env` is the default for requests whose options do
    not say (and for requests without options).  `limits` bounds the exchanges in flight
    per backend (scheme, host, port) and in all, and the wait for one
    (`max_connections_per_host`, if given, sets the per-backend bound alone);
    `max_answer_bytes` caps a whole answer's body (16 MiB unless given; None: no cap).
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        verify: bool = True,
        max_connections_per_host: int | None = None,
        trust_env: bool = False,
        limits: ConnectionLimits | None = None,
        max_answer_bytes: int | None = DEFAULT_MAX_ANSWER_BYTES,
    ) -> None:
        limits = limits or ConnectionLimits()
        if max_connections_per_host is not None:
            if max_connections_per_host < 1:
                raise ValueError("max_connections_per_host must be at least 1")
            limits = ConnectionLimits(
                per_backend=max_connections_per_host,
                total=max(limits.total, max_connections_per_host),
                pool_wait=limits.pool_wait,
            )
        if max_answer_bytes is not None and max_answer_bytes < 1:
            raise ValueError("max_answer_bytes must be at least 1 (or None: no cap)")
        if ssl_context is None:
            ssl_context = ssl.create_default_context()
            if not verify:
                ssl_context.check_hostname = False
                ssl_context.verify_mode = ssl.CERT_NONE
            ssl_context.set_alpn_protocols(["http/1.1"])
        self._ssl_context = ssl_context
        self._admission = Admission(limits)
        self._max_answer_bytes = max_answer_bytes
        self._trust_env = trust_env
        self._proxies = _environment_proxies()
        self._tls_contexts: dict[TLSOptions, ssl.SSLContext] = {}
        self._pools: dict[tuple[str, str, int, TLSOptions | None], _HostPool] = {}
        self._closed = False

    def check_tls(self, tls: TLSOptions) -> None:
        """Build what these options need now; raise TLSConfigError if they cannot be honoured.

        Called at start for each endpoint's options, so a bad file or a proxy this
        transport cannot speak to stops start-up instead of failing requests.
        """
        self._context_for(tls)
        if self._trusts_env(tls):
            for kind in _PROXY_KINDS:
                if self._proxies.get(kind):
                    _proxy_from_url(self._proxies[kind])

    def _trusts_env(self, tls: TLSOptions | None) -> bool:
        return self._trust_env if tls is None or tls.trust_env is None else tls.trust_env

    def _context_for(self, tls: TLSOptions | None) -> ssl.SSLContext:
        if tls is None:
            return self._ssl_context
        context = self._tls_contexts.get(tls)
        if context is None:
            context = ssl_context_for(tls, trust_env=self._trusts_env(tls), alpn=["http/1.1"])
            self._tls_contexts[tls] = context
        return context

    def _route(self, request: BackendRequest, target: _Target) -> _Proxy | None:
        """The proxy for this request, if it trusts the environment and one applies."""
        if not self._trusts_env(request.tls):
            return None
        try:
            return _proxy_for(target, self._proxies)
        except TLSConfigError:
            raise ConnectError("the proxy named by the environment is not supported") from None

    @property
    def limits(self) -> ConnectionLimits:
        return self._admission.limits

    def in_use(self, url: str) -> int:
        """Exchanges in flight to the backend of `url` (its scheme, host and port)."""
        return self._admission.in_use(_parse_url(url).key)

    async def send(self, request: BackendRequest) -> BackendResponse:
        """The whole answer, read under the call's total time limit (counted from the
        moment the call holds its permits)."""
        lease = await self._admit(request)
        try:
            with lease.watch(request.timeout.total) as watch:
                stream = await self._open(request, lease, watch)
                body = await stream.read_all(watch)
        finally:
            if not lease.released:  # the answer gave it back, unless it failed
                await lease.release(reuse=False)
        return BackendResponse(status=stream.status, headers=stream.headers, body=body)

    async def open_stream(self, request: BackendRequest) -> H11Stream:
        """An answer whose headers have arrived; the body is read through the stream."""
        lease = await self._admit(request)
        try:
            with lease.watch(request.timeout.total) as watch:
                return await self._open(request, lease, watch)
        except BaseException:
            await lease.release(reuse=False)  # a no-op when opening gave it back
            raise

    async def aclose(self) -> None:
        """Close the idle connections; connections in use close when their answer ends."""
        self._closed = True
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.retired = True
            idle, pool.idle = pool.idle, []
            for connection in idle:
                await connection.close()

    async def _admit(self, request: BackendRequest) -> _Lease:
        """The request checked (before any IO), and its permits: a lease to exchange on."""
        if self._closed:
            raise TransportError("the transport is closed")
        target = _parse_url(request.url)
        proxy = self._route(request, target)
        head, close = _request_head(request, target, proxy)
        try:
            context = self._context_for(request.tls) if target.scheme == "https" else None
        except TLSConfigError:
            # Checked at start; a file that went away since must not name its path here.
            raise ConnectError("the backend's TLS settings cannot be loaded") from None
        key = (*target.key, request.tls)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _HostPool()
        # asyncio's own stream carries a plain `http` exchange made without a proxy.
        on_loop = proxy is None and context is None and _on_asyncio()
        permit = await self._admission.acquire(target.key)
        return _Lease(pool, permit, target, proxy, head, context, close, on_loop)

    async def _open(self, request: BackendRequest, lease: _Lease, watch: _Watch) -> H11Stream:
        timeout = request.timeout
        try:
            idle = lease.pool.idle
            if idle and not idle[-1].readable():  # `_checkout`'s usual case, no coroutine
                connection = lease.connection = idle.pop()
            else:
                connection = lease.connection = await self._checkout(lease, timeout.connect, watch)
            watch.enter(_Phase.WRITE)
            spare, connection.spare = connection.spare, None
            if spare is None:
                answer = _http1.Answer(request.method, close=lease.close)
            else:
                answer = spare.renew(request.method, close=lease.close)
            # The head is sent once: not kept on the lease for a stream's whole life.
            data, lease.head = lease.head + request.body, b""
            if watch.scope is None:
                first_byte = await _ask_on_loop(connection, watch, data, timeout, answer)
            else:
                watch.arm(timeout.read)
                await connection.request(data, answer)
                first_byte = deadline_after(timeout.first_byte)
                watch.enter(_Phase.FIRST_BYTE, first_byte)
                while not answer.has_head:
                    await connection.receive()
        except BaseException:
            await lease.release(reuse=False)
            raise
        return H11Stream(
            lease,
            status=answer.status,
            headers=tuple(answer.headers),
            timeout=timeout,
            deadline=watch.total,
            first_byte_deadline=first_byte,
            max_answer_bytes=self._max_answer_bytes,
        )

    async def _checkout(self, lease: _Lease, timeout: float | None, watch: _Watch) -> _Connection:
        """An idle connection that is still sound, else a new one (within `timeout`)."""
        idle = lease.pool.idle
        while idle:
            connection = idle.pop()
            if not connection.readable():
                return connection
            await connection.close()
        watch.enter(_Phase.CONNECT)
        watch.arm(timeout)
        target, context, proxy = lease.target, lease.context, lease.proxy
        if lease.on_loop:
            # The one wait of a loop-stream call not on a future of the loop's.
            with anyio.CancelScope(deadline=watch.deadline):
                return _Connection(await loop_connect(target.host, target.port))
            raise watch.expired(watch.deadline)  # the scope fired
        if proxy is None:
            if context is not None:
                stream: anyio.abc.ByteStream = await anyio.connect_tcp(
                    target.host,
                    target.port,
                    tls=True,
                    ssl_context=context,
                    tls_standard_compatible=False,
                )
            else:
                stream = await anyio.connect_tcp(target.host, target.port)
        else:
            stream = await anyio.connect_tcp(proxy.host, proxy.port)
            if context is not None:
                stream = await _tunnel(stream, target, context, proxy)
        return _Connection(stream)


async def _ask_on_loop(
    connection: _Connection, watch: _Watch, data: bytes, timeout: Timeout, answer: _http1.Answer
) -> float:
    """Send the request and wait for its answer's head over asyncio's own stream, within
    the same limits as on other streams (the write within the read limit, the head within
    the first-byte limit, both within the call's total); returns the first-byte deadline.

    The limits are timers of the loop's on the futures waited on (`_Watch.bound`), not
    moves of a cancel scope's deadline: each move reschedules the scope's timer, and
    the two of them cost more CPU than the write and the parse together.
    """
    stream = connection.stream
    assert isinstance(stream, LoopStream)
    connection.answer = answer
    if stream.write(data):  # the peer is behind: wait for it within the limits
        write_by = watch.bound(timeout.read)
        try:
            await stream.drain(write_by)
        except DeadlinePassed:
            raise watch.expired(write_by) from None
    first_byte = (
        math.inf
        if timeout.first_byte is None
        else asyncio.get_running_loop().time() + timeout.first_byte
    )
    watch.enter(_Phase.FIRST_BYTE, first_byte)
    # `_Connection.receive`, written out: one coroutine fewer per exchange.
    read_by = watch.bound(None)
    while not answer.has_head:
        try:
            data = await stream.receive(READ_SIZE, read_by)
        except anyio.EndOfStream:
            data = b""
        except DeadlinePassed:
            raise watch.expired(read_by) from None
        answer.receive(data)
    return first_byte


def _on_asyncio() -> bool:
    """Whether the call runs on asyncio (whose own transports `_loop_stream` uses)."""
    return asyncio._get_running_loop() is not None  # None: trio


async def _tunnel(
    stream: anyio.abc.ByteStream, target: _Target, context: ssl.SSLContext, proxy: _Proxy
) -> anyio.abc.ByteStream:
    """Ask the proxy for a CONNECT tunnel to the backend, then speak TLS inside it."""
    try:
        shown_host = f"[{target.host}]" if ":" in target.host else target.host
        authority = f"{shown_host}:{target.port}"
        headers = [("Host", authority)]
        if proxy.authorization:
            headers.append(("Proxy-Authorization", proxy.authorization))
        machine = _Connection(stream)
        answer = _http1.Answer("CONNECT")
        try:
            await machine.request(_http1.request_head("CONNECT", authority, headers), answer)
            while not answer.has_head:
                await machine.receive()
        except _http1.NoAnswer:
            raise ConnectError("the proxy refused the tunnel to the backend (no answer)") from None
        except Exception:
            # A proxy that breaks HTTP or the connection is a failure to connect, not an
            # answer.
            raise ConnectError("could not open a tunnel through the proxy") from None
        if not 200 <= answer.status < 300:
            raise ConnectError(f"the proxy refused the tunnel to the backend ({answer.status})")
        if answer.overrun or answer.body:
            raise ConnectError("the proxy sent data before the tunnel was open")
        return await TLSStream.wrap(
            stream,
            server_side=False,
            hostname=target.host,
            ssl_context=context,
            standard_compatible=False,
        )
    except BaseException:
        await anyio.aclose_forcefully(stream)
        raise


class _Lease:
    """A call's permits and pool, where and what it sends (worked out before any IO),
    and its connection once there is one; released once."""

    __slots__ = (
        "_permit",
        "close",
        "connection",
        "context",
        "head",
        "on_loop",
        "pool",
        "proxy",
        "released",
        "target",
    )

    def __init__(
        self,
        pool: _HostPool,
        permit: Permit,
        target: _Target,
        proxy: _Proxy | None,
        head: bytes,
        context: ssl.SSLContext | None,
        close: bool,
        on_loop: bool,
    ) -> None:
        self.pool = pool
        self._permit = permit
        self.target = target
        self.proxy = proxy
        self.head = head
        self.context = context
        self.close = close  # the caller's headers ask to close the connection after this
        self.on_loop = on_loop  # the exchange runs on asyncio's own stream (`_loop_stream`)
        self.released = False
        self.connection: _Connection | None = None

    def watch(self, total: float | None) -> _Watch:
        """The call's watch, `total` seconds from now at most (None: no limit)."""
        if not self.on_loop:
            return _Watch(deadline_after(total))
        if total is not None:
            total += asyncio.get_running_loop().time()
        return _Watch(math.inf if total is None else total, loop=True)

    async def release(self, *, reuse: bool) -> None:
        """Give the permits back; keep the connection only if asked and its answer
        allows it."""
        if self.released:
            return
        self.released = True
        self._permit.release()
        connection, self.connection = self.connection, None
        if connection is None:
            return
        if reuse and connection.reusable and not self.pool.retired:
            answer, connection.answer = connection.answer, None
            if answer is not None and answer.renewable:
                connection.spare = answer
            self.pool.idle.append(connection)
        else:
            await connection.close()


class H11Stream:
    """A `BackendStream` over one pooled HTTP/1.1 connection."""

    def __init__(
        self,
        lease: _Lease,
        *,
        status: int,
        headers: Headers,
        timeout: Timeout,
        deadline: float,
        first_byte_deadline: float,
        max_answer_bytes: int | None = DEFAULT_MAX_ANSWER_BYTES,
    ) -> None:
        self._lease = lease
        self._timeout = timeout
        self._deadline = deadline
        self._first_byte_deadline = first_byte_deadline
        self._max_answer_bytes = max_answer_bytes
        self._started = False  # a body byte has arrived
        self._finished = False
        self.status = status
        self.headers = headers

    def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes, one chunk per body piece parsed, as they arrive: the first within
        the first-byte limit, each later one within the idle limit.  The stream is its
        own iterator (no generator frame between the caller and each read)."""
        return self

    def __aiter__(self) -> H11Stream:
        return self

    def __anext__(self) -> Awaitable[bytes]:
        # No coroutine of its own: the read's is handed out, so an open stream, which
        # waits between chunks, keeps one coroutine frame fewer alive (and a chunk
        # steps through one fewer).
        if self._started:
            return self._next_chunk(self._timeout.idle, _Phase.IDLE, math.inf)
        return self._next_chunk(None, _Phase.FIRST_BYTE, self._first_byte_deadline)

    async def aread(self) -> bytes:
        """The rest of the body at once, each receive within the read limit, refused past
        `max_answer_bytes` (the connection is then closed)."""
        try:
            self._check_deadlines(math.inf)
            connection = self._lease.connection
            on_loop = connection is not None and isinstance(connection.stream, LoopStream)
            with _Watch(self._deadline, loop=on_loop) as watch:
                return await self.read_all(watch)
        except BaseException:
            await self._lease.release(reuse=False)
            raise

    async def read_all(self, watch: _Watch) -> bytes:
        """The rest of the body, under `watch` (the caller's, for `send`): each receive
        within the read limit, refused past `max_answer_bytes`.  The connection goes back
        to the pool at the end, and is closed on any failure."""
        cap = self._max_answer_bytes
        if cap is not None and _declared_length(self.headers) > cap:
            await self._lease.release(reuse=False)
            raise _too_large(cap)
        if self._finished:
            return b""
        connection = self._lease.connection
        if connection is None or connection.answer is None:
            raise TransportError("the backend answer was already read or closed")
        answer = connection.answer
        parts: list[bytes] = []
        size = 0
        watch.enter(_Phase.READ)
        try:
            while True:
                pieces = answer.body
                for piece in pieces:
                    size += len(piece)
                    if cap is not None and size > cap:
                        parts.clear()
                        raise _too_large(cap)
                    parts.append(piece)
                pieces.clear()
                if answer.ended:
                    break
                await connection.receive(watch, self._timeout.read)
        except BaseException:
            await self._lease.release(reuse=False)
            raise
        self._finished = True
        await self._lease.release(reuse=True)
        return b"".join(parts)

    async def aclose(self) -> None:
        """Give the connection back if the body was read to its end, or if its end is
        already in hand (parsed from bytes received with the last chunk: a caller that
        stops at a stream's last event need not ask for it); else close it."""
        if not self._finished and self._end_already_received():
            self._finished = True
        await self._lease.release(reuse=self._finished)

    def _end_already_received(self) -> bool:
        """Whether the answer's end is next in what was received, with no body bytes
        before it; no IO (anything else, body bytes included, means the connection
        closes)."""
        connection = self._lease.connection
        answer = None if connection is None else connection.answer
        return answer is not None and answer.ended and not answer.body

    def _check_deadlines(self, phase_deadline: float) -> None:
        """Refuse at once a read begun past the stream's total deadline or its phase's."""
        if self._deadline == math.inf and phase_deadline == math.inf:
            return
        connection = self._lease.connection
        on_loop = connection is not None and isinstance(connection.stream, LoopStream)
        # On asyncio's own stream the loop's clock is read directly (see _next_chunk).
        now = asyncio.get_running_loop().time() if on_loop else anyio.current_time()
        if now >= self._deadline:
            raise _timeout_of(_Phase.TOTAL)
        if now >= phase_deadline:
            raise _timeout_of(_Phase.FIRST_BYTE)

    async def _next_chunk(
        self, timeout: float | None, phase: _Phase, phase_deadline: float
    ) -> bytes:
        """The next non-empty piece of body (StopAsyncIteration at its end); any failure
        closes.

        Each receive is bounded by `timeout`, all of them by `phase_deadline` (both
        reported as `phase`'s timeout), and the whole call by the stream's deadline: one
        `_Watch` per call, since a cancel scope may not stay open across the yields of a
        generator the caller drives.  On asyncio's own stream, no watch: the earliest of
        the three deadlines is one timer of the loop's on the read's future
        (`LoopStream.receive`), and failures are translated as the watch does; the read
        (`_Connection.receive`'s) is written out here, because an open stream waits in
        it between chunks, and each coroutine frame more would be kept alive all that
        time and stepped through for every chunk.
        """
        if self._finished:
            raise StopAsyncIteration
        connection = self._lease.connection
        if connection is None or connection.answer is None:
            raise TransportError("the backend answer was already read or closed")
        answer = connection.answer
        try:
            if self._deadline != math.inf or phase_deadline != math.inf:
                self._check_deadlines(phase_deadline)
            while True:
                if answer.body:
                    self._started = True
                    return answer.body.pop(0)
                if answer.ended:
                    break
                # Only a read that must wait pays for a time limit: chunks that came
                # together in one receive are handed out without one.
                stream = connection.stream
                if not isinstance(stream, LoopStream):
                    with _Watch(self._deadline, phase, phase_deadline) as watch:
                        await connection.receive(watch, timeout)
                    continue
                deadline = _earliest(self._deadline, phase_deadline, timeout)
                try:
                    try:
                        data = await stream.receive(READ_SIZE, deadline)
                    except anyio.EndOfStream:
                        data = b""
                    answer.receive(data)
                except DeadlinePassed:
                    late = _Phase.TOTAL if self._deadline <= deadline else phase
                    raise _timeout_of(late) from None
                except Exception as exc:
                    translated = _translated(exc, phase)
                    if translated is not None:
                        raise translated from None
                    raise
        except BaseException:
            await self._lease.release(reuse=False)
            raise
        self._finished = True
        await self._lease.release(reuse=True)
        raise StopAsyncIteration


def _declared_length(headers: Headers) -> int:
    """The body length the head announces, or -1 when it does not say."""
    for name, value in headers:  # a plain loop: a generator costs a resume per header
        if name == "content-length":
            try:
                return int(value)
            except ValueError:
                return -1
    return -1


def _too_large(cap: int) -> AnswerTooLarge:
    return AnswerTooLarge(f"the backend's answer exceeded the limit of {cap} bytes", limit=cap)
