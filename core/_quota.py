"""Quota admission: what a request must reserve before its call, and the ledger that says
whether it may.

Theory of operation
-------------------
Three limits, each over a sliding window of one minute:

* `tpm_model` — tokens per minute for one endpoint's model, all users together;
* `tpm_user` — tokens per minute for one user on that endpoint;
* `requests_per_minute_per_user` — requests per minute for one user, all models.

A request reserves, atomically and all at once, one amount per limit that applies: for
the token limits, an estimate of its prompt plus the most it may generate (`max_tokens`,
or a default when absent); for the request limit, 1.  When it ends, each token
reservation is *settled* to the tokens really used (the backend's `usage`, or the
gateway's estimate), so a request that asked for 4,096 tokens and used 90 holds 90.  A
reservation never settled (a crashed process) simply leaves the window after a minute.
Because reserving is one check-and-record step, concurrent requests can never overshoot:
there is no gap between looking at the counter and adding to it.

`plan` (which reservations a request needs) and `Ledger` (the arithmetic of the sliding
window, for the in-process counter) are pure; time enters as milliseconds the edge
passes in.  The Redis counter runs the same arithmetic inside one server-side script,
so several replicas share one ledger.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs

from core._errors import ClientError
from core._records import EndpointRecord, Identity, checked, non_negative

__all__ = [
    "WINDOW_MS",
    "Admission",
    "Ledger",
    "Limit",
    "QuotaPolicy",
    "Refusal",
    "Reservation",
    "estimate_prompt_tokens",
    "plan",
    "quota_refusal",
    "user_tokens_key",
]

WINDOW_MS = 60_000


class Limit(enum.Enum):
    """Which limit a reservation counts against; the value is the setting's name."""

    MODEL_TOKENS = "tpm_model"
    USER_TOKENS = "tpm_user"
    USER_REQUESTS = "requests_per_minute_per_user"

    @property
    def counts_tokens(self) -> bool:
        return self is not Limit.USER_REQUESTS


