"""What differs between the APIs the gateway relays: error shapes and how streams end.

The gateway speaks OpenAI's dialect everywhere but on the Anthropic Messages route,
whose clients expect Anthropic's error object (`{"type": "error", "error": {"type",
"message"}}`) with the same status.  Every error is first made in OpenAI's shape (one
place: `core._errors.error_body`); `in_dialect` is the one place an error answer is
turned into the route's own dialect, so the request machine and the web app's error
handlers share it and no refusal can slip out in the wrong shape.

Streams end differently too: chat and completions with `data: [DONE]`; the Responses
API with a `response.completed` (or `incomplete`, `failed`) event; the Messages API
with `message_stop`.  `StreamRules` say which event types end a stream properly, which
report a failure in-band, and where each API puts its usage.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from core._records import OpenAIRoute, Response

__all__ = [
    "ANTHROPIC_ERROR_TYPES",
    "StreamRules",
    "anthropic_error_type",
    "in_dialect",
    "route_of_path",
    "stream_error_event",
    "stream_rules",
]

# Anthropic's error types, by HTTP status (its documented pairs); others by family.
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def anthropic_error_type(status: int) -> str:
    family = "invalid_request_error" if status < 500 else "api_error"
    return ANTHROPIC_ERROR_TYPES.get(status, family)


def _anthropic_body(payload: dict[str, Any], status: int) -> bytes | None:
    """Anthropic's error object for an OpenAI-shaped one; None when `payload` is not one."""
    if payload.get("type") == "error":
        return None  # already Anthropic's (a backend's own refusal, relayed)
    error = payload.get("error")
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return None
    shaped = {
        "type": "error",
        "error": {"type": anthropic_error_type(status), "message": error["message"]},
    }
    return json.dumps(shaped).encode()


def _parsed(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def in_dialect(route: OpenAIRoute | None, response: Response) -> Response:
    """An error answer in the shape the route's clients read; anything else unchanged."""
    if route is not OpenAIRoute.MESSAGES or response.status < 400:
        return response
    payload = _parsed(response.body)
    body = None if payload is None else _anthropic_body(payload, response.status)
    if body is None:
        return response
    return Response(status=response.status, headers=response.headers, body=body)


def stream_error_event(
    route: OpenAIRoute | None, body: bytes, status: int, *, after_partial: bool = False
) -> bytes:
    """An error (OpenAI-shaped `body`) as one SSE event the route's clients raise on.

    After a stream cut mid-event, blank lines first end the fragment, so the error
    arrives as an event of its own rather than glued onto half a line.
    """
    lead = b"\n\n" if after_partial else b""
    if route is OpenAIRoute.MESSAGES:
        payload = _parsed(body)
        shaped = None if payload is None else _anthropic_body(payload, status)
        if shaped is not None:
            return lead + b"event: error\ndata: " + shaped + b"\n\n"
    return lead + b"data: " + body + b"\n\n"


def route_of_path(path: str) -> OpenAIRoute | None:
    """The relayed operation a URL path names (`/v1/messages`, or the same under
    `/resource_server/{cluster}/{framework}`), for answers made outside the machine."""
    head, marker, operation = path.rstrip("/").rpartition("/v1/")
    if not marker or (head and not head.startswith("/resource_server/")):
        return None
    return OpenAIRoute.from_path(operation)


@attrs.frozen(kw_only=True)
class StreamRules:
    """How one API's stream ends and reports: event `type`s that end it properly,
    types that report a failure, and the keys under which an event nests its usage."""

    finished: frozenset[str] = frozenset()
    failed: frozenset[str] = frozenset()
    usage_under: tuple[str, ...] = ()
    # The event type whose `response.id` names a stored response (Responses only).
    created: str | None = None

    def finishes(self, data: str) -> bool:
        """Whether a data line may hold an event worth parsing for these rules."""
        return any(f'"{name}"' in data for name in (*self.finished, *self.failed))


_CHAT_RULES = StreamRules()
_RULES = {
    OpenAIRoute.RESPONSES: StreamRules(
        finished=frozenset({"response.completed", "response.incomplete"}),
        failed=frozenset({"response.failed", "error"}),
        usage_under=("response",),
        created="response.created",
    ),
    OpenAIRoute.MESSAGES: StreamRules(
        finished=frozenset({"message_stop"}),
        failed=frozenset({"error"}),
        usage_under=("message",),
    ),
}


def stream_rules(route: OpenAIRoute | None) -> StreamRules:
    return _RULES.get(route, _CHAT_RULES) if route is not None else _CHAT_RULES
