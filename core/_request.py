"""The request machine: one OpenAI request, from arrival to its one terminal state.

Theory of operation
-------------------
The driver (a front-end) feeds events in with `receive()` and carries out the effects
that come back; the machine never awaits and never touches IO.

    AWAITING_REQUEST --RequestReceived--> AUTHENTICATING   (effect: Authenticate)
                                      \\-> DONE             (no bearer token: 401)
    AUTHENTICATING --IdentityResolved--> AWAITING_RESULT    (effect: CallAdaptor)
                                     \\-> AWAITING_STREAM    (effect: CallAdaptor, stream)
                                     \\-> DONE               (401, 400, 404 or 403)
                   --IdentityUnavailable--> DONE            (503: provider down)
    AWAITING_RESULT --AdaptorReturned|AdaptorFailed--> DONE
    AWAITING_STREAM --StreamOpened--> STREAMING             (effect: StartStream)
                    --AdaptorReturned|AdaptorFailed--> DONE  (error before any byte)
    STREAMING --ChunkReceived--> STREAMING                  (effect: RelayChunk)
              --StreamEnded|AdaptorFailed--> DONE           (an error event if unfinished)
    any live state --ClientDisconnected--> CANCELLED        (effect: CancelUpstream)

Validation, selection and authorization all happen on the IdentityResolved event, in
that order, so a `CallAdaptor` effect exists only after the identity passed both
levels of rules.  Every path into DONE or CANCELLED emits exactly one WriteLog.  An
event the current state does not accept raises LocalProtocolError and poisons the
machine (state ERROR): every later call raises too, as h11 does.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any

from core._authorization import Rule
from core._catalog import Catalog
from core._errors import BackendError, ClientError, GatewayError, LocalProtocolError, error_body
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
    Event,
    IdentityResolved,
    IdentityUnavailable,
    LogEntry,
    RelayChunk,
    RequestReceived,
    Respond,
    StartStream,
    StreamEnded,
    StreamOpened,
    WriteLog,
)
from core._records import EndpointRecord, Identity
from core._selection import select_endpoint
from core._shaping import Shaped, error_response, shape_failure, shape_result, stream_headers
from core._sse import SSEMonitor, error_event
from core._validation import validate_request

__all__ = ["TRANSITIONS", "RequestMachine", "State", "bearer_credentials", "identity_refusal"]


class State(enum.Enum):
    AWAITING_REQUEST = "awaiting_request"
    AUTHENTICATING = "authenticating"
    AWAITING_RESULT = "awaiting_result"
    AWAITING_STREAM = "awaiting_stream"
    STREAMING = "streaming"
    DONE = "done"
    CANCELLED = "cancelled"
    ERROR = "error"


S = State
TRANSITIONS: Mapping[State, Mapping[type[Any], frozenset[State]]] = {
    S.AWAITING_REQUEST: {RequestReceived: frozenset({S.AUTHENTICATING, S.DONE})},
    S.AUTHENTICATING: {
        IdentityResolved: frozenset({S.AWAITING_RESULT, S.AWAITING_STREAM, S.DONE}),
        IdentityUnavailable: frozenset({S.DONE}),
        ClientDisconnected: frozenset({S.CANCELLED}),
    },
    S.AWAITING_RESULT: {
        AdaptorReturned: frozenset({S.DONE}),
        AdaptorFailed: frozenset({S.DONE}),
        ClientDisconnected: frozenset({S.CANCELLED}),
    },
    S.AWAITING_STREAM: {
        StreamOpened: frozenset({S.STREAMING}),
        AdaptorReturned: frozenset({S.DONE}),
        AdaptorFailed: frozenset({S.DONE}),
        ClientDisconnected: frozenset({S.CANCELLED}),
    },
    S.STREAMING: {
        ChunkReceived: frozenset({S.STREAMING}),
        StreamEnded: frozenset({S.DONE}),
        AdaptorFailed: frozenset({S.DONE}),
        ClientDisconnected: frozenset({S.CANCELLED}),
    },
    S.DONE: {},
    S.CANCELLED: {},
    S.ERROR: {},
}
TERMINAL = frozenset({S.DONE, S.CANCELLED})

_REALM = 'Bearer realm="inference-gateway"'
# 499: nginx's "client closed request", the usual way to log a request nobody waited for.
_CLIENT_CLOSED = 499


def bearer_credentials(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or any(c.isspace() for c in token):
        return None
    return token


def missing_credentials() -> ClientError:
    """The answer to a request without a bearer token: 401 with a Bearer challenge."""
    return ClientError(
        "Missing bearer token in the Authorization header.",
        status=401,
        type="authentication_error",
        code="invalid_api_key",
        headers=(("www-authenticate", _REALM),),
    )


def identity_unavailable() -> BackendError:
    """The answer when the identity provider cannot be asked: not the caller's fault."""
    return BackendError(
        "The identity provider is unavailable; try again shortly.",
        status=503,
        code="identity_provider_unavailable",
    )


