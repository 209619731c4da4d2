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
from core._records import Headers, Identity, OpenAIRoute, Response, Usage, header_pairs, http_status

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
    "QuotaExceeded",
    "RelayChunk",
    "Release",
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


def _optional_status(
    instance: object, attribute: attrs.Attribute[int | None], value: int | None
) -> None:
    if value is not None:
        http_status(instance, attribute, value)  # type: ignore[arg-type]


_text = attrs.validators.instance_of(str)
_nonempty_text = attrs.validators.and_(_text, attrs.validators.min_len(1))
_optional_text = attrs.validators.optional(attrs.validators.instance_of(str))
_bytes = attrs.validators.instance_of(bytes)
_flag = attrs.validators.instance_of(bool)


# -- events -----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class RequestReceived:
    """A client asked for an OpenAI operation.

    `cluster` and `framework` come from the ALCF-style URL and are None on the plain
    `/v1/...` routes, where the model alone selects the endpoint.
    """

    request_id: str = attrs.field(validator=_nonempty_text)
    route: OpenAIRoute = attrs.field(validator=attrs.validators.instance_of(OpenAIRoute))
    body: bytes = attrs.field(validator=_bytes)
    content_type: str | None = attrs.field(default=None, validator=_optional_text)
    authorization: str | None = attrs.field(default=None, validator=_optional_text, repr=False)
    cluster: str | None = attrs.field(default=None, validator=_optional_text)
    framework: str | None = attrs.field(default=None, validator=_optional_text)
    client: str | None = attrs.field(default=None, validator=_optional_text)  # its address

    def __attrs_post_init__(self) -> None:
        if (self.cluster is None) != (self.framework is None):
            raise ValueError("cluster and framework come together (the ALCF route) or not at all")


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

    identity: Identity | None = attrs.field(
        validator=attrs.validators.optional(attrs.validators.instance_of(Identity))
    )
    reason: str | None = attrs.field(default=None, validator=_reason)
    refused_by: Rule | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(Rule))
    )

    def __attrs_post_init__(self) -> None:
        given = [self.identity is not None, self.reason is not None, self.refused_by is not None]
        if given.count(True) != 1:
            raise ValueError(
                "IdentityResolved holds exactly one of: an identity, a refusal reason "
                "(401) or the gateway-wide rule that refused it (403)"
            )


@attrs.frozen(kw_only=True)
class IdentityUnavailable:
    """The identity provider could not answer (down, slow): not the caller's fault."""

    detail: str = attrs.field(default="", validator=_text)


@attrs.frozen(kw_only=True)
class Reserved:
    """The quota counters recorded every reservation of the `Reserve` effect."""


@attrs.frozen(kw_only=True)
class QuotaExceeded:
    """The quota counters recorded nothing: `refusal` names the limit that did not fit."""

    refusal: Refusal = attrs.field(validator=attrs.validators.instance_of(Refusal))


@attrs.frozen(kw_only=True)
class AdaptorReturned:
    """An adaptor's response model, reduced to the fields the seed contract defines.

    `result` is the backend's answer: its exact bytes when the driver has them (so they
    reach the client unchanged), or the adaptor's text.
    """

    result: bytes | str | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(attrs.validators.instance_of((bytes, str))),
    )
    task_id: str | None = attrs.field(default=None, validator=_optional_text)
    error_message: str | None = attrs.field(default=None, validator=_optional_text)
    error_code: int | None = attrs.field(default=None, validator=_optional_status)
    headers: Headers = attrs.field(default=(), converter=header_pairs)


@attrs.frozen(kw_only=True)
class AdaptorFailed:
    """Calling the adaptor, or reading its stream, raised; `status` is the edge's hint
    (504 for a timeout, 502 otherwise) and `detail` is for the operator's log only."""

    status: int = attrs.field(default=502, validator=http_status)
    detail: str = attrs.field(default="", validator=_text)


@attrs.frozen(kw_only=True)
class StreamOpened:
    """The adaptor's stream is ready to be read; `headers` are the backend's."""

    headers: Headers = attrs.field(default=(), converter=header_pairs)
    task_id: str | None = attrs.field(default=None, validator=_optional_text)


