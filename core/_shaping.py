"""Turning what an adaptor returned into what the client receives.

A backend's successful body goes out byte-for-byte: it is parsed once, from its bytes,
to check it is a JSON object and to read `usage`, and never decoded or encoded again.
A backend's own 4xx with an OpenAI error body goes out unchanged too: it explains the
caller's mistake better than we could.  Everything else that went wrong behind the
gateway becomes a 502/503/504 naming the endpoint and what happened, and never the
backend's URL, key or raw 5xx body (those go to the operator's log only).

A success must also be the route's answer in the little that OpenAI's clients rely on
(`core._answers`): a chat completion without `choices` is a backend's failure (502
`backend_invalid_response`), not a success the client then fails to read.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from core._answers import answer_problem
from core._errors import (
    BackendError,
    ClientError,
    GatewayError,
    error_body,
    redact,
    type_for_status,
)
from core._failure_codes import KNOWN_FAILURES, SATURATED
from core._records import EndpointRecord, Headers, OpenAIRoute, Response, Usage

__all__ = [
    "JSON_HEADERS",
    "RELAYED_HEADERS",
    "STREAM_HEADERS",
    "Shaped",
    "error_response",
    "shape_failure",
    "shape_result",
]

JSON_HEADERS = (("content-type", "application/json"),)
# Proxies in front (nginx and friends) must not buffer a stream either.
STREAM_HEADERS = (
    ("content-type", "text/event-stream; charset=utf-8"),
    ("cache-control", "no-cache"),
    ("x-accel-buffering", "no"),
)


# What of a backend's headers reaches the client: its request id (what OpenAI support
# asks for) and harmless metadata.  Never hop-by-hop headers, cookies, rate limits of the
# gateway's own upstream key, or anything naming the upstream account.
RELAYED_HEADERS = frozenset(
    {"x-request-id", "openai-processing-ms", "openai-model", "openai-version"}
)


def relayed(backend: Headers) -> Headers:
    return tuple((k.lower(), v) for k, v in backend if k.lower() in RELAYED_HEADERS)


def _content_type(backend: Headers, default: str, *, family: str) -> str:
    """The backend's own Content-Type when it names the expected media family."""
    value = next((v for k, v in backend if k.lower() == "content-type"), None)
    if value is not None and value.split(";", 1)[0].strip().lower() == family:
        return value
    return default


def stream_headers(backend: Headers) -> Headers:
    content_type = _content_type(backend, STREAM_HEADERS[0][1], family="text/event-stream")
    return (("content-type", content_type), *STREAM_HEADERS[1:], *relayed(backend))


def _passed_through(backend: Headers) -> Headers:
    content_type = _content_type(backend, "application/json", family="application/json")
    return (("content-type", content_type), *relayed(backend))


@attrs.frozen(kw_only=True)
class Shaped:
    """A response plus what the operator's log should learn from it: the usage, the
    error code of a failure (the one the client was told, or the backend's own) and an
    account of it."""

    response: Response
    usage: Usage | None = None
    error_code: str | None = None
    detail: str | None = None


def error_response(error: GatewayError) -> Response:
    return Response(
        status=error.status, headers=JSON_HEADERS + error.headers, body=error_body(error)
    )


def json_object(data: bytes | str) -> dict[str, Any] | None:
    """`data` parsed as a JSON object, or None for anything else (or too deeply nested)."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _is_openai_error(payload: dict[str, Any] | None) -> bool:
    """OpenAI's error shape: an `error` object with at least a text `message`."""
    if payload is None or not isinstance(payload.get("error"), dict):
        return False
    return isinstance(payload["error"].get("message"), str)


def _where(endpoint: EndpointRecord) -> str:
    return f"model '{endpoint.model}' on cluster '{endpoint.cluster}'"


_FAILURE_PHRASES = {
    502: "the backend could not be reached or gave an invalid answer",
    503: "the backend is unavailable",
    504: "the backend did not answer in time",
}


def _failure_code(status: int) -> str:
    """The error code for a backend failure with this status."""
    return {503: "backend_unavailable", 504: "backend_timeout"}.get(status, "backend_error")


def _known_failure(
    endpoint: EndpointRecord, code: str, said: str | None, detail: str, headers: Headers
) -> Shaped:
    """A failure whose code the edge named: its own status and words (the adaptor's,
    redacted, when it gave some)."""
    known = KNOWN_FAILURES[code]
    phrase = redact(said).strip().rstrip(".") if said and said.strip() else known.phrase
    if code == SATURATED:
        error = BackendError(
            f"The gateway is saturated for {_where(endpoint)}: {phrase}; retry shortly.",
            status=known.status,
            code=code,
            headers=(("retry-after", "1"),),
        )
    else:
        error = BackendError(
            f"The backend serving {_where(endpoint)} failed: {phrase}.",
            status=known.status,
            code=code,
            headers=relayed(headers),
        )
    return Shaped(response=error_response(error), error_code=code, detail=redact(detail))


