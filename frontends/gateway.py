"""The driver: feeds the core's request machine events and carries out its effects.

One `Gateway` serves every front-end (the Quart app, direct embedding, replay), so no
request logic lives in a web handler.  It is written against anyio only, never asyncio
or trio directly, so it runs under either loop.  Adaptors are called here and nowhere
else; whatever they raise is turned into an event at this one boundary.

The driver only drives: it is handed adaptors already built and bound
(`frontends.assembly`), asks who the caller is through `frontends.caller`, and hands
finished records to a log sink (`frontends.log_sink`).  The read-only routes beside it
(models, endpoints, jobs, whoami, health) are `frontends.listings`.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from types import MappingProxyType
from typing import Any, Protocol

import anyio
import attrs

from adaptors._failures import failure_of
from adaptors.clusters.cluster import BaseCluster
from adaptors.endpoints._body import ClientBody
from adaptors.endpoints.direct_api import PASSED_HEADERS
from adaptors.endpoints.endpoint import BaseEndpoint, StreamingResponse, SubmitTaskResponse
from core import (
    AdaptorFailed,
    AdaptorReturned,
    AssessHealth,
    Authenticate,
    CallAdaptor,
    Catalog,
    ChunkReceived,
    ClientDisconnected,
    Event,
    GatewayStopping,
    Identity,
    LocalProtocolError,
    OpenAIRoute,
    QuotaExceeded,
    QuotaPolicy,
    RelayChunk,
    Release,
    RememberResponse,
    RequestEffect,
    RequestLimits,
    RequestMachine,
    RequestReceived,
    Reserve,
    Reserved,
    Respond,
    Settle,
    SSEDecoder,
    StartStream,
    StreamEnded,
    StreamOpened,
    WriteLog,
    redact,
)
from frontends.api_headers import authorization_for, passed_headers
from frontends.caller import resolve_caller
from frontends.drain import Drain, new_scope
from frontends.endpoint_health import HealthBook, HealthPolicy, Lease
from frontends.identity import IdentityProvider
from frontends.ids import new_id
from frontends.log_sink import FanOut, LoggerSink, LogSink, Timing
from frontends.quota import QuotaCounters
from frontends.shared_responses import SharedResponses, previous_response_id
from transports import Transport, TransportError

__all__ = [
    "ByteStream",
    "Gateway",
    "GatewayRequest",
    "GatewayResponse",
    "StreamObserver",
    "StreamRelay",
]

log = logging.getLogger("inference_gateway")


@attrs.frozen(kw_only=True)
class GatewayRequest:
    """An OpenAI call as any front-end sees it: route, the two headers we read, raw body.

    `request_id` is the HTTP request id (a client's valid `X-Request-ID`, else made
    here): a label, sent on to the backend and kept in the log.  `log_id` is the gateway's
    own unique id for the request: the core's request id, the seed's `request_log_id` and
    the request log's record id (a client cannot choose it, so two requests never share it).
    """

    route: OpenAIRoute
    body: bytes
    content_type: str | None = None
    authorization: str | None = None
    cluster: str | None = None
    framework: str | None = None
    request_id: str = attrs.field(factory=new_id)
    log_id: str = attrs.field(factory=new_id)
    client: str | None = None  # the client's address, for the request log
    received_at: float = attrs.field(factory=time.time)  # wall clock, epoch seconds
    # Headers of the client's that its API defines and the backend reads
    # (`anthropic-version`), handed on as they came.
    passed_headers: tuple[tuple[str, str], ...] = ()


class _Moments:
    """One request's clock readings, taken by the driver as it carries out effects; and,
    only when capture is on (`capture_limit`), the first bytes of its prompt and answer."""

    __slots__ = (
        "_answer",
        "_called",
        "_cap",
        "_first_byte",
        "_prompt",
        "_request_id",
        "_start",
        "_upstream",
        "_wall",
    )

    def __init__(self, request: GatewayRequest, capture_limit: int | None = None) -> None:
        self._wall = request.received_at
        self._start = time.monotonic()
        self._first_byte: float | None = None
        self._called: float | None = None
        self._upstream: float | None = None
        self._request_id = request.request_id
        # Capture caps bytes at 4 per character (UTF-8's most); the sink caps characters.
        self._cap = None if capture_limit is None else 4 * max(0, capture_limit)
        self._prompt: bytes | None = None
        self._answer: bytearray | None = None
        if self._cap is not None:
            self._prompt = request.body[: self._cap]
            self._answer = bytearray()

    def relayed(self, data: bytes) -> None:
        """Bytes handed to the client: kept (up to the cap) only when capture is on."""
        if self._answer is not None and self._cap is not None:
            room = self._cap - len(self._answer)
            if room > 0:
                self._answer += data[:room]

    def _at(self, reading: float) -> float:
        return self._wall + (reading - self._start)

    def calling(self) -> None:
        self._called = time.monotonic()

    def answered(self) -> None:
        if self._called is not None and self._upstream is None:
            self._upstream = time.monotonic() - self._called

    def first_byte(self) -> None:
        if self._first_byte is None:
            self._first_byte = time.monotonic()

    def timing(self) -> Timing:
        return Timing(
            received_at=self._wall,
            done_at=self._at(time.monotonic()),
            first_byte_at=None if self._first_byte is None else self._at(self._first_byte),
            upstream_seconds=self._upstream,
            request_id=self._request_id,
            prompt=self._prompt,
            response=None if self._answer is None else bytes(self._answer),
        )


class ByteStream(Protocol):
    """A streamed body: iterate the chunks once, and always close (also when leaving early)."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


