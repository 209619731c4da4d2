"""The request machine: one OpenAI request, from arrival to its one terminal state.

Theory of operation
-------------------
The driver (a front-end) feeds events in with `receive()` and carries out the effects
that come back; the machine never awaits and never touches IO.  It stands on the kernel
(`core/_machine.py`): the table below is the whole of its behaviour, one cell per
(state, event type), naming the handler and the states it may lead to.

Validation, selection and authorization all happen on IdentityResolved, in that order,
so a `CallAdaptor` effect exists only after the identity passed both levels of rules.
The client's body travels as bytes: the adaptor is handed exactly what the client sent
(with the fixture's spelling of the model, if the client's differed).  Every path into
DONE or CANCELLED emits exactly one WriteLog.  An event a state does not accept, or a
handler that fails, poisons the machine (state ERROR): every later call raises too.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from typing import Any

from core._caller import caller, credentials, identity_unavailable
from core._catalog import Catalog
from core._errors import BackendError, ClientError, GatewayError, error_body
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
from core._machine import Cell, Kernel
from core._records import EndpointRecord, Identity, Usage
from core._selection import select_endpoint
from core._shaping import Shaped, error_response, shape_failure, shape_result, stream_headers
from core._sse import SSEMonitor, error_event
from core._validation import validate_request

__all__ = ["TABLE", "TERMINAL", "RequestMachine", "State"]


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
# (state, event type) -> Cell(handler, states it may lead to).  No cell: not accepted.
TABLE: Mapping[tuple[State, type[Any]], Cell[State]] = {
    (S.AWAITING_REQUEST, RequestReceived): Cell("_on_request", S.AUTHENTICATING, S.DONE),
    (S.AUTHENTICATING, IdentityResolved): Cell(
        "_on_identity", S.AWAITING_RESULT, S.AWAITING_STREAM, S.DONE
    ),
    (S.AUTHENTICATING, IdentityUnavailable): Cell("_on_identity_unavailable", S.DONE),
    (S.AUTHENTICATING, ClientDisconnected): Cell("_on_disconnect_before_call", S.CANCELLED),
    (S.AWAITING_RESULT, AdaptorReturned): Cell("_on_result", S.DONE),
    (S.AWAITING_RESULT, AdaptorFailed): Cell("_on_failed", S.DONE),
    (S.AWAITING_RESULT, ClientDisconnected): Cell("_on_disconnect", S.CANCELLED),
    (S.AWAITING_STREAM, StreamOpened): Cell("_on_stream_opened", S.STREAMING),
    (S.AWAITING_STREAM, AdaptorReturned): Cell("_on_stream_refused", S.DONE),
    (S.AWAITING_STREAM, AdaptorFailed): Cell("_on_failed", S.DONE),
    (S.AWAITING_STREAM, ClientDisconnected): Cell("_on_disconnect", S.CANCELLED),
    (S.STREAMING, ChunkReceived): Cell("_on_chunk", S.STREAMING),
    (S.STREAMING, StreamEnded): Cell("_on_stream_ended", S.DONE),
    (S.STREAMING, AdaptorFailed): Cell("_on_failed_mid_stream", S.DONE),
    (S.STREAMING, ClientDisconnected): Cell("_on_disconnect", S.CANCELLED),
}
TERMINAL = frozenset({S.DONE, S.CANCELLED})

# 499: nginx's "client closed request", the usual way to log a request nobody waited for.
_CLIENT_CLOSED = 499


Outcome = tuple[State, tuple[Effect, ...]]


class RequestMachine(Kernel[State, Effect]):
    TABLE = TABLE
    INITIAL = S.AWAITING_REQUEST
    ERROR = S.ERROR
    TERMINAL = TERMINAL

    def __init__(self, catalog: Catalog) -> None:
        super().__init__()
        self._catalog = catalog
        self._request: RequestReceived | None = None
        self._identity: Identity | None = None
        self._endpoint: EndpointRecord | None = None
        self._stream = False  # set when the adaptor is called for a stream
        self._monitor = SSEMonitor()

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
        valid = validate_request(request.route, request.content_type, request.body)
        if isinstance(valid, ClientError):
            return self._finish_with_error(valid)
        endpoint = select_endpoint(
            self._catalog,
            identity,
            valid,
            cluster=request.cluster,
            framework=request.framework,
        )
        if isinstance(endpoint, ClientError):
            return self._finish_with_error(endpoint)
        self._endpoint = endpoint
        self._stream = valid.stream
        body = request.body
        if valid.model != endpoint.model:  # matched case-insensitively: send the real name
            # ASCII escapes, so text the client escaped (lone surrogates too) stays valid.
            body = json.dumps({**valid.body, "model": endpoint.model}).encode()
        call = CallAdaptor(
            endpoint_slug=endpoint.endpoint_slug,
            route=request.route,
            request_id=request.request_id,
            stream=valid.stream,
            body=body,
        )
        return (S.AWAITING_STREAM if valid.stream else S.AWAITING_RESULT), (call,)

    def _on_identity_unavailable(self, event: IdentityUnavailable) -> Outcome:
        error = identity_unavailable()
        shaped = Shaped(response=error_response(error), detail=event.detail)
        return self._finish(shaped, error_code=error.code)

    def _on_result(self, event: AdaptorReturned) -> Outcome:
        return self._finish(self._shape(event))

    def _on_stream_refused(self, event: AdaptorReturned) -> Outcome:
        """A streaming call that returned instead of opening a stream: an error, always."""
        if event.error_code is None and event.error_message is None:
            event = AdaptorReturned(
                error_message="the streaming adaptor returned neither a stream nor an error",
                error_code=502,
            )
        return self._finish(self._shape(event))

    def _on_failed(self, event: AdaptorFailed) -> Outcome:
        return self._finish(shape_failure(self._current_endpoint(), event.status, event.detail))

    def _on_failed_mid_stream(self, event: AdaptorFailed) -> Outcome:
        """The stream broke after it started: end it with an error event, never cleanly."""
        shaped = shape_failure(self._current_endpoint(), event.status, event.detail)
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

    def _on_disconnect_before_call(self, event: ClientDisconnected) -> Outcome:
        """The client left while its identity was being resolved: nothing to cancel."""
        return S.CANCELLED, (self._log(_CLIENT_CLOSED, cancelled=True),)

    def _on_disconnect(self, event: ClientDisconnected) -> Outcome:
        return S.CANCELLED, (CancelUpstream(), self._log(_CLIENT_CLOSED, cancelled=True))

    # -- helpers ----------------------------------------------------------------------

    def _current_request(self) -> RequestReceived:
        assert self._request is not None, "transition table admits no event before the request"
        return self._request

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
        )

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
        usage: Usage | None = None,
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
                stream=self._stream,
                usage=usage,
                error_code=error_code,
                detail=detail,
                cancelled=cancelled,
            )
        )
