"""What the driver tells the request machine (events) and what it asks back (effects).

Small frozen classes, validated on construction, as in h11: an event that exists is one
the machine can reason about.  Events are facts that happened at the edge; effects are
work for the edge to carry out.  Nothing here does IO.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from core._authorization import Rule
from core._quota import Refusal, Reservation
from core._records import (
    Headers,
    Identity,
    OpenAIRoute,
    Response,
    Usage,
    checked,
    header_pairs,
    non_empty,
    non_negative,
    status_fields,
)

__all__ = [
    "REFUSAL_REASONS",
    "AdaptorFailed",
    "AdaptorReturned",
    "Authenticate",
    "CallAdaptor",
    "CancelUpstream",
    "ChunkReceived",
    "ClientDisconnected",
    "Effect",
    "EndStream",
    "Event",
    "GatewayStopping",
    "IdentityResolved",
    "IdentityUnavailable",
    "LogEntry",
    "QuotaExceeded",
    "RelayChunk",
    "Release",
    "RememberResponse",
    "RequestReceived",
    "Reserve",
    "Reserved",
    "Respond",
    "Settle",
    "StartStream",
    "StreamEnded",
    "StreamOpened",
    "WriteLog",
]


# Field kinds for `checked`, which validates every event and effect on construction.
_OPTIONAL_TEXT = (str, type(None))
_OPTIONAL_INT = (int, type(None))


def _cluster_with_framework(event: RequestReceived) -> None:
    if (event.cluster is None) != (event.framework is None):
        raise ValueError("cluster and framework come together (the ALCF route) or not at all")


# -- events -----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class RequestReceived:
    """A client asked for an OpenAI operation.

    `cluster` and `framework` come from the ALCF-style URL and are None on the plain
    `/v1/...` routes, where the model alone selects the endpoint.
    """

    request_id: str
    route: OpenAIRoute
    body: bytes
    content_type: str | None = None
    authorization: str | None = attrs.field(default=None, repr=False)
    cluster: str | None = None
    framework: str | None = None
    client: str | None = None  # its address

    __attrs_post_init__ = checked(
        non_empty("request_id"),
        _cluster_with_framework,
        request_id=str,
        route=OpenAIRoute,
        body=bytes,
        content_type=_OPTIONAL_TEXT,
        authorization=_OPTIONAL_TEXT,
        cluster=_OPTIONAL_TEXT,
        framework=_OPTIONAL_TEXT,
        client=_OPTIONAL_TEXT,
    )


# Why credentials were not accepted, as the `error_description` of a 401: a fixed
# vocabulary, so nothing the caller sent (a token) can ride along into a response or log.
REFUSAL_REASONS = frozenset(
    {"unknown", "malformed", "expired", "inactive", "not yet valid", "unacceptable username"}
)


def _one_verdict(event: IdentityResolved) -> None:
    given = [event.identity is not None, event.reason is not None, event.refused_by is not None]
    if given.count(True) != 1:
        raise ValueError(
            "IdentityResolved holds exactly one of: an identity, a refusal reason "
            "(401) or the gateway-wide rule that refused it (403)"
        )
    if event.reason is not None and event.reason not in REFUSAL_REASONS:
        raise ValueError(f"reason must be one of {sorted(REFUSAL_REASONS)}")


@attrs.frozen(kw_only=True)
class IdentityResolved:
    """The identity provider's answer for the credentials; None means not valid.

    With no identity, `reason` says why the credentials were refused (401), or
    `refused_by` names the gateway-wide rule ("group" or "domain") the provider applied
    to a valid identity (403).
    """

    identity: Identity | None
    reason: str | None = None
    refused_by: Rule | None = None

    __attrs_post_init__ = checked(
        _one_verdict,
        identity=(Identity, type(None)),
        reason=_OPTIONAL_TEXT,
        refused_by=(Rule, type(None)),
    )


@attrs.frozen(kw_only=True)
class IdentityUnavailable:
    """The identity provider could not answer (down, slow): not the caller's fault."""

    detail: str = ""

    __attrs_post_init__ = checked(detail=str)


@attrs.frozen(kw_only=True)
class Reserved:
    """The quota counters recorded every reservation of the `Reserve` effect."""


