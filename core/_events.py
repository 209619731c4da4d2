"""What the driver tells the request machine (events) and what it asks back (effects).

Small frozen classes, validated on construction, as in h11: an event that exists is one
the machine can reason about.  Events are facts that happened at the edge; effects are
work for the edge to carry out.  Nothing here does IO.
"""

from __future__ import annotations

from typing import Any

import attrs

from core._authorization import Rule
from core._records import Identity, OpenAIRoute
from core._shaping import Response

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
    "IdentityResolved",
    "IdentityUnavailable",
    "LogEntry",
    "RelayChunk",
    "RequestReceived",
    "Respond",
    "StartStream",
    "StreamEnded",
    "StreamOpened",
    "WriteLog",
]


def _status(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 100 <= value <= 599:
        raise ValueError(f"{attribute.name} must be an HTTP status, got {value}")


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
    authorization: str | None = None
    cluster: str | None = None
    framework: str | None = None


# Why credentials were not accepted, as the `error_description` of a 401: a fixed
# vocabulary, so nothing the caller sent (a token) can ride along into a response or log.
REFUSAL_REASONS = frozenset(
    {"unknown", "malformed", "expired", "inactive", "not yet valid", "unacceptable username"}
)


def _reason(instance: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None and value not in REFUSAL_REASONS:
        raise ValueError(f"{attribute.name} must be one of {sorted(REFUSAL_REASONS)}")


@attrs.frozen(kw_only=True)
class IdentityResolved:
    """The identity provider's answer for the credentials; None means not valid.

    With no identity, `reason` says why the credentials were refused (401), or
    `refused_by` names the gateway-wide rule ("group" or "domain") the provider applied
    to a valid identity (403).
    """

    identity: Identity | None
    reason: str | None = attrs.field(default=None, validator=_reason)
    refused_by: Rule | None = None


@attrs.frozen(kw_only=True)
class IdentityUnavailable:
    """The identity provider could not answer (down, slow): not the caller's fault."""

    detail: str = ""


@attrs.frozen(kw_only=True)
class AdaptorReturned:
    """An adaptor's response model, reduced to the fields the seed contract defines."""

    result: str | None = None
    error_message: str | None = None
    error_code: int | None = None
    headers: tuple[tuple[str, str], ...] = ()


@attrs.frozen(kw_only=True)
class AdaptorFailed:
    """Calling the adaptor, or reading its stream, raised; `status` is the edge's hint
    (504 for a timeout, 502 otherwise) and `detail` is for the operator's log only."""

    status: int = attrs.field(default=502, validator=_status)
    detail: str = ""


@attrs.frozen(kw_only=True)
class StreamOpened:
    """The adaptor's stream is ready to be read; `headers` are the backend's."""

    headers: tuple[tuple[str, str], ...] = ()


@attrs.frozen(kw_only=True)
class ChunkReceived:
    data: bytes


@attrs.frozen(kw_only=True)
class StreamEnded:
    """The backend closed its stream (properly or not: the machine decides)."""


@attrs.frozen(kw_only=True)
class ClientDisconnected:
    """The client went away before the request finished."""


Event = (
    RequestReceived
    | IdentityResolved
    | IdentityUnavailable
    | AdaptorReturned
    | AdaptorFailed
    | StreamOpened
    | ChunkReceived
    | StreamEnded
    | ClientDisconnected
)


# -- effects ----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Authenticate:
    """Resolve these bearer credentials to an identity, then send IdentityResolved."""

    credentials: str = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class CallAdaptor:
    """Call the endpoint adaptor with the seed's task data; `stream` picks the method."""

    endpoint_slug: str
    stream: bool
    data: dict[str, Any] = attrs.field(eq=False)


@attrs.frozen(kw_only=True)
class Respond:
    response: Response


@attrs.frozen(kw_only=True)
class StartStream:
    status: int
    headers: tuple[tuple[str, str], ...]


@attrs.frozen(kw_only=True)
class RelayChunk:
    data: bytes


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
    endpoint_slug: str | None = None
    stream: bool = False
    usage: dict[str, Any] | None = None
    error_code: str | None = None
    detail: str | None = None
    cancelled: bool = False


@attrs.frozen(kw_only=True)
class WriteLog:
    entry: LogEntry


Effect = (
    Authenticate
    | CallAdaptor
    | Respond
    | StartStream
    | RelayChunk
    | EndStream
    | CancelUpstream
    | WriteLog
)
