"""The production transport: backend calls over a pooled `httpx.AsyncClient`.

Theory of operation.  Each `BackendRequest` becomes one httpx request.  httpx has one
read limit for every receive while a call has several, so it keeps only what it can:
the connect (`Timeout.connect`), the write (`read`) and, as its read limit while the
head is awaited, `first_byte` (the request sent until the head); once the head is in,
that limit is lifted and the rest is kept here with anyio: a stream's first body bytes
within `first_byte` of the call's start, each later read of a stream within `idle`,
each read of a whole answer's body within `read`, a whole `send` within `total` (and a
stream from `open_stream` to its last read).  A stream keeps its deadlines and opens a
fresh `fail_after` for every read, because a cancel scope may not stay open across the
yields of a generator the caller drives.  Each limit raises its own `TransportTimeout`
subclass.

Before any IO a call takes a permit of its backend (scheme, host, port) and of the whole
transport (`transports._limits`), waiting at most `pool_wait` (else `Saturated`); it
holds them until its answer was read or its stream closed.  httpx's own pool is sized to
the global limit and never waited on, so one backend that hangs cannot take the
connections another needs.  A whole answer is read piece by piece and refused with
`AnswerTooLarge` once it passes `max_answer_bytes` (or at once, if its `Content-Length`
says it will), closing the connection and dropping what was read.

Every httpx error is translated in one place, `_mapped_errors`, into the
`transports._base` family, by the phase of the call it happened in.  httpx messages can
hold the URL (and a URL can hold userinfo), so the translated errors carry short
messages of our own and drop the original chain.  Cancellation is never translated: only
`Exception`s are caught.

Only anyio is used, never asyncio or trio directly; httpx itself picks the running loop.

TLS options.  A request without `tls` goes through the shared client.  A request with
`TLSOptions` goes through a client of its own for those options (one per distinct set,
built on first use and kept): its SSL context comes from `transports._tls` (CA bundle,
client certificate, hostname check), and its `trust_env` is the options' own or, when
they leave it open, the shared client's, so httpx reads proxies from the environment
exactly as it does for the seed system.
"""

from __future__ import annotations

import enum
import math
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import anyio
import certifi
import httpx

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
from transports._deadline import deadline_after, until
from transports._limits import DEFAULT_MAX_ANSWER_BYTES, Admission, ConnectionLimits, Permit
from transports._tls import TLSConfigError, ssl_context_for

__all__ = ["HttpxStream", "HttpxTransport"]


class _Phase(enum.Enum):
    """Which limit a TimeoutError from our own deadlines belongs to."""

    FIRST_BYTE = "first_byte"
    IDLE = "idle"
    READ = "read"
    TOTAL = "total"


_DEADLINES: dict[_Phase, tuple[type[TransportTimeout], str]] = {
    _Phase.FIRST_BYTE: (FirstByteTimeout, "the backend sent no answer within the first-byte limit"),
    _Phase.IDLE: (IdleTimeout, "the backend's stream went silent past the idle limit"),
    _Phase.READ: (TransportTimeout, "timed out waiting for the backend to answer"),
    _Phase.TOTAL: (TotalTimeout, "the backend call exceeded its total time limit"),
}