@attrs.frozen(kw_only=True)
class ChunkReceived:
    data: bytes = attrs.field(validator=_bytes)


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
    | Reserved
    | QuotaExceeded
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

    credentials: str = attrs.field(repr=False, validator=_nonempty_text)


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

    reservation_id: str = attrs.field(validator=_nonempty_text)
    reservations: tuple[Reservation, ...] = attrs.field(converter=_reservations)


@attrs.frozen(kw_only=True)
class Settle:
    """The request ended: what `reservation_id` holds on these token keys becomes `used`."""

    reservation_id: str = attrs.field(validator=_nonempty_text)
    keys: tuple[str, ...] = attrs.field(converter=_keys)
    used: int = attrs.field(
        validator=attrs.validators.and_(attrs.validators.instance_of(int), attrs.validators.ge(0))
    )


@attrs.frozen(kw_only=True)
class Release:
    """The request ended before its call: give back all `reservation_id` holds."""

    reservation_id: str = attrs.field(validator=_nonempty_text)
    keys: tuple[str, ...] = attrs.field(converter=_keys)


@attrs.frozen(kw_only=True)
class CallAdaptor:
    """Call the endpoint adaptor; `stream` picks `submit_streaming_task` over `submit_task`.

    `body` is the exact bytes to send: the client's own, or (only when the client spelled
    the model differently from the fixture) the same JSON with the fixture's model name.
    The driver builds the seed's task data (`model_params`, `openai_endpoint`) from it.
    """

    endpoint_slug: str = attrs.field(validator=_text)
    route: OpenAIRoute = attrs.field(validator=attrs.validators.instance_of(OpenAIRoute))
    request_id: str = attrs.field(validator=_text)
    stream: bool = attrs.field(validator=_flag)
    body: bytes = attrs.field(validator=_bytes, repr=False)


@attrs.frozen(kw_only=True)
class Respond:
    response: Response = attrs.field(validator=attrs.validators.instance_of(Response))


@attrs.frozen(kw_only=True)
class StartStream:
    status: int = attrs.field(validator=http_status)
    headers: Headers = attrs.field(converter=header_pairs)


@attrs.frozen(kw_only=True)
class RelayChunk:
    data: bytes = attrs.field(validator=_bytes)


@attrs.frozen(kw_only=True)
class EndStream:
    pass


@attrs.frozen(kw_only=True)
class CancelUpstream:
    """Stop the backend call: close its stream or cancel the pending adaptor call."""


@attrs.frozen(kw_only=True)
class LogEntry:
    """One finished request, for the operator: who, what, outcome; never a credential."""

    request_id: str = attrs.field(validator=_text)
    route: str = attrs.field(validator=_text)
    status: int = attrs.field(validator=http_status)
    username: str | None = attrs.field(default=None, validator=_optional_text)
    provider: str | None = attrs.field(default=None, validator=_optional_text)
    endpoint_slug: str | None = attrs.field(default=None, validator=_optional_text)
    cluster: str | None = attrs.field(default=None, validator=_optional_text)
    framework: str | None = attrs.field(default=None, validator=_optional_text)
    model: str | None = attrs.field(default=None, validator=_optional_text)
    stream: bool = attrs.field(default=False, validator=_flag)
    # The backend's counts, or (`estimated`) the gateway's when the backend gave none.
    usage: Usage | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(Usage))
    )
    estimated: bool = attrs.field(default=False, validator=_flag)
    error_code: str | None = attrs.field(default=None, validator=_optional_text)
    detail: str | None = attrs.field(default=None, validator=_optional_text)
    cancelled: bool = attrs.field(default=False, validator=_flag)
    task_id: str | None = attrs.field(default=None, validator=_optional_text)
    bytes_in: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    bytes_out: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    client: str | None = attrs.field(default=None, validator=_optional_text)


@attrs.frozen(kw_only=True)
class WriteLog:
    entry: LogEntry = attrs.field(validator=attrs.validators.instance_of(LogEntry))


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
    | WriteLog
)
