"""Refusing requests whose headers are too large, in OpenAI's shape (431).

Hypercorn refuses a request head (request line and headers) larger than its
`h11_max_incomplete_size` by itself, with a 431 whose body is empty, and offers no hook
to change that answer.  So the gateway carries the limit itself: Hypercorn is
configured to read heads up to a much larger size (`hypercorn_limits`), and the app's
ASGI layer (`frontends.web.access`) answers anything over the gateway's own limit with
the OpenAI error body made here.  Heads beyond Hypercorn's larger read limit (1 MiB, or
twice the gateway's limit) still get Hypercorn's empty 431: a client sending those is not
one an explanation would help.

The size counted is the head as HTTP/1.1 sends it: the request line, each header as
`name: value` plus its line end, and the blank line, so the limit means the same bytes
Hypercorn would have counted.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from core import ClientError, error_response, in_dialect, route_of_path

__all__ = ["MIN_READ_LIMIT", "head_refusal", "head_size", "hypercorn_limits"]

Scope = MutableMapping[str, Any]
Message = dict[str, Any]

MIN_READ_LIMIT = 1024 * 1024


def hypercorn_limits(max_header_bytes: int) -> dict[str, int]:
    """The Hypercorn settings that let a head over `max_header_bytes` reach the app, so
    it is refused here with an explanation rather than there with an empty body."""
    read_limit = max(MIN_READ_LIMIT, 2 * max_header_bytes)
    return {"h11_max_incomplete_size": read_limit, "h2_max_header_list_size": read_limit}


def head_size(scope: Scope) -> int:
    """The bytes of the request head as HTTP/1.1 carries it (CRLF line ends)."""
    target = len(scope.get("raw_path") or scope.get("path", "").encode())
    query = scope.get("query_string") or b""
    if query:
        target += 1 + len(query)
    method = len(scope.get("method", ""))
    line = method + 1 + target + len(" HTTP/1.1\r\n")
    headers = scope.get("headers", ())
    # Each header adds ": " and CRLF to its name and value.
    return line + sum(len(name) + len(value) for name, value in headers) + 4 * len(headers) + 2


def head_refusal(scope: Scope, max_bytes: int) -> tuple[Message, Message]:
    """The two ASGI messages of the 431 for a head over `max_bytes`: an OpenAI error in
    the route's own dialect (Anthropic's on /v1/messages), as every refusal is."""
    error = ClientError(
        f"The request's headers are too large: at most {max_bytes} bytes of "
        "request line and headers are accepted.",
        status=431,
        code="request_header_fields_too_large",
    )
    body = in_dialect(route_of_path(scope.get("path", "")), error_response(error)).body
    start = {
        "type": "http.response.start",
        "status": 431,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ],
    }
    return start, {"type": "http.response.body", "body": body}