@attrs.frozen(kw_only=True)
class QuotaExceeded:
    """The quota counters recorded nothing: `refusal` names the limit that did not fit."""

    refusal: Refusal

    __attrs_post_init__ = checked(refusal=Refusal)


@attrs.frozen(kw_only=True)
class AdaptorReturned:
    """An adaptor's response model, reduced to the fields the seed contract defines.

    `result` is the backend's answer: its exact bytes when the driver has them (so they
    reach the client unchanged), or the adaptor's text.
    """

    result: bytes | str | None = None
    task_id: str | None = None
    error_message: str | None = None
    error_code: int | None = None
    headers: Headers = attrs.field(default=(), converter=header_pairs)
    # The OpenAI error code of a failure the adaptor recognised (a backend timeout of
    # one kind, the gateway's saturation...); None leaves it to the status.
    failure_code: str | None = None

    __attrs_post_init__ = checked(
        status_fields("error_code"),
        result=(bytes, str, type(None)),
        task_id=_OPTIONAL_TEXT,
        error_message=_OPTIONAL_TEXT,
        error_code=_OPTIONAL_INT,
        failure_code=_OPTIONAL_TEXT,
    )


@attrs.frozen(kw_only=True)
class AdaptorFailed:
    """Calling the adaptor, or reading its stream, raised; `status` is the edge's hint
    (504 for a timeout, 502 otherwise) and `detail` is for the operator's log only."""

    status: int = 502
    detail: str = ""
    code: str | None = None  # the failure's OpenAI error code, if the edge knows it

    __attrs_post_init__ = checked(
        status_fields("status"), status=int, detail=str, code=_OPTIONAL_TEXT
    )


@attrs.frozen(kw_only=True)
class StreamOpened:
    """The adaptor's stream is ready to be read; `headers` are the backend's."""

    headers: Headers = attrs.field(default=(), converter=header_pairs)
    task_id: str | None = None

    __attrs_post_init__ = checked(task_id=_OPTIONAL_TEXT)


@attrs.frozen(kw_only=True)
class ChunkReceived:
    data: bytes

    __attrs_post_init__ = checked(data=bytes)


@attrs.frozen(kw_only=True)
class StreamEnded:
    """The backend closed its stream (properly or not: the machine decides)."""


@attrs.frozen(kw_only=True)
class ClientDisconnected:
    """The client went away before the request finished."""


@attrs.frozen(kw_only=True)
class GatewayStopping:
    """The gateway's drain deadline passed while this request still waited on its backend
    or streamed: it ends now, telling the client the gateway is shutting down."""


Event = (
    RequestReceived
    | IdentityResolved
    | IdentityUnavailable
    | Reserved
    | QuotaExceeded
    | AdaptorReturned
    | AdaptorFailed
    | StreamOpened
    | ChunkReceived
    | StreamEnded
    | ClientDisconnected
    | GatewayStopping
)


# -- effects ----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Authenticate:
    """Resolve these bearer credentials to an identity, then send IdentityResolved."""

    credentials: str = attrs.field(repr=False)

    __attrs_post_init__ = checked(non_empty("credentials"), credentials=str)


def _reservations(value: Iterable[Reservation]) -> tuple[Reservation, ...]:
    reservations = tuple(value)
    if not reservations or not all(isinstance(r, Reservation) for r in reservations):
        raise ValueError("Reserve needs at least one Reservation")
    return reservations


def _keys(value: Iterable[str]) -> tuple[str, ...]:
    keys = tuple(value)
    if not keys or not all(isinstance(k, str) and k for k in keys):
        raise ValueError("quota keys must be non-empty strings, at least one")
    return keys


@attrs.frozen(kw_only=True)
class Reserve:
    """Record all these reservations under `reservation_id`, or none; then send
    Reserved or QuotaExceeded.  One atomic step: check and record cannot be split."""

    reservation_id: str
    reservations: tuple[Reservation, ...] = attrs.field(converter=_reservations)

    __attrs_post_init__ = checked(non_empty("reservation_id"), reservation_id=str)