@attrs.frozen(kw_only=True)
class GatewayResponse:
    """A whole answer (`body`) or a streamed one (`stream`, iterated exactly once)."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    stream: ByteStream | None = attrs.field(default=None, eq=False)

    def json(self) -> Any:
        return json.loads(self.body)

    async def events(self) -> AsyncIterator[str]:
        """A stream's events, decoded: the `data` of each, `[DONE]` included."""
        if self.stream is None:
            raise ValueError("not a streamed response; read .body or .json()")
        decoder = SSEDecoder()
        try:
            async for chunk in self.stream:
                for data in decoder.feed(chunk):
                    yield data
            for data in decoder.finish():
                yield data
        finally:
            await self.stream.aclose()


def _failure(exc: BaseException) -> AdaptorFailed:
    """The one place adaptor exceptions become events: a transport error as its kind
    says (each time limit its own code, saturation 503), 504 for other time-outs, 502
    otherwise."""
    detail = redact(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, TransportError):
        failure = failure_of(exc)
        return AdaptorFailed(status=failure.status, code=failure.code, detail=detail)
    return AdaptorFailed(status=504 if isinstance(exc, TimeoutError) else 502, detail=detail)


def _as_text(result: Any) -> str | None:
    """Seed adaptors sometimes return the parsed JSON instead of text; accept both."""
    if result is None or isinstance(result, str):
        return result
    return json.dumps(result)


def _returned(answer: Any) -> AdaptorReturned | AdaptorFailed:
    """An adaptor's response model as the event the core reads.

    getattr: the guide's own example returns a *streaming* response model from
    submit_task on error, which has no `result`; seed adaptors must keep working.
    """
    body = answer.body() if isinstance(answer, SubmitTaskResponse) else None
    try:
        return AdaptorReturned(
            result=body if body is not None else _as_text(getattr(answer, "result", None)),
            error_message=getattr(answer, "error_message", None),
            error_code=getattr(answer, "error_code", None),
            headers=_pairs(getattr(answer, "headers", None)),
            task_id=_text_or_none(getattr(answer, "task_id", None)),
            failure_code=_text_or_none(getattr(answer, "failure_code", None)),
        )
    except (TypeError, ValueError) as exc:  # e.g. an error_code that is no HTTP status
        return AdaptorFailed(status=502, detail=redact(f"adaptor answer refused: {exc}"))


def _text_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def _task_data(adaptor: BaseEndpoint, call: CallAdaptor, request: GatewayRequest) -> dict[str, Any]:
    """The seed's task data for an adaptor call, `model_params` holding the client's bytes
    and `request_id` the HTTP request id (which the Direct API adaptor sends on, with the
    client's `passed_headers`)."""
    lazy = not adaptor.reads_model_params(call.stream)
    data: dict[str, Any] = {
        "model_params": ClientBody(call.body, lazy=lazy),
        "openai_endpoint": call.route.value,
        "request_id": request.request_id,
    }
    if request.passed_headers:
        data[PASSED_HEADERS] = dict(request.passed_headers)
    return data


