"""`ReplayTransport`: answers backend calls from recorded exchanges, with no network.

Theory of operation.  Each request is matched against the records in recorded order by
four fields, compared in this order: method, URL path, URL query, body.  Bodies are
compared byte for byte when the recording was made by this gateway (`bodies="bytes"`,
the default for our own JSON Lines cassettes): the gateway sends the client's bytes, so
any difference is one.  Bodies recorded elsewhere (go-vcr) are compared as JSON when
both parse (key order and spacing do not matter; `1` and `true` differ), else as bytes.
Headers, scheme and host never take part: the replay fixture may point an adaptor
anywhere, and secrets were redacted anyway.

The first unused record that matches answers, and is then used up (`reuse=True` lets
every record answer any number of times).  When nothing matches, `ReplayMismatch` is
raised, naming the first field that differs from the *nearest* record (the one that
matched longest in the order above), such as `body field messages[0].content`.

`ReplayMismatch` is deliberately not a `TransportError`: a cassette that does not fit
the request is a broken test harness, not a backend outage, so adaptors (which turn
`TransportError` into 502/504 answers) do not catch it.  The gateway's driver still
turns any adaptor exception into a 502 for the client, so each mismatch is also kept
in `ReplayTransport.mismatches`, where a replay runner reports it as what it is.

A recorded failure replays as one: status 0 with `error` raises that `TransportError`
class; a stream recorded with `error` raises it after its chunks.  A stream yields each
recorded chunk as its own chunk, at its recorded time when `timing=True`.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import anyio
import attrs
from anyio.lowlevel import checkpoint

from transports._base import (
    BackendRequest,
    BackendResponse,
    ConnectError,
    ConnectTimeout,
    FirstByteTimeout,
    Headers,
    IdleTimeout,
    ProtocolError,
    Saturated,
    TotalTimeout,
    TransportError,
    TransportTimeout,
)
from transports.cassette import Exchange, RecordedResponse, load_cassette

__all__ = [
    "BodyMatch",
    "Difference",
    "ReplayMismatch",
    "ReplayStream",
    "ReplayTransport",
    "first_difference",
]

_ERRORS: dict[str, type[TransportError]] = {
    cls.__name__: cls
    for cls in (
        TransportError,
        ConnectError,
        TransportTimeout,
        ProtocolError,
        ConnectTimeout,
        FirstByteTimeout,
        IdleTimeout,
        TotalTimeout,
        Saturated,
    )
}
_FIELDS = ("method", "path", "query", "body")
_MISSING = object()


@attrs.frozen(kw_only=True)
class Difference:
    """The first field where a request and a record differ."""

    field: str  # "method", "path", "query", "body", or "body field a.b[0]"
    recorded: str
    sent: str

    @property
    def rank(self) -> int:
        """How far matching got: higher means nearer (body fields rank with `body`)."""
        return _FIELDS.index(self.field.split(" ")[0])

    def __str__(self) -> str:
        return f"{self.field}: recorded {self.recorded}, sent {self.sent}"


class ReplayMismatch(Exception):
    """A request that no record answers; not a `TransportError` (see the module doc)."""

    def __init__(self, message: str, *, difference: Difference | None = None) -> None:
        super().__init__(message)
        self.difference = difference


def _show(value: Any) -> str:
    if value is _MISSING:
        return "(absent)"
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def _json(body: bytes) -> Any:
    if not body.strip():
        return _MISSING
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return _MISSING


def _same_scalar(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def _json_difference(recorded: Any, sent: Any, path: str) -> tuple[str, Any, Any] | None:
    """The first (path, recorded, sent) where two JSON values differ, or None."""
    if isinstance(recorded, dict) and isinstance(sent, dict):
        for key in [*recorded, *(k for k in sent if k not in recorded)]:
            where = f"{path}.{key}" if path else str(key)
            found = _json_difference(recorded.get(key, _MISSING), sent.get(key, _MISSING), where)
            if found is not None:
                return found
        return None
    if isinstance(recorded, list) and isinstance(sent, list):
        for index in range(max(len(recorded), len(sent))):
            found = _json_difference(
                recorded[index] if index < len(recorded) else _MISSING,
                sent[index] if index < len(sent) else _MISSING,
                f"{path}[{index}]",
            )
            if found is not None:
                return found
        return None
    if isinstance(recorded, dict | list) or isinstance(sent, dict | list):
        return (path, recorded, sent) if type(recorded) is not type(sent) else None
    return None if _same_scalar(recorded, sent) else (path, recorded, sent)


BodyMatch = Literal["bytes", "json"]


def _body_difference(recorded: bytes, sent: bytes, bodies: BodyMatch) -> Difference | None:
    if recorded == sent:
        return None
    at = next(
        (i for i, (x, y) in enumerate(zip(recorded, sent, strict=False)) if x != y),
        min(len(recorded), len(sent)),
    )
    a, b = _json(recorded), _json(sent)
    if a is not _MISSING and b is not _MISSING:
        found = _json_difference(a, b, "")
        if found is not None:  # named by the JSON field, in either mode: easier to read
            where, was, now = found
            field = f"body field {where}" if where else "body"
            return Difference(field=field, recorded=_show(was), sent=_show(now))
        if bodies == "json":
            return None
        return Difference(
            field="body bytes",
            recorded=f"{len(recorded)} bytes",
            sent=f"the same JSON in other bytes (first difference at byte {at})",
        )
    return Difference(
        field="body",
        recorded=f"{len(recorded)} bytes",
        sent=f"{len(sent)} bytes (first difference at byte {at})",
    )


def first_difference(
    exchange: Exchange, request: BackendRequest, bodies: BodyMatch = "json"
) -> Difference | None:
    """None when `request` matches the record, else the first field that differs."""
    was, now = exchange.request, request
    if was.method != now.method:
        return Difference(field="method", recorded=was.method, sent=now.method)
    old, new = urlsplit(was.url), urlsplit(now.url)
    if (old.path.rstrip("/") or "/") != (new.path.rstrip("/") or "/"):
        return Difference(field="path", recorded=repr(old.path), sent=repr(new.path))
    if sorted(old.query.split("&")) != sorted(new.query.split("&")):
        return Difference(field="query", recorded=repr(old.query), sent=repr(new.query))
    return _body_difference(was.body, now.body, bodies)


class ReplayTransport:
    """A `Transport` whose answers are `exchanges`, matched as the module doc says."""

    def __init__(
        self,
        exchanges: Iterable[Exchange],
        *,
        reuse: bool = False,
        timing: bool = False,
        bodies: BodyMatch = "json",
    ) -> None:
        self._exchanges = tuple(exchanges)
        self._bodies = bodies
        self._used = [False] * len(self._exchanges)
        self._reuse = reuse
        self._timing = timing
        self.mismatches: list[ReplayMismatch] = []

    @classmethod
    def from_file(
        cls, path: Path | str, *, reuse: bool = False, timing: bool = False
    ) -> ReplayTransport:
        """Every exchange of a cassette (ours or go-vcr), conversations' ones included;
        bodies matched by bytes in our own recordings, as JSON in go-vcr's."""
        cassette = load_cassette(path)
        bodies: BodyMatch = "bytes" if cassette.format == "jsonl" else "json"
        return cls(cassette.all_exchanges(), reuse=reuse, timing=timing, bodies=bodies)

    @property
    def unused(self) -> tuple[Exchange, ...]:
        return tuple(e for e, used in zip(self._exchanges, self._used, strict=True) if not used)

    def _answer(self, request: BackendRequest) -> RecordedResponse:
        nearest: tuple[int, Difference] | None = None
        used_match: int | None = None
        for index, exchange in enumerate(self._exchanges):
            difference = first_difference(exchange, request, self._bodies)
            if difference is None:
                if self._used[index] and not self._reuse:
                    used_match = index if used_match is None else used_match
                    continue
                self._used[index] = True
                return exchange.response
            if nearest is None or difference.rank > nearest[1].rank:
                nearest = (index, difference)
        target = f"{request.method} {urlsplit(request.url).path}"
        if used_match is not None:
            mismatch = ReplayMismatch(
                f"no unused record matches {target}: record #{used_match} matches "
                "but was already used (replay with reuse=True to allow repeats)"
            )
        elif nearest is None:
            mismatch = ReplayMismatch(f"no record matches {target}: the cassette is empty")
        else:
            index, difference = nearest
            mismatch = ReplayMismatch(
                f"no record matches {target}; nearest is record #{index}, "
                f"differing first at {difference}",
                difference=difference,
            )
        self.mismatches.append(mismatch)
        raise mismatch

    async def send(self, request: BackendRequest) -> BackendResponse:
        response = self._answer(request)
        await checkpoint()
        _raise_recorded_failure(response)
        return BackendResponse(
            status=response.status, headers=response.headers, body=response.content
        )

    async def open_stream(self, request: BackendRequest) -> ReplayStream:
        response = self._answer(request)
        await checkpoint()
        _raise_recorded_failure(response)
        return ReplayStream(response, timing=self._timing)

    async def aclose(self) -> None:
        return None


