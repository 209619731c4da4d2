"""The request machine: one OpenAI request, from arrival to its one terminal state.

Theory of operation
-------------------
The driver (a front-end) feeds events in with `receive()` and carries out the effects
that come back; the machine never awaits and never touches IO.  It stands on the kernel
(`core/_machine.py`): the table below is the whole of its behaviour, one cell per
(state, event type), naming the handler and the states it may lead to.

Validation, selection and authorization all happen on IdentityResolved, in that order,
so a `CallAdaptor` effect exists only after the identity passed both levels of rules.
When quotas apply, the machine first asks the counters to reserve (ADMITTING): the call
is made only once they answer Reserved; QuotaExceeded ends the request with a 429.
A `balanced` machine (the driver keeps endpoint health) first asks how the endpoints that
may serve the request are doing (CHOOSING, see `core/_balance.py`) and picks one; a call
that failed before any byte reached the client goes back to CHOOSING, once, to try
another endpoint.
Every request that reserved ends with one Settle (the tokens really used) or, if it never
reached its call, one Release.
The client's body travels as bytes: the adaptor is handed exactly what the client sent
(with the fixture's spelling of the model, if the client's differed or was an alias).
Every path into DONE or CANCELLED emits exactly one WriteLog.  An event a state does
not accept, or a handler that fails, poisons the machine (state ERROR): every later
call raises too.

A stream is relayed event by event, each as soon as it is whole, byte for byte.  Streams
stay honest: an event that is not JSON ends the stream (STREAMING -> DONE on a chunk)
with an OpenAI error event in its place and no `[DONE]` after it, since the answer is
incomplete; a whole answer that is not the route's shape is a 502 (`core._answers`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any

from core._balance import AssessHealth, HealthAssessed, choose, is_retriable, permitted_candidates
from core._caller import caller, credentials, identity_unavailable
from core._catalog import Catalog
from core._dialects import in_dialect, stream_error_event, stream_rules
from core._errors import BackendError, ClientError, GatewayError, error_body, log_detail
from core._events import (
    AdaptorFailed,
    AdaptorReturned,
    Authenticate,
    CallAdaptor,
    CancelUpstream,
    ChunkReceived,
    ClientDisconnected,
    Effect,
    EndStream,
    GatewayStopping,
    IdentityResolved,
    IdentityUnavailable,
    LogEntry,
    QuotaExceeded,
    RelayChunk,
    Release,
    RememberResponse,
    RequestReceived,
    Reserve,
    Reserved,
    Respond,
    Settle,
    StartStream,
    StreamEnded,
    StreamOpened,
    WriteLog,
)
from core._limits import DEFAULT_LIMITS, RequestLimits
from core._machine import Cell, Kernel, MachineState
from core._quota import QuotaPolicy, Reservation, estimate_prompt_tokens, plan, quota_refusal
from core._records import EndpointRecord, Identity, OpenAIRoute, Usage
from core._responses import ResponseDirectory, follow_up_endpoint, response_not_found
from core._selection import select_endpoint
from core._shaping import (
    Shaped,
    error_response,
    json_object,
    shape_failure,
    shape_result,
    stream_headers,
)
from core._sse import SSEFramer, SSEMonitor, is_usage_only
from core._validation import ValidRequest, validate_request

__all__ = ["TABLE", "TERMINAL", "RequestEffect", "RequestMachine", "State"]


class State(MachineState):
    AWAITING_REQUEST = "awaiting_request"
    AUTHENTICATING = "authenticating"
    CHOOSING = "choosing"
    ADMITTING = "admitting"
    AWAITING_RESULT = "awaiting_result"
    AWAITING_STREAM = "awaiting_stream"
    STREAMING = "streaming"
    DONE = "done"
    CANCELLED = "cancelled"
    ERROR = "error"


S = State
# (state, event type) -> Cell(handler, states it may lead to).  No cell: not accepted.
TABLE: Mapping[tuple[State, type[Any]], Cell[State]] = {
    (S.AWAITING_REQUEST, RequestReceived): Cell("_on_request", S.AUTHENTICATING, S.DONE),
    (S.AUTHENTICATING, IdentityResolved): Cell(
        "_on_identity", S.CHOOSING, S.ADMITTING, S.AWAITING_RESULT, S.AWAITING_STREAM, S.DONE
    ),
    (S.AUTHENTICATING, IdentityUnavailable): Cell("_on_identity_unavailable", S.DONE),
    (S.AUTHENTICATING, ClientDisconnected): Cell("_on_disconnect_before_call", S.CANCELLED),
    (S.CHOOSING, HealthAssessed): Cell(
        "_on_health", S.ADMITTING, S.AWAITING_RESULT, S.AWAITING_STREAM, S.DONE
    ),
    (S.CHOOSING, ClientDisconnected): Cell("_on_disconnect_before_call", S.CANCELLED),
    (S.ADMITTING, Reserved): Cell("_on_reserved", S.AWAITING_RESULT, S.AWAITING_STREAM),
    (S.ADMITTING, QuotaExceeded): Cell("_on_quota_exceeded", S.DONE),
    (S.ADMITTING, ClientDisconnected): Cell("_on_disconnect_before_call", S.CANCELLED),
    (S.AWAITING_RESULT, AdaptorReturned): Cell("_on_result", S.DONE, S.CHOOSING),
    (S.AWAITING_RESULT, AdaptorFailed): Cell("_on_failed", S.DONE, S.CHOOSING),
    (S.AWAITING_RESULT, ClientDisconnected): Cell("_on_disconnect", S.CANCELLED),
    (S.AWAITING_STREAM, StreamOpened): Cell("_on_stream_opened", S.STREAMING),
    (S.AWAITING_STREAM, AdaptorReturned): Cell("_on_stream_refused", S.DONE, S.CHOOSING),
    (S.AWAITING_STREAM, AdaptorFailed): Cell("_on_failed", S.DONE, S.CHOOSING),
    (S.AWAITING_STREAM, ClientDisconnected): Cell("_on_disconnect", S.CANCELLED),
    (S.STREAMING, ChunkReceived): Cell("_on_chunk", S.STREAMING, S.DONE),
    (S.STREAMING, StreamEnded): Cell("_on_stream_ended", S.DONE),
    (S.STREAMING, AdaptorFailed): Cell("_on_failed_mid_stream", S.DONE),
    (S.STREAMING, ClientDisconnected): Cell("_on_disconnect", S.CANCELLED),
    # Graceful drain: the deadline passed while the backend still had the request.
    (S.AWAITING_RESULT, GatewayStopping): Cell("_on_stopping", S.DONE),
    (S.AWAITING_STREAM, GatewayStopping): Cell("_on_stopping", S.DONE),
    (S.STREAMING, GatewayStopping): Cell("_on_stopping_mid_stream", S.DONE),
}
TERMINAL = frozenset({S.DONE, S.CANCELLED})

_STREAM_USAGE_ROUTES = frozenset({OpenAIRoute.CHAT_COMPLETIONS, OpenAIRoute.COMPLETIONS})


# What a body without `stream_options` gets written in after its opening brace (a chat or
# completions stream's body always holds `stream`, so a member follows the comma).
_ASK_USAGE = b'"stream_options":{"include_usage":true},'


def _usage_asked(body: bytes) -> bytes:
    """`body` (a JSON object with no `stream_options`) with usage asked for.  Written in,
    not re-encoded: the client's bytes go on as they came, and a long prompt is not
    encoded again for one small member (a JSON object's first `{` is its own: only
    whitespace, or a byte-order mark, may come before it)."""
    at = body.index(b"{") + 1
    return body[:at] + _ASK_USAGE + body[at:]


def _usage_options(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The `stream_options` to send so the backend reports usage, or None when the client
    asked for it already (or sent something the gateway should not touch)."""
    options = body.get("stream_options")
    if options is None:
        return {"include_usage": True}
    if isinstance(options, dict) and options.get("include_usage") is not True:
        return {**options, "include_usage": True}
    return None