def _backend_failure(
    endpoint: EndpointRecord,
    status: int,
    code: str,
    detail: str,
    headers: Headers = (),
    *,
    phrase: str | None = None,
) -> Shaped:
    gateway_status = status if status in _FAILURE_PHRASES else 502
    if phrase is None:
        phrase = _FAILURE_PHRASES[gateway_status]
        if status not in _FAILURE_PHRASES:
            phrase = f"the backend answered with HTTP {status}"
    error = BackendError(
        f"The backend serving {_where(endpoint)} failed: {phrase}.",
        status=gateway_status,
        code=code,
        headers=relayed(headers),
    )
    return Shaped(response=error_response(error), error_code=code, detail=redact(detail))


def _backend_code(payload: dict[str, Any] | None) -> str | None:
    """The `code` (else `type`) of a backend's OpenAI error body, if it gives one."""
    if payload is None or not isinstance(payload.get("error"), dict):
        return None
    for name in ("code", "type"):
        value = payload["error"].get(name)
        if isinstance(value, str) and value:
            return value
    return None


def shape_result(
    endpoint: EndpointRecord,
    *,
    result: bytes | str | None,
    error_message: str | None,
    error_code: int | None,
    headers: Headers = (),
    route: OpenAIRoute | None = None,
    failure_code: str | None = None,
) -> Shaped:
    """The client's response for a finished `submit_task` (or a streaming call that failed).

    With `route`, a success must also have that route's answer shape (`core._answers`).
    A `failure_code` the core knows (`core._failure_codes`) decides the status and code
    of an error; the adaptor's message then says what happened."""
    if failure_code in KNOWN_FAILURES and (error_code is not None or error_message is not None):
        detail = f"HTTP {error_code}: {error_message or ''}"
        return _known_failure(endpoint, failure_code, error_message, detail, headers)
    if error_code is None and error_message is None:
        if result is None:
            return _backend_failure(
                endpoint, 502, "empty_backend_response", "adaptor returned nothing"
            )
        try:
            # An adaptor's own text is encoded once; a backend's bytes are used as they are.
            body = result.encode() if isinstance(result, str) else result
        except UnicodeEncodeError:  # lone surrogates from an adaptor's own text
            return _backend_failure(
                endpoint, 502, "malformed_backend_response", "backend answer is not valid UTF-8"
            )
        payload = json_object(body)
        if payload is None:
            return _backend_failure(
                endpoint, 502, "malformed_backend_response", "backend answer is not a JSON object"
            )
        problem = None if route is None else answer_problem(route, payload)
        if route is not None and problem is not None:
            return _backend_failure(
                endpoint,
                502,
                "backend_invalid_response",
                f"backend answer {problem}",
                headers,
                phrase=f"its answer is not an OpenAI {route.value} response ({problem})",
            )
        return Shaped(
            response=Response(status=200, headers=_passed_through(headers), body=body),
            usage=Usage.from_json(payload.get("usage")),
        )
    status = error_code if error_code is not None else 500
    message = error_message or ""
    if status in (401, 403, 407):
        # The backend refused the *gateway's* credentials: the operator's problem, not the caller's.
        return _backend_failure(
            endpoint, 502, "backend_auth_failed", f"HTTP {status}: {message}", headers
        )
    if 400 <= status < 500:
        payload = json_object(message)
        if _is_openai_error(payload):
            return Shaped(
                response=Response(
                    status=status, headers=_passed_through(headers), body=message.encode()
                ),
                error_code=_backend_code(payload),
                detail=redact(message),
            )
        error = ClientError(
            redact(message) or f"The backend refused the request (HTTP {status}).",
            status=status,
            type=type_for_status(status),
            headers=relayed(headers),
        )
        return Shaped(
            response=error_response(error),
            error_code=error.code or error.type,
            detail=redact(message),
        )
    return _backend_failure(
        endpoint, status, _failure_code(status), f"HTTP {status}: {message}", headers
    )


def shape_failure(
    endpoint: EndpointRecord, status: int, detail: str, code: str | None = None
) -> Shaped:
    """The client's response when calling the adaptor raised instead of returning; a
    `code` the core knows names the failure precisely."""
    if code in KNOWN_FAILURES:
        return _known_failure(endpoint, code, None, detail, ())
    return _backend_failure(endpoint, status, _failure_code(status), detail)