def _raise_recorded_failure(response: RecordedResponse) -> None:
    if response.status == 0:
        error = _ERRORS.get(response.error or "", TransportError)
        raise error(f"replayed failure: {response.error or 'cancelled call'}")


class ReplayStream:
    """A `BackendStream` that yields each recorded chunk as its own chunk."""

    def __init__(self, response: RecordedResponse, *, timing: bool = False) -> None:
        self._response = response
        self._timing = timing
        self._consumed = False
        self.status: int = response.status
        self.headers: Headers = response.headers

    def _pieces(self) -> list[tuple[bytes, float]]:
        if self._response.chunks is None:
            return [(self._response.body, 0.0)] if self._response.body else []
        return [(c.data, c.at) for c in self._response.chunks]

    async def chunks(self) -> AsyncIterator[bytes]:
        if self._consumed:
            raise ProtocolError("the replayed stream was already read")
        self._consumed = True
        start = anyio.current_time()
        for data, at in self._pieces():
            if self._timing and not math.isclose(at, 0.0):
                await anyio.sleep(max(0.0, start + at - anyio.current_time()))
            else:
                await checkpoint()
            yield data
        if self._response.error is not None:
            raise _ERRORS.get(self._response.error, TransportError)("replayed stream failure")

    async def aread(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    async def aclose(self) -> None:
        self._consumed = True