# Effects that only record: carried out at once, never awaited on the request path.
_RECORDS = (WriteLog, Settle, Release, RememberResponse)


def _sinks_of(sink: LogSink) -> tuple[LogSink, ...]:
    """The sinks a sink hands records to: a fan-out's own, flattened (one loop and one
    try per record and sink, not a fan-out inside a fan-out)."""
    return sink.sinks if isinstance(sink, FanOut) else (sink,)


def _pairs(headers: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple((str(k), str(v)) for k, v in (headers or {}).items())


async def _as_bytes(chunks: AsyncIterable[bytes | str]) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        yield chunk.encode() if isinstance(chunk, str) else chunk


@attrs.frozen
class _Vouching:
    """The identity edge of `Gateway.acting_for`: every credential is this identity."""

    identity: Identity

    async def resolve(self, credentials: str) -> Identity | None:
        return self.identity


class Gateway:
    def __init__(
        self,
        *,
        catalog: Catalog,
        endpoints: Mapping[str, BaseEndpoint],
        clusters: Mapping[str, BaseCluster],
        identity: IdentityProvider,
        transport: Transport,
        log_sink: LogSink | None = None,
        quota: QuotaCounters | None = None,
        quota_policy: QuotaPolicy | None = None,
        stream_usage: bool = False,
        stream_observer: StreamObserver | None = None,
        capture_limit: int | None = None,
        request_limits: RequestLimits | None = None,
        health: HealthPolicy | None = None,
    ) -> None:
        """A driver over adaptors already built and bound (see `frontends.assembly`).

        With `quota` counters, requests reserve against the fixtures' token limits and the
        policy's request limit before their call; without, no limit applies.  With
        `stream_usage`, streams ask their backend for usage (see `RequestMachine`).  A
        `stream_observer` (the metrics) is told when each stream to a client opens and
        closes.  With a `capture_limit`, the log sink's `Timing` carries the first bytes
        of each prompt and answer (the sink caps them to that many characters); without,
        none are kept.  `request_limits`: how deep a request's JSON may nest and how many
        messages it may carry (the core's defaults without).  `health` sets the endpoints'
        breakers and how long cluster status is cached (`frontends.endpoint_health`)."""
        self.catalog = catalog
        self._endpoints = {slug.lower(): adaptor for slug, adaptor in endpoints.items()}
        self._clusters = dict(clusters)
        self._identity = identity
        self._transport = transport
        self._log_sink: LogSink = log_sink or LoggerSink()
        self._quota = quota
        self._quota_policy = (quota_policy or QuotaPolicy()) if quota is not None else None
        self._stream_usage = stream_usage
        self._stream_observer = stream_observer
        self._capture_limit = capture_limit
        self._request_limits = request_limits or RequestLimits()
        self.health = HealthBook(catalog, clusters, health)
        # What `serve` cuts at its drain deadline (see `frontends.drain`).
        self.drain = Drain()
        # Where stored Responses API answers were made, for follow-ups: in this process,
        # and in Redis too when `serve` puts a shared one here (`frontends.shared_responses`).
        self.responses = SharedResponses()

    def add_log_sink(self, sink: LogSink) -> None:
        """Hand every record to `sink` too (the web app's access log uses this)."""
        self._log_sink = FanOut(*_sinks_of(self._log_sink), sink)

    @property
    def clusters(self) -> Mapping[str, BaseCluster]:
        """The cluster adaptors, by cluster name."""
        return MappingProxyType(self._clusters)

    @property
    def identity(self) -> IdentityProvider:
        return self._identity

    def endpoint_adaptor(self, slug: str) -> BaseEndpoint | None:
        """The adaptor serving endpoint `slug` (a batch's), or None if none does now."""
        return self._endpoints.get(slug.lower())

    def acting_for(self, identity: Identity) -> Gateway:
        """This gateway, for requests made on behalf of a caller it already knows (a
        batch's owner): the same catalog, adaptors, transport, quotas and log, with an
        identity edge that vouches for `identity` alone.  Selection, authorization and
        quota admission still run for every request.  Not to be closed: it owns nothing.
        Its drain is its own and never cut: the batch runner has its own graceful stop
        for the lines it has in flight."""
        clone = copy.copy(self)
        clone._identity = _Vouching(identity)
        clone.drain = Drain()
        return clone

    @property
    def quota(self) -> QuotaCounters | None:
        """The quota counters, if quotas apply."""
        return self._quota

    @property
    def quota_policy(self) -> QuotaPolicy | None:
        """The quota policy, if quotas apply (each process's part of every limit)."""
        return self._quota_policy

    async def aclose(self) -> None:
        await self._transport.aclose()
        self.responses.close()
        self.health.close()
        for edge in (self._identity, self._quota):
            close = getattr(edge, "aclose", None)
            if close is not None:
                await close()

    # -- OpenAI operations --------------------------------------------------------------

    async def request(
        self,
        route: str,
        body: Mapping[str, Any] | bytes,
        *,
        headers: Mapping[str, str] | None = None,
        cluster: str | None = None,
        framework: str | None = None,
    ) -> GatewayResponse:
        """The embedding entry point: an OpenAI operation by name, a JSON body, headers.

        `route` is "chat/completions", "completions", "embeddings", "responses" or
        "messages" (a leading "/v1/" is accepted); `cluster` and `framework` select as
        the ALCF route does.
        """
        name = route.strip("/").removeprefix("v1/")
        operation = OpenAIRoute.from_path(name)
        if operation is None:
            known = ", ".join(r.value for r in OpenAIRoute)
            raise ValueError(f"unknown OpenAI operation {route!r}; known: {known}")
        lowered = {k.lower(): v for k, v in (headers or {}).items()}
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await self.handle(
            GatewayRequest(
                route=operation,
                body=raw,
                content_type=lowered.get("content-type", "application/json"),
                authorization=authorization_for(operation, lowered.get),
                cluster=cluster,
                framework=framework,
                passed_headers=passed_headers(operation, lowered.get),
            )
        )

    async def handle(self, request: GatewayRequest) -> GatewayResponse:
        """Run one OpenAI request through the core; a stream comes back not yet started."""
        machine = RequestMachine(
            self.catalog,
            self._quota_policy,
            stream_usage=self._stream_usage,
            limits=self._request_limits,
            balanced=True,
            responses=self.responses.directory,
            cleared=self.health.cleared,
        )
        moments = _Moments(request, self._capture_limit)
        pending = deque(
            machine.receive(
                RequestReceived(
                    request_id=request.log_id,
                    route=request.route,
                    body=request.body,
                    content_type=request.content_type,
                    authorization=request.authorization,
                    cluster=request.cluster,
                    framework=request.framework,
                    client=request.client,
                )
            )
        )
        upstream: StreamingResponse | None = None
        lease: Lease | None = None  # the open stream's call
        try:
            while pending:
                effect = pending.popleft()
                if isinstance(effect, _RECORDS):
                    self.record(effect, moments)
                    if isinstance(effect, RememberResponse):
                        await self._share(effect)
                elif isinstance(effect, Reserve):
                    pending.extend(machine.receive(await self._reserve(effect)))
                elif isinstance(effect, Respond):
                    moments.first_byte()
                    r = effect.response
                    moments.relayed(r.body)
                    self._carry_out_records(pending, moments)
                    for rest in pending:
                        if isinstance(rest, RememberResponse):
                            await self._share(rest)
                    return GatewayResponse(status=r.status, headers=r.headers, body=r.body)
                elif isinstance(effect, Authenticate):
                    verdict = await resolve_caller(self._identity, effect.credentials)
                    previous = previous_response_id(request.body)
                    if previous is not None:  # where the core will look for it
                        await self.responses.load(previous)
                    pending.extend(machine.receive(verdict))
                elif isinstance(effect, AssessHealth):
                    pending.extend(machine.receive(self.health.assess(effect)))
                elif isinstance(effect, CallAdaptor) and not effect.stream:
                    moments.calling()
                    with self.health.leased(effect.endpoint_slug) as call:
                        answer: Event = GatewayStopping()  # unless it comes before the cut
                        if call.refusal is not None:
                            answer = call.refusal
                        else:
                            with self.drain.cuttable():
                                answer = await self._submit(effect, request)
                        call.judge(answer)
                    moments.answered()
                    pending.extend(machine.receive(answer))
                elif isinstance(effect, CallAdaptor):
                    moments.calling()
                    lease = self.health.lease(effect.endpoint_slug)
                    event: Event = GatewayStopping()  # unless it comes before the cut
                    if lease.refusal is not None:
                        event = lease.refusal
                    else:
                        with self.drain.cuttable():
                            event, upstream = await self._open_stream(effect, request)
                    lease.judge(event)
                    if upstream is None:
                        lease.close()
                    moments.answered()
                    pending.extend(machine.receive(event))
                elif isinstance(effect, StartStream):
                    assert upstream is not None
                    relay = StreamRelay(self, machine, upstream, moments, lease)
                    return GatewayResponse(
                        status=effect.status, headers=effect.headers, stream=relay
                    )
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                if not machine.finished:
                    self._carry_out_records(machine.receive(ClientDisconnected()), moments)
                if lease is not None:
                    lease.close()
                if upstream is not None:
                    await upstream.aclose()
            raise
        raise LocalProtocolError(f"request machine stopped in {machine.state} without answering")

    def _carry_out_records(self, effects: Iterable[RequestEffect], moments: _Moments) -> None:
        for effect in effects:
            if isinstance(effect, _RECORDS):
                self.record(effect, moments)

    def record(
        self, effect: WriteLog | Settle | Release | RememberResponse, moments: _Moments
    ) -> None:
        """Carry out an effect that only records (a log line, a settlement, a stored
        response's endpoint): never awaited, never raises into the request."""
        if isinstance(effect, RememberResponse):
            self.responses.remember(effect.response_id, effect.username, effect.endpoint_slug)
        elif isinstance(effect, WriteLog):
            self._log_sink.write(effect.entry, moments.timing())
        elif self._quota is None:
            return
        elif isinstance(effect, Settle):
            self._quota.settle(effect.reservation_id, effect.keys, effect.used)
        else:
            self._quota.release(effect.reservation_id, effect.keys)

    async def _share(self, effect: RememberResponse) -> None:
        """A stored response's endpoint, written where every replica finds it, before
        the client has the answer (a no-op without Redis).  Only awaited for this effect:
        a coroutine per record effect (two or three a request) would cost for nothing."""
        await self.responses.share(effect.response_id, effect.username, effect.endpoint_slug)

    async def _reserve(self, effect: Reserve) -> Reserved | QuotaExceeded:
        assert self._quota is not None, "the machine reserves only when counters exist"
        try:
            refusal = await self._quota.reserve(effect.reservation_id, effect.reservations)
        except anyio.get_cancelled_exc_class():
            raise
        except Exception:
            # Counters that cannot count must not cost a user their request.
            log.warning("quota counters failed; admitting without a reservation", exc_info=True)
            return Reserved()
        return Reserved() if refusal is None else QuotaExceeded(refusal=refusal)

    def _adaptor(self, slug: str) -> BaseEndpoint:
        return self._endpoints[slug.lower()]

    def adaptor(self, slug: str) -> BaseEndpoint:
        """The endpoint adaptor of this slug (for routes beside the machine's)."""
        return self._adaptor(slug)

    async def _submit(
        self, call: CallAdaptor, request: GatewayRequest
    ) -> AdaptorReturned | AdaptorFailed:
        adaptor = self._adaptor(call.endpoint_slug)
        try:
            answer = await adaptor.submit_task(_task_data(adaptor, call, request))
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:
            log.warning("adaptor %s raised", call.endpoint_slug, exc_info=True)
            return _failure(exc)
        return _returned(answer)

    async def _open_stream(
        self, call: CallAdaptor, request: GatewayRequest
    ) -> tuple[Event, StreamingResponse | None]:
        adaptor = self._adaptor(call.endpoint_slug)
        data = _task_data(adaptor, call, request)
        try:
            answer = await adaptor.submit_streaming_task(data, request.log_id)
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:
            log.warning("adaptor %s raised", call.endpoint_slug, exc_info=True)
            return _failure(exc), None
        if answer.response is None or answer.error_message or answer.error_code:
            if answer.response is not None:
                await _close_quietly(answer.response)
            return _returned(answer), None
        upstream = answer.response
        if not isinstance(upstream, StreamingResponse):
            upstream = StreamingResponse(content=upstream)
        headers = _pairs(upstream.headers)
        if not 200 <= upstream.status_code < 300:
            body = await _read_capped(upstream)
            refused = AdaptorReturned(
                error_message=body, error_code=upstream.status_code, headers=headers
            )
            return refused, None
        return StreamOpened(headers=headers, task_id=_text_or_none(answer.task_id)), upstream


# What a wait for the next chunk that the drain cut short feeds the machine: an event has
# no fields to differ in, so one serves every chunk (made anew, it cost each chunk).
_STOPPING = GatewayStopping()


class StreamObserver(Protocol):
    """Told when a stream to a client opens and when it closes (once each); never blocks
    or raises (the metrics' open-streams gauge is one)."""

    def stream_opened(self) -> None: ...

    def stream_closed(self) -> None: ...


class StreamRelay:
    """The client's side of a stream: each backend chunk goes through the machine and out.

    An object rather than a generator so that `aclose()` closes the backend stream even
    when the client left before the first chunk was asked for.  It is open from its
    making to its `aclose()`, which the gateway's stream observer is told.
    """

    __slots__ = (
        "_chunks",
        "_closed",
        "_gateway",
        "_lease",
        "_machine",
        "_moments",
        "_observer",
        "_out",
        "_upstream",
    )

    def __init__(
        self,
        gateway: Gateway,
        machine: RequestMachine,
        upstream: StreamingResponse,
        moments: _Moments,
        lease: Lease | None = None,
    ) -> None:
        self._gateway = gateway
        self._lease = lease  # the endpoint's count of this call, given back at close
        self._machine = machine
        self._upstream = upstream
        self._moments = moments
        # The adaptor's iterator itself, not a generator around it: one frame less to
        # keep per open stream and one less to step through per chunk.
        self._chunks = aiter(upstream.content)
        # Chunks ready for the client: rarely more than one, so a list (56 bytes empty),
        # not a deque (760 bytes even empty, kept for the stream's whole life).
        self._out: list[bytes] = []
        self._closed = False
        self._observer = gateway._stream_observer
        if self._observer is not None:
            self._observer.stream_opened()

    def __aiter__(self) -> StreamRelay:
        return self

    async def __anext__(self) -> bytes:
        while not self._out:
            if self._machine.finished:
                await self.aclose()
                raise StopAsyncIteration
            event: Event = _STOPPING  # unless a chunk comes before the drain's cut
            try:
                with self._gateway.drain.cuttable():
                    chunk = await anext(self._chunks)
                    event = ChunkReceived(data=chunk.encode() if isinstance(chunk, str) else chunk)
            except StopAsyncIteration:
                event = StreamEnded()
            except anyio.get_cancelled_exc_class():
                await self.aclose()
                raise
            except Exception as exc:
                event = _failure(exc)
            for effect in self._machine.receive(event):
                if isinstance(effect, RelayChunk):
                    self._out.append(effect.data)
                    self._moments.relayed(effect.data)
                elif isinstance(effect, _RECORDS):
                    self._gateway.record(effect, self._moments)
                    if isinstance(effect, RememberResponse):
                        await self._gateway._share(effect)
        self._moments.first_byte()
        return self._out.pop(0)

    async def aclose(self) -> None:
        """Stop relaying; if the stream had not finished, the client left: say so and
        cancel the backend call."""
        if self._closed:
            return
        self._closed = True
        if self._observer is not None:
            self._observer.stream_closed()
        if self._lease is not None:
            self._lease.close()
        # The running loop's scope class, made directly: `anyio.CancelScope(shield=True)`
        # looks the backend up first, a third of the shield's cost, once per stream.
        shield = new_scope()
        shield.shield = True
        with shield:
            if not self._machine.finished:
                for effect in self._machine.receive(ClientDisconnected()):
                    if isinstance(effect, _RECORDS):
                        self._gateway.record(effect, self._moments)
            await _close_quietly(self._upstream)


async def _close_quietly(upstream: Any) -> None:
    close = getattr(upstream, "aclose", None)
    if close is None:
        return
    try:
        await close()
    except Exception:
        log.debug("closing a backend stream failed", exc_info=True)


async def _read_capped(upstream: StreamingResponse, limit: int = 1 << 20) -> str:
    """The body of a streaming answer that turned out to be an error, then close it."""
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in _as_bytes(upstream.content):
            parts.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
    finally:
        await _close_quietly(upstream)
    return b"".join(parts).decode("utf-8", "replace")
