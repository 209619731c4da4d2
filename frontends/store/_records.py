"""The request log's record: one finished request, as the store keeps it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs

__all__ = ["CAPTURE_CEILING", "DETAIL_LIMIT", "RequestRecord", "capture"]

# The most of a prompt or response a record ever holds, whatever the capture setting
# says; the driver caps lower with `capture(..., limit)`.
CAPTURE_CEILING = 64 * 1024
# The most of a failure's detail a record keeps.
DETAIL_LIMIT = 1024
# Counters are stored as 64-bit integers on both databases.
_INT64_MAX = 2**63 - 1


def capture(data: bytes | str | None, limit: int) -> str | None:
    """A prompt or response as the log keeps it: text, at most `limit` characters.

    Bytes are decoded as UTF-8 (undecodable bytes replaced); NUL characters, which
    PostgreSQL's text type refuses, become U+FFFD.
    """
    if data is None:
        return None
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    return text[: max(0, min(limit, CAPTURE_CEILING))].replace("\x00", "\ufffd")


def _captured(value: str | None) -> str | None:
    return capture(value, CAPTURE_CEILING)


def _detail(value: str | None) -> str | None:
    return capture(value, DETAIL_LIMIT)


def _aware(instance: object, attribute: attrs.Attribute[Any], value: datetime | None) -> None:
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{attribute.name} must be timezone-aware, got {value!r}")


def _count(instance: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and not 0 <= value <= _INT64_MAX:
        raise ValueError(f"{attribute.name} must be a count from 0 to 2**63-1, got {value}")


def _status(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 100 <= value <= 599:
        raise ValueError(f"{attribute.name} must be an HTTP status, got {value}")


def _nonempty(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value:
        raise ValueError(f"{attribute.name} must not be empty")


@attrs.frozen(kw_only=True)
class RequestRecord:
    """One finished request in the request log: who asked what of which backend, when,
    with what outcome and how many tokens; never a credential.

    The driver builds it from the core's `LogEntry` (the decision: route, status, user,
    endpoint, usage, error code) plus what only the edge knows: its clocks (received,
    first byte, done), its byte counters, the client's address, the identity provider
    that answered and, when capture is on, the capped prompt and response.  The mapping
    from `LogEntry` is the integration's job; this class does not import the core.

    `id` is the `request_log_id` the seed contract hands to `submit_streaming_task`;
    `request_id` is the HTTP request id (`X-Request-ID`).  Times are timezone-aware and
    kept in UTC.  Token counts are None when unknown; `tokens_estimated` says the gateway
    estimated them because the backend reported no usage.  `cancelled` says the client
    left before the answer was complete; `detail` is the core's account of a
    failure (at most `DETAIL_LIMIT` characters).
    """

    id: str = attrs.field(validator=_nonempty)
    request_id: str
    received_at: datetime = attrs.field(validator=_aware)
    first_byte_at: datetime | None = attrs.field(default=None, validator=_aware)
    done_at: datetime | None = attrs.field(default=None, validator=_aware)
    route: str
    status: int = attrs.field(validator=_status)
    streamed: bool = False
    username: str | None = None
    identity_provider: str | None = None
    cluster: str | None = None
    framework: str | None = None
    model: str | None = None
    endpoint_slug: str | None = None
    error_code: str | None = None
    backend_task_id: str | None = None
    prompt_tokens: int | None = attrs.field(default=None, validator=_count)
    completion_tokens: int | None = attrs.field(default=None, validator=_count)
    total_tokens: int | None = attrs.field(default=None, validator=_count)
    tokens_estimated: bool = False
    bytes_in: int = attrs.field(default=0, validator=_count)
    bytes_out: int = attrs.field(default=0, validator=_count)
    client_address: str | None = None
    prompt: str | None = attrs.field(default=None, converter=_captured)
    response: str | None = attrs.field(default=None, converter=_captured)
    cancelled: bool = False
    detail: str | None = attrs.field(default=None, converter=_detail)
