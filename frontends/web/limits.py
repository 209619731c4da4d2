"""Refusing requests whose headers are too large, in OpenAI's shape (431).

Hypercorn refuses a request head (request line and headers) larger than its
`h11_max_incomplete_size` by itself, with a 431 whose body is empty, and offers no hook
to change that answer.  So the gateway carries the limit itself: Hypercorn is
configured to read heads up to a much larger size (`hypercorn_limits`), and this ASGI
layer answers anything over the gateway's own limit with an OpenAI error body.  Heads
beyond Hypercorn's larger read limit (1 MiB, or twice the gateway's limit) still get
Hypercorn's empty 431: a client sending those is not one an explanation would help.

The size counted is the head as HTTP/1.1 sends it: the request line, each header as
`name: value` plus its line end, and the blank line, so the limit means the same bytes
Hypercorn would have counted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from core import ClientError, error_response, in_dialect, route_of_path

__all__ = ["MIN_READ_LIMIT", "HeaderLimit", "head_size", "hypercorn_limits"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]

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
    headers = sum(len(name) + 2 + len(value) + 2 for name, value in scope.get("headers", ()))
    return line + headers + 2


class HeaderLimit:
    """ASGI layer: a request whose head is over `max_bytes` gets an OpenAI-shaped 431
    and never reaches the app."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self._app = app
        self._max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or head_size(scope) <= self._max_bytes:
            await self._app(scope, receive, send)
            return
        error = ClientError(
            f"The request's headers are too large: at most {self._max_bytes} bytes of "
            "request line and headers are accepted.",
            status=431,
            code="request_header_fields_too_large",
        )
        # In the route's own dialect (Anthropic's on /v1/messages), as every refusal is.
        body = in_dialect(route_of_path(scope.get("path", "")), error_response(error)).body
        await send(
            {
                "type": "http.response.start",
                "status": 431,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
