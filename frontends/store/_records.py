"""The request log's record: one finished request, as the store keeps it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
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


# Converters: most records have none of these texts, so None is passed on at once.
def _captured(value: str | None) -> str | None:
    return None if value is None else capture(value, CAPTURE_CEILING)


def _detail(value: str | None) -> str | None:
    return None if value is None else capture(value, DETAIL_LIMIT)


def _aware(name: str, value: datetime | None) -> None:
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {value!r}")


def _count(name: str, value: int | None) -> None:
    if value is not None and not 0 <= value <= _INT64_MAX:
        raise ValueError(f"{name} must be a count from 0 to 2**63-1, got {value}")


def _status(name: str, value: int) -> None:
    if not 100 <= value <= 599:
        raise ValueError(f"{name} must be an HTTP status, got {value}")


def _nonempty(name: str, value: str) -> None:
    if not value:
        raise ValueError(f"{name} must not be empty")


# Each checked field and its rule, in field order (the first to fail is the one named).
_RULES: tuple[tuple[str, Callable[[str, Any], None]], ...] = (
    ("id", _nonempty),
    ("received_at", _aware),
    ("first_byte_at", _aware),
    ("done_at", _aware),
    ("status", _status),
    ("prompt_tokens", _count),
    ("completion_tokens", _count),
    ("total_tokens", _count),
    ("bytes_in", _count),
    ("bytes_out", _count),
)


def _refuse(record: object) -> None:
    """Each rule of `_RULES` in turn: raises the first one's error."""
    for name, rule in _RULES:
        rule(name, getattr(record, name))


def _checked_post_init() -> Callable[[Any], None]:
    """An `__attrs_post_init__` passing a record whose values plainly keep `_RULES` (a
    `datetime` in UTC, as the gateway makes them; counts in range) in one compiled
    expression, and handing any other to `_refuse`, which checks each rule and names the
    field that breaks one.  The same guarantee as a validator per field, for less
    (`checked` in the core does the same for the core's records)."""
    tests: list[str] = []
    for name, rule in _RULES:
        if rule is _nonempty:
            tests.append(f"self.{name}")
        elif rule is _status:
            tests.append(f"100 <= self.{name} <= 599")
        elif rule is _count:
            tests.append(f"((v := self.{name}) is None or 0 <= v <= {_INT64_MAX})")
        elif rule is _aware:
            tests.append(
                f"((v := self.{name}) is None or v.__class__ is _datetime and v.tzinfo is _UTC)"
            )
        else:  # pragma: no cover - every rule above has its test
            raise AssertionError(rule)
    scope: dict[str, Any] = {"_refuse": _refuse, "_datetime": datetime, "_UTC": UTC}
    code = "\n".join(
        [
            "def __attrs_post_init__(self):",
            f"    if not ({' and '.join(tests)}):",
            "        _refuse(self)",
        ]
    )
    exec(code, scope)  # our own text, built from the field names above
    post_init: Callable[[Any], None] = scope["__attrs_post_init__"]
    return post_init


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

    id: str
    request_id: str
    received_at: datetime
    first_byte_at: datetime | None = None
    done_at: datetime | None = None
    route: str
    status: int
    streamed: bool = False
    username: str | None = None
    identity_provider: str | None = None
    cluster: str | None = None
    framework: str | None = None
    model: str | None = None
    endpoint_slug: str | None = None
    error_code: str | None = None
    backend_task_id: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    tokens_estimated: bool = False
    bytes_in: int = 0
    bytes_out: int = 0
    client_address: str | None = None
    prompt: str | None = attrs.field(default=None, converter=_captured)
    response: str | None = attrs.field(default=None, converter=_captured)
    cancelled: bool = False
    detail: str | None = attrs.field(default=None, converter=_detail)

    # The value rules (`_RULES`), checked as one expression: one is made per request.
    __attrs_post_init__ = _checked_post_init()
