"""Comparing a replayed answer with the recorded one: differences fail, notes inform."""

from __future__ import annotations

import json
from collections.abc import Sequence

from frontends.replay.cases import Case, header
from transports import BackendRequest
from transports.cassette import RecordedResponse, redact_headers, split_sse

__all__ = ["CLIENT_READ_HEADERS", "differences", "notes"]

# Backend headers an OpenAI client reads; the report notes the ones the gateway drops.
CLIENT_READ_HEADERS = (
    "x-request-id",
    "openai-processing-ms",
    "openai-version",
    "openai-organization",
    "openai-project",
    "x-ratelimit-*",
)


def _short(data: bytes, at: int) -> str:
    start = max(0, at - 20)
    return repr(data[start : at + 40])


def _body_difference(expected: bytes, actual: bytes, what: str) -> str | None:
    if expected == actual:
        return None
    at = next(
        (i for i, (x, y) in enumerate(zip(expected, actual, strict=False)) if x != y),
        min(len(expected), len(actual)),
    )
    same_json = _json_equal(expected, actual)
    kind = " (equal as JSON)" if same_json else ""
    return (
        f"{what} differs{kind} at byte {at} of {len(expected)} recorded / {len(actual)} "
        f"replayed: recorded {_short(expected, at)}, gateway {_short(actual, at)}"
    )


def _json_equal(a: bytes, b: bytes) -> bool:
    try:
        return bool(json.loads(a) == json.loads(b))
    except (ValueError, RecursionError):
        return False


def _error_type(body: bytes) -> object:
    try:
        return json.loads(body)["error"]["type"]
    except (ValueError, KeyError, TypeError):
        return None


def differences(case: Case, actual: RecordedResponse, *, reached_backend: bool = True) -> list[str]:
    expected = case.expected
    found: list[str] = []
    if not case.strict_headers and not reached_backend and expected.status >= 400:
        # The gateway's own validation answered before the backend was asked: only the
        # status and the error type must equal the recorded ones; the wording is ours.
        if expected.status != actual.status:
            found.append(f"status: recorded {expected.status}, gateway {actual.status}")
        was, now = _error_type(expected.content), _error_type(actual.content)
        if was != now:
            found.append(f"error type: recorded {was!r}, gateway {now!r}")
        return found
    if expected.status != actual.status:
        found.append(f"status: recorded {expected.status}, gateway {actual.status}")
    if case.strict_headers:
        # The record's secret headers were redacted when written; so are the replay's.
        if tuple(expected.headers) != redact_headers(actual.headers):
            found.append(
                f"headers: recorded {list(expected.headers)}, gateway {list(actual.headers)}"
            )
        if expected.is_stream != actual.is_stream:
            found.append(f"stream: recorded {expected.is_stream}, gateway {actual.is_stream}")
        elif expected.chunks is not None and actual.chunks is not None:
            was = [c.data for c in expected.chunks]
            now = [c.data for c in actual.chunks]
            for index in range(max(len(was), len(now))):
                a = was[index] if index < len(was) else b""
                b = now[index] if index < len(now) else b""
                if a != b:
                    found.append(
                        f"stream event {index} ({len(was)} recorded, {len(now)} replayed): "
                        f"recorded {a[:80]!r}, gateway {b[:80]!r}"
                    )
                    break
            if expected.cancelled != actual.cancelled:
                found.append(
                    f"cancelled: recorded {expected.cancelled}, gateway {actual.cancelled}"
                )
        else:
            body = _body_difference(expected.body, actual.body, "body")
            found.extend([body] if body else [])
        return found
    was_type = expected.header("content-type")
    now_type = actual.header("content-type")
    if (was_type or "").lower() != (now_type or "").lower():
        found.append(f"content-type: recorded {was_type!r}, gateway {now_type!r}")
    body = _body_difference(expected.content, actual.content, "body")
    if body and expected.is_stream:
        events = split_sse(expected.content), split_sse(actual.content)
        index = next(
            (i for i, (x, y) in enumerate(zip(*events, strict=False)) if x != y),
            min(map(len, events)),
        )
        body += f" (first differing SSE event: #{index} of {len(events[0])})"
    found.extend([body] if body else [])
    return found


def notes(case: Case, actual: RecordedResponse, sent: Sequence[BackendRequest]) -> list[str]:
    found: list[str] = []
    if case.strict_headers:
        return found
    dropped = []
    for name in CLIENT_READ_HEADERS:

        def has(headers: Sequence[tuple[str, str]], name: str = name) -> bool:
            if name.endswith("*"):
                return any(k.lower().startswith(name[:-1]) for k, _ in headers)
            return header(headers, name) is not None

        if has(case.expected.headers) and not has(actual.headers):
            dropped.append(name)
    if dropped:
        found.append("backend headers not forwarded: " + ", ".join(dropped))
    recorded = case.exchanges[0].request if case.exchanges else None
    if recorded is not None and not sent:
        found.append("the gateway made no backend call")
    for request in sent[:1]:
        if recorded is not None and request.body != recorded.body:
            equal = _json_equal(request.body, recorded.body)
            found.append(
                "backend request body re-serialised"
                + (" (equal as JSON)" if equal else " (NOT equal as JSON)")
                + f": {len(recorded.body)} bytes recorded, {len(request.body)} sent"
            )
    return found