@attrs.frozen(kw_only=True)
class Settle:
    """The request ended: what `reservation_id` holds on these token keys becomes `used`."""

    reservation_id: str
    keys: tuple[str, ...] = attrs.field(converter=_keys)
    used: int

    __attrs_post_init__ = checked(
        non_empty("reservation_id"), non_negative("used"), reservation_id=str, used=int
    )


@attrs.frozen(kw_only=True)
class Release:
    """The request ended before its call: give back all `reservation_id` holds."""

    reservation_id: str
    keys: tuple[str, ...] = attrs.field(converter=_keys)

    __attrs_post_init__ = checked(non_empty("reservation_id"), reservation_id=str)


@attrs.frozen(kw_only=True)
class CallAdaptor:
    """Call the endpoint adaptor; `stream` picks `submit_streaming_task` over `submit_task`.

    `body` is the exact bytes to send: the client's own, or (only when the client spelled
    the model differently from the fixture) the same JSON with the fixture's model name.
    The driver builds the seed's task data (`model_params`, `openai_endpoint`) from it.
    """

    endpoint_slug: str
    route: OpenAIRoute
    request_id: str
    stream: bool
    body: bytes = attrs.field(repr=False)

    __attrs_post_init__ = checked(
        endpoint_slug=str, route=OpenAIRoute, request_id=str, stream=bool, body=bytes
    )


@attrs.frozen(kw_only=True)
class Respond:
    response: Response

    __attrs_post_init__ = checked(response=Response)


@attrs.frozen(kw_only=True)
class StartStream:
    status: int
    headers: Headers = attrs.field(converter=header_pairs)

    __attrs_post_init__ = checked(status_fields("status"), status=int)


@attrs.frozen(kw_only=True)
class RelayChunk:
    data: bytes

    __attrs_post_init__ = checked(data=bytes)


@attrs.frozen(kw_only=True)
class EndStream:
    pass


@attrs.frozen(kw_only=True)
class CancelUpstream:
    """Stop the backend call: close its stream or cancel the pending adaptor call."""


@attrs.frozen(kw_only=True)
class LogEntry:
    """One finished request, for the operator: who, what, outcome; never a credential."""

    request_id: str
    route: str
    status: int
    username: str | None = None
    provider: str | None = None
    endpoint_slug: str | None = None
    cluster: str | None = None
    framework: str | None = None
    model: str | None = None
    stream: bool = False
    # The backend's counts, or (`estimated`) the gateway's when the backend gave none.
    usage: Usage | None = None
    estimated: bool = False
    error_code: str | None = None
    detail: str | None = None
    cancelled: bool = False
    task_id: str | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    client: str | None = None

    __attrs_post_init__ = checked(
        status_fields("status"),
        non_negative("bytes_in", "bytes_out"),
        request_id=str,
        route=str,
        status=int,
        username=_OPTIONAL_TEXT,
        provider=_OPTIONAL_TEXT,
        endpoint_slug=_OPTIONAL_TEXT,
        cluster=_OPTIONAL_TEXT,
        framework=_OPTIONAL_TEXT,
        model=_OPTIONAL_TEXT,
        stream=bool,
        usage=(Usage, type(None)),
        estimated=bool,
        error_code=_OPTIONAL_TEXT,
        detail=_OPTIONAL_TEXT,
        cancelled=bool,
        task_id=_OPTIONAL_TEXT,
        bytes_in=int,
        bytes_out=int,
        client=_OPTIONAL_TEXT,
    )


@attrs.frozen(kw_only=True)
class RememberResponse:
    """A Responses API answer was stored by this endpoint's backend for this user: note
    it, so `previous_response_id` and `GET /v1/responses/{id}` can find their way back."""

    response_id: str
    username: str
    endpoint_slug: str

    __attrs_post_init__ = checked(
        non_empty("response_id", "endpoint_slug"),
        response_id=str,
        username=str,
        endpoint_slug=str,
    )


@attrs.frozen(kw_only=True)
class WriteLog:
    entry: LogEntry

    __attrs_post_init__ = checked(entry=LogEntry)


Effect = (
    Authenticate
    | Reserve
    | Settle
    | Release
    | CallAdaptor
    | Respond
    | StartStream
    | RelayChunk
    | EndStream
    | CancelUpstream
    | RememberResponse
    | WriteLog
)
