"""Watching a relayed server-sent-event stream without changing a byte of it.

The gateway forwards each backend event as soon as it is whole; it needs to know whether
the stream finished properly (`data: [DONE]`), whether the backend already reported an
error in-band, the `usage` of the last chunk that carried one, and whether every event
is what OpenAI's clients parse it as: a JSON object (or `[DONE]`).  The first event that
is not (`invalid`) ends the stream with an error instead of reaching a client, whose
parser would fail on it with an error that blames nobody.  Chunks split events
and even lines anywhere, so the decoder keeps the unfinished tail between feeds
(line rules from the WHATWG event-stream format: LF, CR or CRLF end a line; a blank
line ends an event; `data:` lines join with LF).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import attrs

from core._dialects import StreamRules
from core._records import Usage

__all__ = [
    "SSEDecoder",
    "SSEFramer",
    "SSEMonitor",
    "error_event",
    "is_usage_only",
    "nesting_depth",
]

_MAX_TAIL = 1 << 20  # an event larger than this is not one we need to understand
# OpenAI's chunks nest a handful of levels; anything deeper is not a chunk we need to read,
# and parsing it would only spend the stack (a 200,000-deep `usage` raises RecursionError).
_MAX_DEPTH = 64
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")

# A blank line ends an event: two line ends in a row, CRLF read as one line end.
_EVENT_END = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r(?!\n)|\n)")
# CR and LF as the ints `in` takes for one byte of a `bytes`: a one-byte `bytes` needle
# is first tried as an int, and the TypeError that makes (formatted, then dropped) costs
# several times the search, at every event.
_CR, _LF = ord("\r"), ord("\n")


def nesting_depth(text: str) -> int:
    """How deeply the JSON text nests arrays and objects (brackets inside strings aside)."""
    depth = deepest = 0
    for bracket in _BRACKET.findall(_STRING.sub("", text)):
        depth = depth + 1 if bracket in "[{" else depth - 1
        deepest = max(deepest, depth)
    return deepest


@attrs.define
class SSEDecoder:
    """Bytes in, the `data` of each completed event out; nothing else is kept."""

    _tail: bytes = b""
    _data: list[str] = attrs.field(factory=list)

    @property
    def pending(self) -> bool:
        """True while a line or an event has begun and not been ended."""
        return bool(self._tail) or bool(self._data)

    def feed(self, chunk: bytes) -> list[str]:
        lines = (self._tail + chunk).splitlines(keepends=True)
        # A last line not ended by LF is unfinished, or a CR whose LF is in the next chunk.
        self._tail = lines.pop() if lines and not lines[-1].endswith(b"\n") else b""
        if len(self._tail) > _MAX_TAIL:
            self._tail = b""
        return [data for line in lines if (data := self._line(line.rstrip(b"\r\n"))) is not None]

    def finish(self) -> list[str]:
        """The stream closed: an event not yet ended by a blank line still counts."""
        events = [
            data for line in self._tail.splitlines() if (data := self._line(line)) is not None
        ]
        self._tail = b""
        last = self._dispatch()
        return events if last is None else [*events, last]

    def _line(self, line: bytes) -> str | None:
        if not line:
            return self._dispatch()
        name, _, value = line.partition(b":")
        if name == b"data":
            self._data.append(value.removeprefix(b" ").decode("utf-8", "replace"))
        return None

    def _dispatch(self) -> str | None:
        if not self._data:
            return None
        data = "\n".join(self._data)
        self._data = []
        return data


def _lone_data(event: bytes) -> str | None:
    """The data of an event that is one `data:` line and its blank line (LF-ended, no
    CR anywhere), else None (the decoder reads everything else)."""
    if event.startswith(b"data:") and event.endswith(b"\n\n") and _CR not in event:
        value = event[5:-2]
        if _LF not in value:
            return value.removeprefix(b" ").decode("utf-8", "replace")
    return None


# The decoder's scanner itself (what `raw_decode` calls): it raises StopIteration where
# no value starts, and a ValueError for a value that is not JSON.
# (Set in the decoder's `__init__`, so the type stubs do not list it.)
_SCAN: Callable[[str, int], tuple[object, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _json(text: str) -> object:
    """`json.loads(text)`, with its layers skipped for the usual text: a value starting at
    its first character, followed by nothing but JSON whitespace; anything else is
    left to `json.loads` itself, so what fails and how is the same."""
    try:
        value, end = _SCAN(text, 0)
    except (StopIteration, ValueError):
        return json.loads(text)
    if end != len(text) and text[end:].strip(" \t\n\r"):
        return json.loads(text)
    return value


@attrs.define
class SSEMonitor:
    """What the gateway learns from a relayed stream, without changing a byte of it.

    `invalid` says what was wrong with the first event that is neither `[DONE]` nor a
    JSON object (Python's reading of JSON, as the official Python client's); an event
    nested too deeply to parse at all is relayed unread rather than judged.
    `usage_only` says whether what the last `feed` completed was exactly one event, the
    usage chunk `include_usage` adds (so a relay of whole events need not parse it again).
    `rules` say how the API ends its streams and where it reports usage (chat and
    completions: `[DONE]` and a top-level `usage`; see `core._dialects`).  Usage reported
    in parts (a Messages stream's input first, output last) is put together.
    """

    done: bool = False
    errored: bool = False
    events: int = 0
    usage: Usage | None = None
    invalid: str | None = None
    usage_only: bool = False
    rules: StreamRules = attrs.field(factory=StreamRules)
    response_id: str | None = None  # a Responses stream's, from its `response.created`
    _decoder: SSEDecoder = attrs.field(factory=SSEDecoder)

    @property
    def pending(self) -> bool:
        return self._decoder.pending

    def feed(self, chunk: bytes) -> None:
        data = None if self._decoder.pending else _lone_data(chunk)
        if data is not None:
            # What the decoder would make of it, read off directly (a relay feeds whole
            # events, and nearly every one is a single `data:` line).
            self._observe(data)
            return
        datas = self._decoder.feed(chunk)
        for data in datas:
            self._observe(data)
        self.usage_only = self.usage_only and len(datas) == 1

    def finish(self) -> None:
        for data in self._decoder.finish():
            self._observe(data)

    def _observe(self, data: str) -> None:
        self.usage_only = False
        if not data:
            return  # an empty data buffer dispatches no event (WHATWG), so none to judge
        self.events += 1
        # An event that opens an object is no `[DONE]`: only the others are stripped.
        if data[0] != "{" and data.strip() == "[DONE]":
            self.done = True
            return
        try:
            payload = _json(data)
        except RecursionError:
            return  # too deep to read (a 200,000-level `usage`): relayed, not parsed
        except ValueError:
            self._refuse(f"event {self.events} is not JSON")
            return
        if not isinstance(payload, dict):
            self._refuse(f"event {self.events} is JSON but not an object")
            return
        get = payload.get
        rules = self.rules
        kind = get("type")
        if isinstance(kind, str):  # a backend's `"type": []` is no kind; chat's have none
            if kind in rules.failed:
                self.errored = True
            if kind in rules.finished:
                self.done = True
            if kind == rules.created:
                self._created(payload)
        if isinstance(get("error"), dict):
            self.errored = True
        top = reported = get("usage")
        for key in rules.usage_under:
            nested = get(key)
            if not isinstance(reported, dict) and isinstance(nested, dict):
                reported = nested.get("usage")
        if isinstance(reported, dict):
            usage = Usage.from_json(reported)
            if usage is not None:
                self.usage = usage if self.usage is None else self.usage.then(usage)
        self.usage_only = isinstance(top, dict) and get("choices") == []

    def _refuse(self, problem: str) -> None:
        if self.invalid is None:
            self.invalid = problem

    def _created(self, payload: dict[str, object]) -> None:
        response = payload.get("response")
        ident = response.get("id") if isinstance(response, dict) else None
        if isinstance(ident, str) and ident:
            self.response_id = ident


@attrs.define
class SSEFramer:
    """Bytes in, each completed event's exact bytes out (its ending blank line included),
    so a relay can leave one event out and keep every other byte as the backend sent it."""

    _tail: bytes = b""

    @property
    def tail(self) -> bytes:
        """What has arrived of an event not yet ended."""
        return self._tail

    @property
    def oversized(self) -> bool:
        """An event has grown past any chunk a backend sends (1 MiB) without ending."""
        return len(self._tail) > _MAX_TAIL

    def feed(self, chunk: bytes) -> list[bytes]:
        data = self._tail + chunk
        events: list[bytes] = []
        if _CR not in data:
            # Only LFs: an event ends at each LF LF, found by `bytes.find` (the rule below,
            # for the usual stream, without the regular expression).
            start = 0
            at = data.find(b"\n\n", max(0, len(self._tail) - 1))
            while at >= 0:
                events.append(data[start : at + 2])
                start = at + 2
                at = data.find(b"\n\n", start)
            self._tail = data[start:]
            return events
        # An event's end may begin in the last 3 bytes already held; none begins earlier.
        resume = max(0, len(self._tail) - 3)
        start = 0
        for end in _EVENT_END.finditer(data, resume):
            if end.end() == len(data) and data.endswith(b"\r"):
                break  # a CR last: its LF may be in the next chunk, and belongs to this event
            events.append(data[start : end.end()])
            start = end.end()
        self._tail = data[start:]
        return events

    def flush(self) -> bytes:
        """The unfinished rest, handed over as it is (the stream ended)."""
        tail, self._tail = self._tail, b""
        return tail


def is_usage_only(event: bytes) -> bool:
    """Whether an event is the usage chunk `include_usage` adds (no choices, a usage)."""
    if b'"usage"' not in event:
        return False
    decoder = SSEDecoder()
    datas = [*decoder.feed(event), *decoder.finish()]
    if len(datas) != 1 or nesting_depth(datas[0]) > _MAX_DEPTH:
        return False
    try:
        payload = json.loads(datas[0])
    except ValueError:
        return False
    return (
        isinstance(payload, dict)
        and payload.get("choices") == []
        and isinstance(payload.get("usage"), dict)
    )


def error_event(body: bytes, *, after_partial: bool = False) -> bytes:
    """An OpenAI error object as one SSE event; the official clients raise on it.

    After a stream cut mid-event, blank lines first end the fragment, so the error
    arrives as an event of its own rather than glued onto half a line.
    """
    return (b"\n\n" if after_partial else b"") + b"data: " + body + b"\n\n"
