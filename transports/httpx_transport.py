"""The production transport: backend calls over a pooled `httpx.AsyncClient`.

Theory of operation.  Each `BackendRequest` becomes one httpx request whose per-phase
limits come from `BackendRequest.timeout` (connect and pool share `connect`, read and
write share `read`).  httpx has no limit on a whole call, so `total` is a deadline kept
with anyio: `send` runs under one `anyio.fail_after`; a stream computes its deadline when
it opens and every later read runs under `fail_after(time left)`, because a cancel scope
may not stay open across the yields of a generator the caller drives.

Every httpx error is translated in one place, `_mapped_errors`, into the
`transports._base` family.  httpx messages can hold the URL (and a URL can hold
userinfo), so the translated errors carry short messages of our own and drop the
original chain.  Cancellation is never translated: only `Exception`s are caught.

Only anyio is used, never asyncio or trio directly; httpx itself picks the running loop.

TLS options.  A request without `tls` goes through the shared client.  A request with
`TLSOptions` goes through a client of its own for those options (one per distinct set,
built on first use and kept): its SSL context comes from `transports._tls` (CA bundle,
client certificate, hostname check), and its `trust_env` is the options' own or, when
they leave it open, the shared client's, so httpx reads proxies from the environment
exactly as it does for the seed system.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import anyio
import certifi
import httpx

from transports._base import (
    BackendRequest,
    BackendResponse,
    ConnectError,
    Headers,
    ProtocolError,
    Timeout,
    TLSOptions,
    TransportError,
    TransportTimeout,
)
from transports._deadline import deadline_after, until
from transports._tls import TLSConfigError, ssl_context_for

__all__ = ["HttpxStream", "HttpxTransport"]

# Most specific first: the first row whose httpx type matches decides.
_ERROR_TABLE: tuple[tuple[type[Exception], type[TransportError], str], ...] = (
    (httpx.ConnectTimeout, TransportTimeout, "timed out connecting to the backend"),
    (httpx.PoolTimeout, TransportTimeout, "timed out waiting for a free backend connection"),
    (httpx.ReadTimeout, TransportTimeout, "timed out waiting for the backend to answer"),
    (httpx.WriteTimeout, TransportTimeout, "timed out sending the request to the backend"),
    (httpx.TimeoutException, TransportTimeout, "the backend call timed out"),
    (TimeoutError, TransportTimeout, "the backend call exceeded its total time limit"),
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
def _mapped_errors() -> Iterator[None]:
    """The one boundary where httpx (and deadline) errors become transport errors."""
    try:
        yield
    except TransportError:
        raise
    except Exception as exc:
        for source, target, message in _ERROR_TABLE:
            if isinstance(exc, source):
                raise target(message) from None
        raise


def _httpx_timeout(timeout: Timeout) -> httpx.Timeout:
    return httpx.Timeout(
        connect=timeout.connect, read=timeout.read, write=timeout.read, pool=timeout.connect
    )


def _headers(response: httpx.Response) -> Headers:
    return tuple(response.headers.multi_items())


class HttpxTransport:
    """A `Transport` on one connection pool shared by every adaptor of the gateway."""

    def __init__(
        self,
        client: httpx.AsyncClient | None = None,
        *,
        verify: bool = True,
        max_connections: int = 100,
    ) -> None:
        self._owns_client = client is None
        self._limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
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

    async def send(self, request: BackendRequest) -> BackendResponse:
        """The whole answer; the body is decoded from any content-encoding."""
        client = self._client_for(request.tls)
        with _mapped_errors(), anyio.fail_after(request.timeout.total):
            response = await client.send(self._build(client, request))
        return BackendResponse(
            status=response.status_code, headers=_headers(response), body=response.content
        )

    async def open_stream(self, request: BackendRequest) -> HttpxStream:
        """An answer whose headers have arrived; the body is read through the stream."""
        total = request.timeout.total
        deadline = deadline_after(total)
        client = self._client_for(request.tls)
        with _mapped_errors(), until(deadline):
            response = await client.send(self._build(client, request), stream=True)
        return HttpxStream(response, deadline)

    async def aclose(self) -> None:
        """Close the pools we built: a client passed in belongs to its owner."""
        clients, self._tls_clients = list(self._tls_clients.values()), {}
        for client in clients:
            await client.aclose()
        if self._owns_client:
            await self._client.aclose()


class HttpxStream:
    """A `BackendStream` over an httpx response opened with `stream=True`."""

    def __init__(self, response: httpx.Response, deadline: float) -> None:
        self._response = response
        self._deadline = deadline
        self._closed = False
        self.status: int = response.status_code
        self.headers: Headers = _headers(response)

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as httpx hands them over (decoded from any content-encoding).

        Each read gets its own deadline scope, so no cancel scope spans a `yield`.
        """
        reader = self._response.aiter_bytes()
        while True:
            with _mapped_errors(), until(self._deadline):
                try:
                    chunk = await reader.__anext__()
                except StopAsyncIteration:
                    return
            if chunk:
                yield chunk

    async def aread(self) -> bytes:
        """The rest of the body at once (for error answers, which are small)."""
        with _mapped_errors(), until(self._deadline):
            return await self._response.aread()

    async def aclose(self) -> None:
        """Give the connection back (or drop it mid-body); safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        with _mapped_errors():
            await self._response.aclose()