def _positive(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{attribute.name} must be a positive integer, got {value!r}")


def _non_negative(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{attribute.name} must be an integer >= 0, got {value!r}")


@attrs.frozen(kw_only=True)
class QuotaPolicy:
    """The gateway-wide quota settings (fixtures give the per-endpoint token limits).

    `requests_per_minute_per_user` 0 disables that limit.  `default_max_tokens` is what a
    request without `max_tokens` is assumed to generate at most, for its reservation.
    `shares` is how many processes count the same limits apart from each other (`serve
    --workers N` without a Redis they share) and `share_index` which of them this is:
    each holds its part of every limit (`limit // shares`, the first `limit % shares`
    one more), so that all of them together never admit beyond a limit; a skewed load
    may be refused a little early, never let through late.
    """

    requests_per_minute_per_user: int = attrs.field(default=0, validator=_non_negative)
    default_max_tokens: int = attrs.field(default=1024, validator=_positive)
    shares: int = attrs.field(default=1, validator=_positive)
    share_index: int = attrs.field(default=0, validator=_non_negative)

    def __attrs_post_init__(self) -> None:
        if self.share_index >= self.shares:
            raise ValueError(f"share_index {self.share_index} is not below shares {self.shares}")

    def part(self, limit: int) -> int:
        """This process's part of `limit` (all of it when it is the only one counting)."""
        whole, left = divmod(limit, self.shares)
        return whole + (1 if self.share_index < left else 0)


# What a `Reservation` whose counts are not all plain non-negative ints goes through.
_check_reservation = checked(
    non_negative("amount", "capacity", "configured"),
    amount=int,
    capacity=int,
    configured=int,
)


@attrs.frozen(kw_only=True)
class Reservation:
    """One amount to hold against one limit's counter (`key`) of `capacity` per window
    (0 when this process's part of a shared limit is nothing: it admits none).

    `configured` is the limit as the operator set it, which a refusal names: under
    `serve --workers N` without Redis `capacity` is only this process's part of it, a
    figure the client could not make sense of."""

    limit: Limit
    key: str
    amount: int
    capacity: int
    configured: int = attrs.field()

    @configured.default
    def _whole_capacity(self) -> int:
        return self.capacity

    def __attrs_post_init__(self) -> None:
        """The three counts are non-negative ints (not bools).  A request that quotas
        apply to makes two or three of these, and the counts are nearly always plain
        ints: those are passed by two type tests and three comparisons, anything else
        goes through the full check, which names the field at fault."""
        amount, capacity, configured = self.amount, self.capacity, self.configured
        if (
            amount.__class__ is int
            and capacity.__class__ is int
            and configured.__class__ is int
            and amount >= 0
            and capacity >= 0
            and configured >= 0
        ):
            return
        _check_reservation(self)


@attrs.frozen(kw_only=True)
class Refusal:
    """A reservation that did not fit: which limit, and when to try again (seconds)."""

    limit: Limit
    retry_after: int = attrs.field(validator=_non_negative)


Admission = tuple[Reservation, ...] | Refusal


# Structure and media, not text the model reads as tokens (an image's data URI would
# otherwise count as megabytes of prompt).
_NOT_TEXT = frozenset({"role", "type", "image_url", "input_audio", "file", "video_url"})


def _text_length(value: Any) -> int:
    """Characters of text in a prompt/messages/input value, however nested.

    Plain loops, and text counted where it is met rather than by a call of its own: it
    runs on every request that quotas apply to (a generator per list and per object, and
    a call per string, were most of its cost)."""
    if isinstance(value, str):
        return len(value)
    total = 0
    if isinstance(value, list):
        for item in value:
            total += len(item) if isinstance(item, str) else _text_length(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key not in _NOT_TEXT:
                total += len(item) if isinstance(item, str) else _text_length(item)
    elif isinstance(value, int) and not isinstance(value, bool):
        total = 4  # a token id
    return total


_PROMPT_FIELDS = ("messages", "prompt", "input", "instructions", "system")
# The most a request may generate, by each API's name for it.
_MAX_TOKENS_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


def estimate_prompt_tokens(body: Mapping[str, Any]) -> int:
    """A prompt's tokens, estimated as one per four characters (OpenAI's rule of thumb)
    of its text; used only where the backend reports nothing, or before it can.  The
    Responses API's `instructions` and the Messages API's `system` are prompt too."""
    text = 0
    for field in _PROMPT_FIELDS:
        value = body.get(field)
        if value is not None:
            text += _text_length(value)
    return max(1, (text + 3) // 4)


def _max_tokens(body: Mapping[str, Any], default: int) -> int:
    for field in _MAX_TOKENS_FIELDS:
        value = body.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return default


def user_tokens_key(endpoint: EndpointRecord, identity: Identity) -> str:
    """The counter of one user's tokens on one endpoint (`tpm_user`)."""
    return f"tpm_user:{endpoint.endpoint_slug}:{identity.username}"


def plan(
    endpoint: EndpointRecord,
    identity: Identity,
    body: Mapping[str, Any],
    policy: QuotaPolicy,
    *,
    embeddings: bool = False,
    prompt_tokens: int | None = None,
) -> tuple[Reservation, ...]:
    """The reservations this request must make; empty when no limit applies.
    `prompt_tokens`: `estimate_prompt_tokens(body)` when the caller has it already."""
    tokens = estimate_prompt_tokens(body) if prompt_tokens is None else prompt_tokens
    if not embeddings:
        tokens += _max_tokens(body, policy.default_max_tokens)
    slug, user = endpoint.endpoint_slug, identity.username
    limits = (
        (Limit.MODEL_TOKENS, f"tpm_model:{slug}", tokens, endpoint.tpm_model),
        (Limit.USER_TOKENS, user_tokens_key(endpoint, identity), tokens, endpoint.tpm_user),
        (Limit.USER_REQUESTS, f"rpm_user:{user}", 1, policy.requests_per_minute_per_user),
    )
    return tuple(
        Reservation(
            limit=limit,
            key=key,
            amount=amount,
            capacity=policy.part(capacity),
            configured=capacity,
        )
        for limit, key, amount, capacity in limits
        if capacity  # 0 disables a limit
    )


# One reservation's entry in a window, as the window hands it out: (made at (ms), amount).
_Entry = tuple[int, int]


class _Window:
    """One key's entries in the order they were made (so the oldest leave first), and
    their running total (so a reserve costs the entries leaving, not a scan of all).

    Kept in plain dicts of ints and strings, each entry under a sequence number: made at,
    amount, and the reservation id both ways.  Such dicts hold nothing the garbage
    collector tracks, so it never walks them.  Entries stay a minute: at a thousand
    requests a second a process holds some hundred thousand, and as objects in a tracked
    container (lists, or tuples in an `OrderedDict`) every full collection visited each
    of them, for tens of milliseconds while every request waited.  The oldest entry is
    found by walking the sequence numbers up from the last one that left, each number
    once."""

    __slots__ = ("_amounts", "_ats", "_head", "_ids", "_next", "_seqs", "total")

    def __init__(self) -> None:
        self._ats: dict[int, int] = {}  # sequence number -> made at (ms)
        self._amounts: dict[int, int] = {}  # sequence number -> amount held
        self._seqs: dict[str, int] = {}  # reservation id -> sequence number
        self._ids: dict[int, str] = {}  # sequence number -> reservation id
        self._head = 0  # no live entry has a smaller sequence number
        self._next = 0
        self.total = 0

    def __bool__(self) -> bool:
        return bool(self._seqs)

    def expire(self, now_ms: int) -> None:
        horizon = now_ms - WINDOW_MS
        ats, seq, end = self._ats, self._head, self._next
        while seq < end:
            at = ats.get(seq)
            if at is not None:
                if at > horizon:
                    break
                self._forget(seq)
            seq += 1
        self._head = seq

    def put(self, reservation_id: str, at: int, amount: int) -> None:
        """Hold `amount` for `reservation_id`, made at `at`: the newest entry (one it
        held before is given back first)."""
        previous = self._seqs.get(reservation_id)
        if previous is not None:
            self._forget(previous)
        seq = self._next
        self._next = seq + 1
        self._ats[seq] = at
        self._amounts[seq] = amount
        self._seqs[reservation_id] = seq
        self._ids[seq] = reservation_id
        self.total += amount

    def settle(self, reservation_id: str, used: int) -> None:
        seq = self._seqs.get(reservation_id)
        if seq is not None:
            self.total += used - self._amounts[seq]
            self._amounts[seq] = used

    def pop(self, reservation_id: str) -> None:
        seq = self._seqs.get(reservation_id)
        if seq is not None:
            self._forget(seq)

    def oldest_first(self) -> Iterator[_Entry]:
        ats, amounts = self._ats, self._amounts
        for seq in range(self._head, self._next):
            at = ats.get(seq)
            if at is not None:
                yield at, amounts[seq]

    def _forget(self, seq: int) -> None:
        del self._ats[seq]
        self.total -= self._amounts.pop(seq)
        del self._seqs[self._ids.pop(seq)]


@attrs.define
class Ledger:
    """The sliding-window counters of one process: reserve all-or-nothing, settle, forget.

    Each key holds the entries of the last minute keyed by a reservation id the caller
    chooses.  `reserve` admits only if, for every reservation, the entries still inside
    the window plus its amount fit its capacity; then it records all of them.  Time must
    not run backwards (the in-process counters use the monotonic clock); an earlier
    `now_ms` than one already seen is read as that one.
    """

    _keys: dict[str, _Window] = attrs.field(factory=dict)
    _now_ms: int = 0

    def _window(self, key: str, now_ms: int) -> _Window | None:
        window = self._keys.get(key)
        if window is None:
            return None
        window.expire(now_ms)
        if not window:
            del self._keys[key]
            return None
        return window

    def _clock(self, now_ms: int) -> int:
        self._now_ms = max(self._now_ms, now_ms)
        return self._now_ms

    def used(self, key: str, now_ms: int) -> int:
        """What the key holds inside the window ending now."""
        window = self._window(key, self._clock(now_ms))
        return 0 if window is None else window.total

    def reserve(
        self, reservation_id: str, reservations: Sequence[Reservation], now_ms: int
    ) -> Refusal | None:
        """Record every reservation under `reservation_id`, or none and say which limit
        refused (the first in order) and in how many seconds enough of it frees up.

        The windows the check finds (or makes) are the ones it then records in: each
        key is looked up once per reserve."""
        now_ms = self._clock(now_ms)
        found: list[_Window] = []
        for wanted in reservations:
            window = self._window(wanted.key, now_ms)
            held = 0 if window is None else window.total
            if held + wanted.amount > wanted.capacity:
                entries = () if window is None else window.oldest_first()
                return Refusal(
                    limit=wanted.limit,
                    retry_after=_retry_after(entries, wanted, held, now_ms),
                )
            if window is None:  # made only for a reserve that is admitted
                window = _Window()
            found.append(window)
        keys = self._keys
        for wanted, window in zip(reservations, found, strict=True):
            if not window:  # new (or emptied by the same reserve's expiry)
                keys[wanted.key] = window
            window.put(reservation_id, now_ms, wanted.amount)
        return None

    def settle(self, reservation_id: str, keys: Iterable[str], used: int) -> None:
        """Replace what `reservation_id` holds on each key by `used` (the real tokens)."""
        used = max(0, used)
        for key in keys:
            window = self._keys.get(key)
            if window is not None:
                window.settle(reservation_id, used)

    def release(self, reservation_id: str, keys: Iterable[str]) -> None:
        """Give back everything `reservation_id` holds (a request refused before its call)."""
        for key in keys:
            window = self._keys.get(key)
            if window is None:
                continue
            window.pop(reservation_id)
            if not window:
                del self._keys[key]


def _retry_after(entries: Iterable[_Entry], wanted: Reservation, held: int, now_ms: int) -> int:
    """Seconds until enough of the window's oldest entries leave for `wanted` to fit (at
    least 1; the whole window when it could never fit).  `entries` come oldest first."""
    if wanted.amount > wanted.capacity:
        return WINDOW_MS // 1000
    need = held + wanted.amount - wanted.capacity
    freed = 0
    for entry in entries:
        at, amount = entry
        freed += amount
        if freed >= need:
            return max(1, -(-(at + WINDOW_MS - now_ms) // 1000))
    return WINDOW_MS // 1000


_LIMIT_WORDS = {
    Limit.MODEL_TOKENS: ("tokens", "tokens per minute for this model (tpm_model)"),
    Limit.USER_TOKENS: ("tokens", "tokens per minute per user for this model (tpm_user)"),
    Limit.USER_REQUESTS: ("requests", "requests per minute per user"),
}


def quota_refusal(refusal: Refusal, reservations: Sequence[Reservation], model: str) -> ClientError:
    """OpenAI's 429 for a limit that did not fit: `rate_limit_exceeded`, the limit named,
    and `Retry-After` in seconds."""
    kind, words = _LIMIT_WORDS[refusal.limit]
    configured = next((r.configured for r in reservations if r.limit is refusal.limit), 0)
    return ClientError(
        f"Rate limit reached for model '{model}' on {words}: limit {configured}. "
        f"Please try again in {refusal.retry_after}s.",
        status=429,
        type=kind,
        code="rate_limit_exceeded",
        headers=(("retry-after", str(refusal.retry_after)),),
    )