# Most specific first: the first row whose httpx type matches decides.
_ERROR_TABLE: tuple[tuple[type[Exception], type[TransportError], str], ...] = (
    (httpx.ConnectTimeout, ConnectTimeout, "timed out connecting to the backend"),
    (httpx.PoolTimeout, TransportTimeout, "timed out waiting for a free backend connection"),
    (httpx.ReadTimeout, TransportTimeout, "timed out waiting for the backend to answer"),
    (httpx.WriteTimeout, TransportTimeout, "timed out sending the request to the backend"),
    (httpx.TimeoutException, TransportTimeout, "the backend call timed out"),
    (httpx.ConnectError, ConnectError, "could not connect to the backend"),
    (httpx.ProxyError, ConnectError, "could not connect to the backend through the proxy"),
    (httpx.RemoteProtocolError, ProtocolError, "the backend broke the HTTP protocol"),
    (httpx.LocalProtocolError, ProtocolError, "the request could not be sent as valid HTTP"),
    (httpx.ReadError, ProtocolError, "the connection broke while reading the answer"),
    (httpx.WriteError, ProtocolError, "the connection broke while sending the request"),
    (httpx.CloseError, ProtocolError, "the connection could not be closed cleanly"),
    (httpx.DecodingError, ProtocolError, "the backend's answer could not be decoded"),
    (httpx.UnsupportedProtocol, TransportError, "the backend URL has an unsupported scheme"),
    (httpx.InvalidURL, TransportError, "the backend URL is invalid"),
    (httpx.StreamError, TransportError, "the backend answer was already read or closed"),
    (httpx.HTTPError, TransportError, "the backend call failed"),
)


@contextmanager
def _mapped_errors(phase: _Phase = _Phase.TOTAL) -> Iterator[None]:
    """The one boundary where httpx (and deadline) errors become transport errors; a
    deadline of ours that ran out is reported as `phase`'s limit."""
    try:
        yield
    except TransportError:
        raise
    except TimeoutError:
        timeout, text = _DEADLINES[phase]
        raise timeout(text) from None
    except httpx.ReadTimeout:
        # httpx's read limit is the first-byte limit while the head is awaited.
        timeout, text = _DEADLINES[phase if phase is _Phase.FIRST_BYTE else _Phase.READ]
        raise timeout(text) from None
    except Exception as exc:
        for source, target, message in _ERROR_TABLE:
            if isinstance(exc, source):
                raise target(message) from None
        raise


def _httpx_timeout(timeout: Timeout) -> httpx.Timeout:
    """httpx keeps the connect and write limits, and the first-byte limit as its read
    limit while the head is awaited (one read, from the request sent); the pool is never
    waited on (our permits come first)."""
    return httpx.Timeout(
        connect=timeout.connect, read=timeout.first_byte, write=timeout.read, pool=None
    )


def _body_reads_unbounded_by_httpx(response: httpx.Response) -> None:
    """Lift httpx's read limit once the head is in: the body's reads are bounded by our
    own deadlines (idle, read, total).  httpcore reads the limit from the request's
    extensions when the body is first read, so this must happen before that; were it
    ever read earlier, the body would merely keep the first-byte limit as well."""
    limits = response.request.extensions.get("timeout")
    if isinstance(limits, dict):
        limits["read"] = None