def identity_refusal(event: IdentityResolved) -> ClientError:
    """The answer to credentials the provider did not accept: 401 with a Bearer challenge
    (its `error_description` the provider's reason), or 403 for a gateway-wide rule."""
    if event.refused_by is not None:
        what = "group membership" if event.refused_by is Rule.GROUP else "identity domain"
        return ClientError(
            f"Permission denied: this gateway is restricted by {what}.",
            status=403,
            type="permission_error",
            code="permission_denied",
        )
    reason = event.reason or "unknown"
    challenge = f'{_REALM}, error="invalid_token", error_description="{reason} token"'
    if reason == "unacceptable username":
        challenge = f'{_REALM}, error="invalid_token", error_description="{reason}"'
    return ClientError(
        f"Invalid bearer token ({reason}).",
        status=401,
        type="authentication_error",
        code="invalid_api_key",
        headers=(("www-authenticate", challenge),),
    )


Outcome = tuple[State, tuple[Effect, ...]]


class RequestMachine:
    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog
        self._state = S.AWAITING_REQUEST
        self._request: RequestReceived | None = None
        self._identity: Identity | None = None
        self._endpoint: EndpointRecord | None = None
        self._monitor = SSEMonitor()
        self._handlers: Mapping[type[Any], Callable[[Any], Outcome]] = {
            RequestReceived: self._on_request,
            IdentityResolved: self._on_identity,
            IdentityUnavailable: self._on_identity_unavailable,
            AdaptorReturned: self._on_returned,
            AdaptorFailed: self._on_failed,
            StreamOpened: self._on_stream_opened,
            ChunkReceived: self._on_chunk,
            StreamEnded: self._on_stream_ended,
            ClientDisconnected: self._on_disconnect,
        }

    @property
    def state(self) -> State:
        return self._state

    @property
    def finished(self) -> bool:
        return self._state in TERMINAL

    @property
    def endpoint(self) -> EndpointRecord | None:
        """The endpoint selected for this request, once there is one."""
        return self._endpoint

    @property
    def identity(self) -> Identity | None:
        return self._identity

    def receive(self, event: Event) -> tuple[Effect, ...]:
        """Advance on one event; the effects are the driver's to carry out, in order."""
        if self._state is S.ERROR:
            raise LocalProtocolError("the request machine failed earlier and accepts nothing")
        allowed = TRANSITIONS[self._state].get(type(event))
        if allowed is None:
            refused_in, self._state = self._state, S.ERROR
            raise LocalProtocolError(
                f"{type(event).__name__} is not accepted in state {refused_in.name}"
            )
        next_state, effects = self._handlers[type(event)](event)
        if next_state not in allowed:
            self._state = S.ERROR
            raise LocalProtocolError(f"{type(event).__name__} led to forbidden state {next_state}")
        self._state = next_state
        return effects

    # -- transitions ------------------------------------------------------------------

    def _on_request(self, event: RequestReceived) -> Outcome:
        self._request = event
        credentials = bearer_credentials(event.authorization)
        if credentials is None:
            return self._finish_with_error(missing_credentials())
        return S.AUTHENTICATING, (Authenticate(credentials=credentials),)

    def _on_identity(self, event: IdentityResolved) -> Outcome:
        request = self._current_request()
        if event.identity is None:
            return self._finish_with_error(identity_refusal(event))
        self._identity = event.identity
        valid = validate_request(request.route, request.content_type, request.body)
        if isinstance(valid, ClientError):
            return self._finish_with_error(valid)
        endpoint = select_endpoint(
            self._catalog,
            event.identity,
            valid,
            cluster=request.cluster,
            framework=request.framework,
        )
        if isinstance(endpoint, ClientError):
            return self._finish_with_error(endpoint)
        self._endpoint = endpoint
        body = dict(valid.body)
        if body["model"] != endpoint.model:  # matched case-insensitively: send the real name
            body["model"] = endpoint.model
        call = CallAdaptor(
            endpoint_slug=endpoint.endpoint_slug,
            stream=valid.stream,
            data={
                "model_params": body,
                "openai_endpoint": request.route.value,
                "request_id": request.request_id,
            },
        )
        return (S.AWAITING_STREAM if valid.stream else S.AWAITING_RESULT), (call,)

    def _on_identity_unavailable(self, event: IdentityUnavailable) -> Outcome:
        error = identity_unavailable()
        shaped = Shaped(response=error_response(error), detail=event.detail)
        return self._finish(shaped, error_code=error.code)

    def _on_returned(self, event: AdaptorReturned) -> Outcome:
        if (
            self._state is S.AWAITING_STREAM
            and event.error_code is None
            and event.error_message is None
        ):
            event = AdaptorReturned(
                error_message="the streaming adaptor returned neither a stream nor an error",
                error_code=502,
            )
        shaped = shape_result(
            self._current_endpoint(),
            result=event.result,
            error_message=event.error_message,
            error_code=event.error_code,
            headers=event.headers,
        )
        return self._finish(shaped)

    def _on_failed(self, event: AdaptorFailed) -> Outcome:
        shaped = shape_failure(self._current_endpoint(), event.status, event.detail)
        if self._state is not S.STREAMING:
            return self._finish(shaped)
        partial = self._monitor.pending
        event_bytes = error_event(shaped.response.body, after_partial=partial)
        effects = (RelayChunk(data=event_bytes), EndStream())
        return S.DONE, (*effects, self._log(shaped.response.status, detail=shaped.detail))

    def _on_stream_opened(self, event: StreamOpened) -> Outcome:
        return S.STREAMING, (StartStream(status=200, headers=stream_headers(event.headers)),)

    def _on_chunk(self, event: ChunkReceived) -> Outcome:
        if not event.data:
            return S.STREAMING, ()
        self._monitor.feed(event.data)
        return S.STREAMING, (RelayChunk(data=event.data),)

    def _on_stream_ended(self, event: StreamEnded) -> Outcome:
        partial = self._monitor.pending
        self._monitor.finish()
        if self._monitor.done or self._monitor.errored:
            return S.DONE, (EndStream(), self._log(200, usage=self._monitor.usage))
        error = BackendError(
            f"The backend serving model '{self._current_endpoint().model}' ended its stream "
            "before it was complete.",
            code="incomplete_stream",
        )
        return S.DONE, (
            RelayChunk(data=error_event(error_body(error), after_partial=partial)),
            EndStream(),
            self._log(error.status, error_code=error.code, detail="stream ended without [DONE]"),
        )

    def _on_disconnect(self, event: ClientDisconnected) -> Outcome:
        log = self._log(_CLIENT_CLOSED, cancelled=True)
        if self._state is S.AUTHENTICATING:
            return S.CANCELLED, (log,)
        return S.CANCELLED, (CancelUpstream(), log)

    # -- helpers ----------------------------------------------------------------------

    def _current_request(self) -> RequestReceived:
        assert self._request is not None, "transition table admits no event before the request"
        return self._request

    def _current_endpoint(self) -> EndpointRecord:
        assert self._endpoint is not None, "adaptor events come only after selection"
        return self._endpoint

    def _finish_with_error(self, error: GatewayError) -> Outcome:
        return self._finish(Shaped(response=error_response(error)), error_code=error.code)

    def _finish(self, shaped: Shaped, *, error_code: str | None = None) -> Outcome:
        status = shaped.response.status
        log = self._log(status, usage=shaped.usage, error_code=error_code, detail=shaped.detail)
        return S.DONE, (Respond(response=shaped.response), log)

    def _log(
        self,
        status: int,
        *,
        usage: dict[str, Any] | None = None,
        error_code: str | None = None,
        detail: str | None = None,
        cancelled: bool = False,
    ) -> WriteLog:
        request = self._current_request()
        return WriteLog(
            entry=LogEntry(
                request_id=request.request_id,
                route=request.route.value,
                status=status,
                username=self._identity.username if self._identity else None,
                endpoint_slug=self._endpoint.endpoint_slug if self._endpoint else None,
                stream=self._state in (S.AWAITING_STREAM, S.STREAMING),
                usage=usage,
                error_code=error_code,
                detail=detail,
                cancelled=cancelled,
            )
        )