# 499: nginx's "client closed request", the usual way to log a request nobody waited for.
_CLIENT_CLOSED = 499


def _shutting_down() -> GatewayError:
    """Neither the client's fault nor the backend's: the gateway is going away."""
    return GatewayError(
        "The gateway is shutting down and ended this request before it finished; send it again.",
        status=503,
        code="gateway_shutting_down",
        headers=(("Retry-After", "1"),),
    )


# What the machine may ask of its driver: the shared effects, and health for choosing.
RequestEffect = Effect | AssessHealth
Outcome = tuple[State, tuple[RequestEffect, ...]]


class RequestMachine(Kernel[State, RequestEffect]):
    TABLE = TABLE
    INITIAL = S.AWAITING_REQUEST
    ERROR = S.ERROR
    TERMINAL = TERMINAL

    # A stream's monitor (with the route's rules) and framer, made when a streaming call
    # is planned (`_call_for`): a whole answer never reads them, so a request that is
    # not a stream never makes them.  Only the states after that plan touch them.
    _monitor: SSEMonitor
    _framer: SSEFramer

    def __init__(
        self,
        catalog: Catalog,
        quota: QuotaPolicy | None = None,
        *,
        stream_usage: bool = False,
        limits: RequestLimits = DEFAULT_LIMITS,
        balanced: bool = False,
        responses: ResponseDirectory | None = None,
        cleared: AbstractSet[str] = frozenset(),
    ) -> None:
        """`quota` None: no limits at all (the driver has no counters to reserve on).
        `limits`: what a request's JSON may be (depth, messages; see `core._limits`).

        `responses`: where stored Responses API answers were made, read to send a
        `previous_response_id` back to that endpoint (None: no follow-up can be found).

        `stream_usage`: ask backends for usage at the end of every chat or completions
        stream (`stream_options.include_usage`), so streams are counted, not estimated;
        the usage event is then left out of what the client receives unless it asked.

        `balanced`: the driver answers `AssessHealth` (it keeps endpoint health), so the
        machine chooses among every endpoint that may serve a request and retries a call
        that failed before any byte reached the client once elsewhere (`core._balance`).
        `cleared`: the slugs the driver vouches for now (its breaker closed, its model not
        reported stopped or queued), a set it keeps up to date and the machine reads when
        it chooses; a lone candidate in it is chosen without `AssessHealth`, since
        `choose` could choose nothing else.  Most requests have one candidate, and the
        round trip cost each of them an effect, an event and an assessment.
        """
        super().__init__()
        self._balanced = balanced
        self._cleared = cleared
        self._candidates: tuple[EndpointRecord, ...] = ()
        self._valid: ValidRequest | None = None
        self._retried = False
        self._failover: str | None = None  # for the log: which endpoint failed first
        self._give_up: Callable[[], Outcome] | None = None  # while CHOOSING for a retry
        # While ADMITTING a retry: what a refusal of its reservations leads to.
        self._refused_retry: Callable[[], Outcome] | None = None
        self._catalog = catalog
        self._quota = quota
        self._stream_usage = stream_usage
        self._limits = limits
        self._responses = responses
        self._strip_usage = False  # leave the usage event the client did not ask for out
        # A whole Responses answer's id, to remember (a stream's is its monitor's).
        self._response_id: str | None = None
        self._reservations: tuple[Reservation, ...] = ()
        self._reserved = False  # the counters hold this request's reservations
        self._call: CallAdaptor | None = None
        self._called = False
        self._sent: Mapping[str, Any] = {}  # the validated body, for estimates if needed
        # Kept once a stream starts and the body is let go (`_forget_the_body`).
        self._bytes_in: int | None = None
        self._prompt_estimate: int | None = None
        self._task_id: str | None = None
        self._bytes_out = 0
        self._request: RequestReceived | None = None
        self._identity: Identity | None = None
        self._endpoint: EndpointRecord | None = None
        self._stream = False  # set when the adaptor is called for a stream

    @property
    def endpoint(self) -> EndpointRecord | None:
        """The endpoint selected for this request, once there is one."""
        return self._endpoint

    @property
    def identity(self) -> Identity | None:
        return self._identity

    # -- handlers, one per cell of TABLE -----------------------------------------------

    def _on_request(self, event: RequestReceived) -> Outcome:
        self._request = event
        token = credentials(event.authorization)
        if isinstance(token, ClientError):
            return self._finish_with_error(token)
        return S.AUTHENTICATING, (Authenticate(credentials=token),)

    def _on_identity(self, event: IdentityResolved) -> Outcome:
        request = self._current_request()
        identity = caller(event)
        if isinstance(identity, GatewayError):
            return self._finish_with_error(identity)
        self._identity = identity
        valid = validate_request(request.route, request.content_type, request.body, self._limits)
        if isinstance(valid, ClientError):
            return self._finish_with_error(valid)
        endpoint = select_endpoint(
            self._catalog,
            identity,
            valid,
            cluster=request.cluster,
            framework=request.framework,
        )
        previous = valid.body.get("previous_response_id")
        if isinstance(previous, str) and not isinstance(endpoint, ClientError):
            endpoint = self._follow_up(identity, valid, endpoint, previous)
        if isinstance(endpoint, ClientError):
            return self._finish_with_error(endpoint)
        self._valid = valid
        if self._balanced:
            # A follow-up of a stored response has one place to go: where that one is.
            pinned = request.cluster is not None or isinstance(previous, str)
            self._candidates = permitted_candidates(
                self._catalog, identity, endpoint, request.route, pinned=pinned
            )
            candidates = self._candidates
            if len(candidates) == 1 and candidates[0].endpoint_slug in self._cleared:
                return self._prepare(candidates[0])
            slugs = tuple(e.endpoint_slug for e in self._candidates)
            return S.CHOOSING, (AssessHealth(slugs=slugs),)
        return self._prepare(endpoint)

    def _prepare(self, endpoint: EndpointRecord) -> Outcome:
        """The endpoint is chosen: plan the quota reservations, then the call."""
        request, valid, identity = self._current_request(), self._current_valid(), self._identity
        assert identity is not None, "an endpoint is chosen only for a known caller"
        call = self._call_for(endpoint)
        if self._quota is not None:
            embeddings = request.route is OpenAIRoute.EMBEDDINGS
            # The body sent is this one (`_call_for`), so its estimate serves a stream's
            # usage later too (`_forget_the_body`) and is worked out once.
            self._prompt_estimate = estimate_prompt_tokens(valid.body)
            self._reservations = plan(
                endpoint,
                identity,
                valid.body,
                self._quota,
                embeddings=embeddings,
                prompt_tokens=self._prompt_estimate,
            )
        if self._reservations:
            self._call = call
            reserve = Reserve(reservation_id=request.request_id, reservations=self._reservations)
            return S.ADMITTING, (reserve,)
        return self._calling(call)

    def _call_for(self, endpoint: EndpointRecord) -> CallAdaptor:
        """The call to `endpoint`: the client's bytes, changed only where they must be."""
        request, valid = self._current_request(), self._current_valid()
        self._endpoint = endpoint
        self._stream = valid.stream
        if valid.stream:
            self._monitor = SSEMonitor(rules=stream_rules(request.route))
            self._framer = SSEFramer()
        self._sent = valid.body
        body = request.body
        changes: dict[str, Any] = {}
        # Matched case-insensitively or by an alias: the backend gets the real name (and
        # the body is re-encoded); a client naming the real model is sent on untouched.
        if valid.model != endpoint.model:
            changes["model"] = endpoint.model
        options = _usage_options(valid.body) if self._asks_usage(valid) else None
        added = options is not None and "stream_options" not in valid.body
        if options is not None:
            self._strip_usage = True
            if not added:
                changes["stream_options"] = options
        if changes:
            # ASCII escapes, so text the client escaped (lone surrogates too) stays valid.
            body = json.dumps({**valid.body, **changes}).encode()
        if added:
            body = _usage_asked(body)
        return CallAdaptor(
            endpoint_slug=endpoint.endpoint_slug,
            route=request.route,
            request_id=request.request_id,
            stream=valid.stream,
            body=body,
        )

    def _on_health(self, event: HealthAssessed) -> Outcome:
        """Choose among the candidates by their health: first, or for the one retry."""
        give_up = self._give_up
        if give_up is None:
            chosen = choose(self._candidates, event)
            if isinstance(chosen, BackendError):
                self._endpoint = self._candidates[0]  # the log names the model refused
                return self._finish_with_error(chosen)
            return self._prepare(chosen)
        self._give_up = None
        again = choose(self._untried(), event)
        if isinstance(again, BackendError):
            return give_up()  # nowhere healthy to go: the first failure stands
        return self._readmit(again, give_up)

    def _readmit(self, again: EndpointRecord, give_up: Callable[[], Outcome]) -> Outcome:
        """The retry's call, counted against the endpoint that will serve it: what the
        failed endpoint held is given back (it spent nothing: the failure was one that
        says it could not serve) and the retry reserves on its own limits.  If those do
        not fit, the retry does not go and the first failure stands, as when nothing
        healthy is left: a 429 would blame the caller for the backend's failure."""
        first = self._current_endpoint()
        held = self._reservations if self._reserved else ()
        self._reserved = False
        if self._quota is not None:
            embeddings = self._current_request().route is OpenAIRoute.EMBEDDINGS
            identity = self._identity
            assert identity is not None, "a retry follows a call made for a known caller"
            self._reservations = plan(
                again,
                identity,
                self._current_valid().body,
                self._quota,
                embeddings=embeddings,
                prompt_tokens=self._prompt_estimate,
            )
        call = self._call_for(again)
        request_id = self._current_request().request_id
        given_back: tuple[Effect, ...] = ()
        if held:
            given_back = (Release(reservation_id=request_id, keys=tuple(r.key for r in held)),)
        if not self._reservations:
            state, effects = self._calling(call)
            return state, (*given_back, *effects)
        self._call = call

        def first_failure_stands() -> Outcome:
            self._endpoint = first
            self._reservations = ()
            return give_up()

        self._refused_retry = first_failure_stands
        reserve = Reserve(reservation_id=request_id, reservations=self._reservations)
        return S.ADMITTING, (*given_back, reserve)

    def _untried(self) -> tuple[EndpointRecord, ...]:
        tried = self._current_endpoint().endpoint_slug
        return tuple(e for e in self._candidates if e.endpoint_slug != tried)

    def _retry_or(
        self, event: AdaptorFailed | AdaptorReturned, give_up: Callable[[], Outcome]
    ) -> Outcome:
        """Nothing reached the client yet: a failure that says the backend could not serve
        goes back to CHOOSING, once, if another candidate is left; else `give_up`."""
        if not self._balanced or self._retried or not is_retriable(event):
            return give_up()
        left = self._untried()
        if not left:
            return give_up()
        self._retried = True
        self._give_up = give_up
        status = event.status if isinstance(event, AdaptorFailed) else event.error_code
        self._failover = (
            f"retried elsewhere after {self._current_endpoint().endpoint_slug} failed ({status})"
        )
        return S.CHOOSING, (AssessHealth(slugs=tuple(e.endpoint_slug for e in left)),)

    def _follow_up(
        self, identity: Identity, valid: ValidRequest, selected: EndpointRecord, previous: str
    ) -> EndpointRecord | ClientError:
        """A Responses request continuing a stored response goes where that one was made."""
        slug = None
        if self._responses is not None:
            slug = self._responses.endpoint_for(previous, identity.username)
        if slug is None:
            return response_not_found(previous, param="previous_response_id")
        addressed = self._current_request().cluster is not None
        return follow_up_endpoint(
            self._catalog, identity, valid, selected, slug, addressed=addressed
        )

    def _asks_usage(self, valid: ValidRequest) -> bool:
        return self._stream_usage and valid.stream and valid.route in _STREAM_USAGE_ROUTES

    def _calling(self, call: CallAdaptor) -> Outcome:
        self._called = True
        return (S.AWAITING_STREAM if call.stream else S.AWAITING_RESULT), (call,)

    def _on_reserved(self, event: Reserved) -> Outcome:
        assert self._call is not None, "ADMITTING is entered only with a call to make"
        self._reserved = True
        return self._calling(self._call)

    def _on_quota_exceeded(self, event: QuotaExceeded) -> Outcome:
        if self._refused_retry is not None:
            return self._refused_retry()
        error = quota_refusal(event.refusal, self._reservations, self._current_endpoint().model)
        # The log says which limit refused (for the operator and the rejection metrics).
        shaped = Shaped(response=error_response(error), detail=event.refusal.limit.value)
        return self._finish(shaped, error_code=error.code)

    def _on_identity_unavailable(self, event: IdentityUnavailable) -> Outcome:
        error = identity_unavailable()
        shaped = Shaped(response=error_response(error), detail=event.detail)
        return self._finish(shaped, error_code=error.code)

    def _on_result(self, event: AdaptorReturned) -> Outcome:
        self._task_id = event.task_id
        return self._retry_or(event, lambda: self._finish(self._shape(event)))

    def _on_stream_refused(self, event: AdaptorReturned) -> Outcome:
        """A streaming call that returned instead of opening a stream: an error, always."""
        refused = event
        if event.error_code is None and event.error_message is None:
            refused = AdaptorReturned(
                error_message="the streaming adaptor returned neither a stream nor an error",
                error_code=502,
            )
        return self._retry_or(event, lambda: self._finish(self._shape(refused)))

    def _on_failed(self, event: AdaptorFailed) -> Outcome:
        endpoint = self._current_endpoint()
        return self._retry_or(
            event,
            lambda: self._finish(shape_failure(endpoint, event.status, event.detail, event.code)),
        )

    def _on_failed_mid_stream(self, event: AdaptorFailed) -> Outcome:
        """The stream broke after it started: end it with an error event, never cleanly."""
        shaped = shape_failure(self._current_endpoint(), event.status, event.detail, event.code)
        rest = self._unended_rest()
        event_bytes = rest + stream_error_event(
            self._current_request().route,
            shaped.response.body,
            shaped.response.status,
            after_partial=bool(rest),
        )
        self._bytes_out += len(event_bytes)
        effects = (RelayChunk(data=event_bytes), EndStream())
        ending = self._ending(
            shaped.response.status, error_code=shaped.error_code, detail=shaped.detail
        )
        return S.DONE, (*effects, *ending)

    def _on_stream_opened(self, event: StreamOpened) -> Outcome:
        self._task_id = event.task_id
        self._forget_the_body()
        return S.STREAMING, (StartStream(status=200, headers=stream_headers(event.headers)),)

    def _forget_the_body(self) -> None:
        """A stream that started is never retried, so the client's body (its bytes, its
        parsed form, the call's copy) is no longer needed: only its size and its prompt's
        estimate are kept.  A stream may stay open for minutes and a coding agent's prompt
        runs to hundreds of kilobytes; thousands of open streams must not hold them all."""
        request = self._current_request()
        self._bytes_in = len(request.body)
        if self._prompt_estimate is None:
            self._prompt_estimate = estimate_prompt_tokens(self._sent)
        # Made field by field rather than by `attrs.evolve`, which looks every field up
        # first (a third of the cost; a test holds this to every field there is).
        self._request = RequestReceived(
            request_id=request.request_id,
            route=request.route,
            body=b"",
            content_type=request.content_type,
            authorization=request.authorization,
            cluster=request.cluster,
            framework=request.framework,
            client=request.client,
        )
        self._sent = {}
        self._valid = None  # read only to plan a call, and a stream's is never made again
        self._call = None

    def _on_chunk(self, event: ChunkReceived) -> Outcome:
        """Whole events go out as they were sent (but the usage event the client did not
        ask for); a part of an event waits for the rest of it."""
        relay: list[bytes] = []
        for whole in self._framer.feed(event.data):
            self._monitor.feed(whole)
            if self._monitor.invalid is not None:
                return self._end_dishonest(relay, self._monitor.invalid)
            if not (self._strip_usage and self._monitor.usage_only):
                relay.append(whole)
        if self._framer.oversized:
            return self._end_dishonest(relay, "an event grew past 1 MiB without ending")
        data = b"".join(relay)
        if not data:
            return S.STREAMING, ()
        self._bytes_out += len(data)
        return S.STREAMING, (RelayChunk(data=data),)

    def _end_dishonest(self, relay: list[bytes], problem: str) -> Outcome:
        """An event no client could parse: the whole events before it go out, then an
        error event (in the route's dialect) in its place ends the stream; no `[DONE]`
        follows it."""
        self._framer.flush()  # whatever follows the bad event is not relayed either
        error = BackendError(
            f"The backend serving model '{self._current_endpoint().model}' sent a stream "
            "event that is not valid JSON; the stream was ended there.",
            code="backend_invalid_response",
        )
        data = b"".join(relay) + stream_error_event(
            self._current_request().route, error_body(error), error.status
        )
        self._bytes_out += len(data)
        ending = self._ending(error.status, error_code=error.code, detail=problem)
        return S.DONE, (RelayChunk(data=data), EndStream(), *ending)

    def _unended_rest(self) -> bytes:
        """The last event, begun and never ended by a blank line: relayed when it reads as
        an event (`data: [DONE]` without its blank line), dropped when it is a fragment no
        client could parse (a stream cut mid-event: the error event says so instead)."""
        rest = self._framer.flush()
        if rest:
            self._monitor.feed(rest)
        self._monitor.finish()
        if self._monitor.invalid is not None:
            return b""
        if self._strip_usage and rest and is_usage_only(rest):
            return b""
        return rest

    def _on_stream_ended(self, event: StreamEnded) -> Outcome:
        rest = self._unended_rest()
        partial = bool(rest)
        relayed = (RelayChunk(data=rest),) if rest else ()
        self._bytes_out += len(rest)
        if self._monitor.done or self._monitor.errored:
            ending = self._ending(200, usage=self._monitor.usage)
            return S.DONE, (*relayed, EndStream(), *ending)
        error = BackendError(
            f"The backend serving model '{self._current_endpoint().model}' ended its stream "
            "before it was complete.",
            code="incomplete_stream",
        )
        event_bytes = stream_error_event(
            self._current_request().route, error_body(error), error.status, after_partial=partial
        )
        self._bytes_out += len(event_bytes)
        return S.DONE, (
            *relayed,
            RelayChunk(data=event_bytes),
            EndStream(),
            *self._ending(
                error.status, error_code=error.code, detail="stream ended without [DONE]"
            ),
        )

    def _on_stopping(self, event: GatewayStopping) -> Outcome:
        """The drain deadline came before the backend answered or opened its stream: the
        client received nothing of it, so, as after a backend's failure, nothing counts."""
        error = _shutting_down()
        shaped = Shaped(response=error_response(error), detail="drain deadline passed")
        return self._finish(shaped, error_code=error.code)

    def _on_stopping_mid_stream(self, event: GatewayStopping) -> Outcome:
        """The drain deadline came mid-stream: an error event ends it (never a clean end);
        what was relayed counts as used, as when a client leaves."""
        error = _shutting_down()
        rest = self._unended_rest()
        event_bytes = rest + stream_error_event(
            self._current_request().route, error_body(error), error.status, after_partial=bool(rest)
        )
        self._bytes_out += len(event_bytes)
        ending = self._ending(
            error.status,
            usage=self._monitor.usage,
            error_code=error.code,
            detail="drain deadline passed",
            spent=True,
        )
        return S.DONE, (RelayChunk(data=event_bytes), EndStream(), *ending)

    def _on_disconnect_before_call(self, event: ClientDisconnected) -> Outcome:
        """The client left before the adaptor was called: nothing to cancel, and any
        reservation the counters may already hold is given back."""
        log = self._log(_CLIENT_CLOSED, cancelled=True)
        if not self._reservations:
            return S.CANCELLED, (log,)
        keys = tuple(r.key for r in self._reservations)
        return S.CANCELLED, (
            Release(reservation_id=self._current_request().request_id, keys=keys),
            log,
        )

    def _on_disconnect(self, event: ClientDisconnected) -> Outcome:
        return S.CANCELLED, (CancelUpstream(), *self._ending(_CLIENT_CLOSED, cancelled=True))

    # -- helpers ----------------------------------------------------------------------

    def _current_request(self) -> RequestReceived:
        assert self._request is not None, "transition table admits no event before the request"
        return self._request

    def _current_valid(self) -> ValidRequest:
        assert self._valid is not None, "a call is planned only for a validated request"
        return self._valid

    def _current_endpoint(self) -> EndpointRecord:
        assert self._endpoint is not None, "adaptor events come only after selection"
        return self._endpoint

    def _shape(self, event: AdaptorReturned) -> Shaped:
        return shape_result(
            self._current_endpoint(),
            result=event.result,
            error_message=event.error_message,
            error_code=event.error_code,
            headers=event.headers,
            route=self._current_request().route,
            failure_code=event.failure_code,
        )

    def _finish_with_error(self, error: GatewayError) -> Outcome:
        return self._finish(Shaped(response=error_response(error)), error_code=error.code)

    def _finish(self, shaped: Shaped, *, error_code: str | None = None) -> Outcome:
        # The one place the machine's answers take the route's own error dialect.
        response = in_dialect(self._current_request().route, shaped.response)
        status = response.status
        self._bytes_out += len(response.body)
        if status == 200 and self._current_request().route is OpenAIRoute.RESPONSES:
            payload = json_object(response.body)
            ident = None if payload is None else payload.get("id")
            self._response_id = ident if isinstance(ident, str) and ident else None
        ending = self._ending(
            status,
            usage=shaped.usage,
            error_code=shaped.error_code if error_code is None else error_code,
            detail=shaped.detail,
        )
        return S.DONE, (Respond(response=response), *ending)

    def _ending(
        self,
        status: int,
        *,
        usage: Usage | None = None,
        error_code: str | None = None,
        detail: str | None = None,
        cancelled: bool = False,
        spent: bool = False,
    ) -> tuple[Effect, ...]:
        """The effects every end after the call shares: settle what was reserved with the
        tokens used (reported, else estimated), and the one log line."""
        estimated = False
        # Tokens were spent when the backend answered, or streamed to a client who left
        # (or whom the gateway's drain cut off: `spent`); a refusal or failure spent none.
        spent = self._called and (status == 200 or cancelled or spent)
        if spent and (usage is None or usage.total_tokens is None):
            usage, estimated = self._estimate(usage), True
        log = self._log(
            status,
            usage=usage,
            estimated=estimated,
            error_code=error_code,
            detail=detail,
            cancelled=cancelled,
        )
        remembered = self._remembered(status)
        if not self._reserved:
            return (*remembered, log)
        used = usage.total_tokens if usage is not None and usage.total_tokens is not None else 0
        keys = tuple(r.key for r in self._reservations if r.limit.counts_tokens)
        if not keys:
            return (*remembered, log)
        settle = Settle(reservation_id=self._current_request().request_id, keys=keys, used=used)
        return (*remembered, settle, log)

    def _remembered(self, status: int) -> tuple[Effect, ...]:
        """A stored Responses answer's id, to be noted with its endpoint and user."""
        ident = self._monitor.response_id if self._stream else self._response_id
        identity, endpoint = self._identity, self._endpoint
        if status != 200 or ident is None or identity is None or endpoint is None:
            return ()
        return (
            RememberResponse(
                response_id=ident,
                username=identity.username,
                endpoint_slug=endpoint.endpoint_slug,
            ),
        )

    def _estimate(self, reported: Usage | None) -> Usage:
        """Counts the backend did not give: the prompt from its text (one token per four
        characters); the completion from what was relayed (a stream sends about one token
        per event; a whole answer, one per four bytes of its body)."""
        prompt = (
            estimate_prompt_tokens(self._sent)
            if self._prompt_estimate is None
            else self._prompt_estimate
        )
        if reported is not None and reported.prompt_tokens is not None:
            prompt = reported.prompt_tokens
        if self._stream:
            completion = max(0, self._monitor.events - (1 if self._monitor.done else 0))
        else:
            completion = self._bytes_out // 4
        if reported is not None and reported.completion_tokens is not None:
            completion = reported.completion_tokens
        return Usage(
            prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
        )

    def _log(
        self,
        status: int,
        *,
        usage: Usage | None = None,
        estimated: bool = False,
        error_code: str | None = None,
        detail: str | None = None,
        cancelled: bool = False,
    ) -> WriteLog:
        request = self._current_request()
        identity, endpoint = self._identity, self._endpoint
        if self._failover is not None:
            detail = self._failover if detail is None else f"{self._failover}; {detail}"
        return WriteLog(
            entry=LogEntry(
                request_id=request.request_id,
                route=request.route.value,
                status=status,
                username=identity.username if identity else None,
                provider=identity.provider if identity else None,
                endpoint_slug=endpoint.endpoint_slug if endpoint else None,
                cluster=endpoint.cluster if endpoint else None,
                framework=endpoint.framework if endpoint else None,
                model=endpoint.model if endpoint else None,
                stream=self._stream,
                usage=usage,
                estimated=estimated,
                error_code=error_code,
                # Never a backend's whole error page, never a secret it quoted.
                detail=None if detail is None else log_detail(detail),
                cancelled=cancelled,
                task_id=self._task_id,
                bytes_in=len(request.body) if self._bytes_in is None else self._bytes_in,
                bytes_out=self._bytes_out,
                client=request.client,
            )
        )