def _backend_key(url: str) -> tuple[str, str, int]:
    parsed = httpx.URL(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return (parsed.scheme, parsed.host, port)


def _declared_length(response: httpx.Response) -> int:
    try:
        return int(response.headers.get("content-length", "-1"))
    except ValueError:
        return -1


def _too_large(cap: int) -> AnswerTooLarge:
    return AnswerTooLarge(f"the backend's answer exceeded the limit of {cap} bytes", limit=cap)


async def _read_capped(
    response: httpx.Response, cap: int | None, read: float | None, deadline: float
) -> bytes:
    """A whole body, each read within `read`, refused (and the response closed) once it
    passes `cap`; the caller closes the response in every case."""
    if cap is not None and _declared_length(response) > cap:
        raise _too_large(cap)
    parts: list[bytes] = []
    size = 0
    reader = response.aiter_bytes()
    while True:
        with _mapped_errors(_Phase.TOTAL), until(deadline), _mapped_errors(_Phase.READ):
            with anyio.fail_after(read):
                try:
                    chunk = await reader.__anext__()
                except StopAsyncIteration:
                    return b"".join(parts)
        size += len(chunk)
        if cap is not None and size > cap:
            parts.clear()
            raise _too_large(cap)
        parts.append(chunk)


def _headers(response: httpx.Response) -> Headers:
    return tuple(response.headers.multi_items())


class HttpxTransport:
    """A `Transport` on one connection pool shared by every adaptor of the gateway."""

    def __init__(
        self,
        client: httpx.AsyncClient | None = None,
        *,
        verify: bool = True,
        max_connections: int | None = None,
        limits: ConnectionLimits | None = None,
        max_answer_bytes: int | None = DEFAULT_MAX_ANSWER_BYTES,
    ) -> None:
        """`limits` bound the exchanges in flight per backend and in all, and the wait
        for one (`max_connections`, if given, sets the global bound alone);
        `max_answer_bytes` caps a whole answer's body (16 MiB unless given; None: no cap)."""
        limits = limits or ConnectionLimits()
        if max_connections is not None:
            limits = ConnectionLimits(
                total=max_connections,
                per_backend=min(limits.per_backend, max_connections),
                pool_wait=limits.pool_wait,
            )
        if max_answer_bytes is not None and max_answer_bytes < 1:
            raise ValueError("max_answer_bytes must be at least 1 (or None: no cap)")
        self._admission = Admission(limits)
        self._max_answer_bytes = max_answer_bytes
        self._owns_client = client is None
        self._limits = httpx.Limits(
            max_connections=limits.total, max_keepalive_connections=limits.per_backend
        )
        if client is None:
            client = httpx.AsyncClient(verify=verify, limits=self._limits, follow_redirects=False)
        self._client = client
        self._tls_clients: dict[TLSOptions, httpx.AsyncClient] = {}

    def check_tls(self, tls: TLSOptions) -> None:
        """Build the client for these options now; raise TLSConfigError if that fails.

        Called at start for each endpoint's options, so a bad file, or a proxy variable
        httpx cannot use, stops start-up instead of failing requests.
        """
        self._tls_client(tls)

    def _tls_client(self, tls: TLSOptions) -> httpx.AsyncClient:
        client = self._tls_clients.get(tls)
        if client is None:
            trust_env = self._client.trust_env if tls.trust_env is None else tls.trust_env
            context = ssl_context_for(tls, trust_env=trust_env, default_cafile=certifi.where())
            try:
                client = httpx.AsyncClient(
                    verify=context,
                    trust_env=trust_env,
                    limits=self._limits,
                    follow_redirects=False,
                )
            except (ImportError, ValueError) as exc:
                # A proxy variable httpx cannot use; its message may quote the proxy URL.
                raise TLSConfigError(
                    "trust_env: the environment names a proxy httpx cannot use "
                    f"({type(exc).__name__})"
                ) from None
            self._tls_clients[tls] = client
        return client

    def _client_for(self, tls: TLSOptions | None) -> httpx.AsyncClient:
        """The shared client, or the one kept for these TLS options (built on first use)."""
        if tls is None:
            return self._client
        try:
            return self._tls_client(tls)
        except TLSConfigError:
            # Checked at start; a file that went away since must not name its path here.
            raise ConnectError("the backend's TLS settings cannot be loaded") from None

    def _build(self, client: httpx.AsyncClient, request: BackendRequest) -> httpx.Request:
        return client.build_request(
            request.method,
            request.url,
            headers=list(request.headers),
            content=request.body or None,
            timeout=_httpx_timeout(request.timeout),
        )

    @property
    def limits(self) -> ConnectionLimits:
        return self._admission.limits

    def in_use(self, url: str) -> int:
        """Exchanges in flight to the backend of `url` (its scheme, host and port)."""
        return self._admission.in_use(_backend_key(url))

    async def _admit(self, request: BackendRequest) -> tuple[httpx.AsyncClient, Permit]:
        client = self._client_for(request.tls)
        with _mapped_errors():
            key = _backend_key(request.url)
        return client, await self._admission.acquire(key)

    async def _head(
        self, client: httpx.AsyncClient, request: BackendRequest, deadline: float
    ) -> httpx.Response:
        """The answer's head, within the first-byte limit (httpx's read limit for now)
        and the call's deadline."""
        with _mapped_errors(_Phase.TOTAL), until(deadline), _mapped_errors(_Phase.FIRST_BYTE):
            response = await client.send(self._build(client, request), stream=True)
        _body_reads_unbounded_by_httpx(response)
        return response

    async def send(self, request: BackendRequest) -> BackendResponse:
        """The whole answer (decoded from any content-encoding), capped in size."""
        client, permit = await self._admit(request)
        try:
            deadline = deadline_after(request.timeout.total)
            response = await self._head(client, request, deadline)
            try:
                body = await _read_capped(
                    response, self._max_answer_bytes, request.timeout.read, deadline
                )
            finally:
                with _mapped_errors():
                    await response.aclose()
        finally:
            permit.release()
        return BackendResponse(status=response.status_code, headers=_headers(response), body=body)

    async def open_stream(self, request: BackendRequest) -> HttpxStream:
        """An answer whose headers have arrived; the body is read through the stream."""
        client, permit = await self._admit(request)
        try:
            deadline = deadline_after(request.timeout.total)
            first_byte = deadline_after(request.timeout.first_byte)
            response = await self._head(client, request, deadline)
        except BaseException:
            permit.release()
            raise
        return HttpxStream(
            response,
            deadline,
            permit=permit,
            timeout=request.timeout,
            first_byte_deadline=first_byte,
            max_answer_bytes=self._max_answer_bytes,
        )

    async def aclose(self) -> None:
        """Close the pools we built: a client passed in belongs to its owner."""
        clients, self._tls_clients = list(self._tls_clients.values()), {}
        for client in clients:
            await client.aclose()
        if self._owns_client:
            await self._client.aclose()


class HttpxStream:
    """A `BackendStream` over an httpx response opened with `stream=True`."""

    def __init__(
        self,
        response: httpx.Response,
        deadline: float,
        *,
        permit: Permit | None = None,
        timeout: Timeout | None = None,
        first_byte_deadline: float = math.inf,
        max_answer_bytes: int | None = DEFAULT_MAX_ANSWER_BYTES,
    ) -> None:
        self._response = response
        self._deadline = deadline
        self._permit = permit
        self._timeout = timeout or Timeout(read=None)
        self._first_byte_deadline = first_byte_deadline
        self._max_answer_bytes = max_answer_bytes
        self._closed = False
        self.status: int = response.status_code
        self.headers: Headers = _headers(response)

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as httpx hands them over (decoded from any content-encoding): the
        first within the first-byte limit, each later one within the idle limit.

        Each read gets its own deadline scopes, so no cancel scope spans a `yield`.
        """
        reader = self._response.aiter_bytes()
        started = False
        while True:
            if started:
                phase, limit, phase_deadline = _Phase.IDLE, self._timeout.idle, math.inf
            else:
                phase, limit, phase_deadline = _Phase.FIRST_BYTE, None, self._first_byte_deadline
            late = FirstByteTimeout(_DEADLINES[_Phase.FIRST_BYTE][1])
            with (
                _mapped_errors(_Phase.TOTAL),
                until(self._deadline),
                _mapped_errors(phase),
                until(phase_deadline, late),
                anyio.fail_after(limit),
            ):
                try:
                    chunk = await reader.__anext__()
                except StopAsyncIteration:
                    return
            if chunk:
                started = True
                yield chunk

    async def aread(self) -> bytes:
        """The rest of the body at once (for error answers, which are small), capped."""
        return await _read_capped(
            self._response, self._max_answer_bytes, self._timeout.read, self._deadline
        )

    async def aclose(self) -> None:
        """Give the connection back (or drop it mid-body); safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        try:
            with _mapped_errors():
                await self._response.aclose()
        finally:
            if self._permit is not None:
                self._permit.release()
