"""Every error the gateway can answer with, and the one place they become OpenAI JSON.

Two families, as in h11: `ClientError` is the caller's mistake (4xx: fix your request,
token or model name), `BackendError` is the backend's (502/503/504: nothing the caller
did wrong).  Both carry the OpenAI error `type`, `code` and `param`, so the front-ends
never invent an error shape of their own.  `ConfigurationError` is the operator's and
stops start-up; `LocalProtocolError` is a driver that fed the machine an event it may
not (a bug in our own code, never shown to a client as anything but a 500).
"""

from __future__ import annotations

import json
import re

from core._api_models import ErrorDetail, ErrorResponse

__all__ = [
    "BackendError",
    "ClientError",
    "ConfigurationError",
    "GatewayError",
    "LocalProtocolError",
    "error_body",
    "log_detail",
    "redact",
]


class GatewayError(Exception):
    """An error with everything needed to answer the client in OpenAI's shape."""

    status: int = 500
    type: str = "api_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        self.code = code
        self.param = param
        self.headers = headers

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.code!r}, {self.message!r})"


class ClientError(GatewayError):
    """The caller's mistake: a 4xx whose message tells them what to change."""

    status = 400
    type = "invalid_request_error"


class BackendError(GatewayError):
    """A backend failed or misbehaved: a 5xx that names the backend, never its URL or key."""

    status = 502
    type = "api_error"


class LocalProtocolError(Exception):
    """The driver fed a state machine an event its current state does not accept."""


class ConfigurationError(Exception):
    """A fixture or setting is wrong; the message names the file, the entry and the field."""

    def __init__(
        self, reason: str, *, file: str, entry: object = None, field: str | None = None
    ) -> None:
        self.reason = reason
        self.file = file
        self.entry = entry
        self.field = field
        where = [file]
        if entry is not None:
            where.append(f"entry pk={entry}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{', '.join(where)}: {reason}")


_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def type_for_status(status: int) -> str:
    """The OpenAI error type a status implies, for errors that did not bring their own."""
    return _STATUS_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


# No word-boundary anchors: a URL or key glued to a word ("upstream_http://...") must go too.
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")
_BEARER = re.compile(r"(?i)(bearer|token|api[_-]?key)(\s*[:=]?\s*)[A-Za-z0-9._~+/=-]{8,}")
_KEY = re.compile(r"sk-[A-Za-z0-9_-]{8,}")


def redact(text: str) -> str:
    """Strip URLs and anything shaped like a credential from text bound for a client.

    Adaptors are told not to put URLs or keys in their messages; this is the second lock
    on that door, for adaptors written elsewhere.
    """
    text = _URL.sub("<backend>", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}<redacted>", text)
    return _KEY.sub("<redacted>", text)


# The most of a failure's account the request log keeps: enough to tell one failure from
# another, never a backend's whole error page (which may quote the request, or a secret).
DETAIL_CHARS = 200
# A secret given as a field, in JSON, a header, a query or a form: `"password": "x"`,
# `api-key=x`, `Authorization: Bearer x`.  Its value goes, however short.
_SECRET_FIELD = re.compile(
    r"""(?ix)
    (["']?\b(?:api[_-]?key|apikey|access[_-]?token|refresh[_-]?token|id[_-]?token|token
        |client[_-]?secret|secret|password|passwd|authorization|cookie)\b["']?
     \s*[:=]\s*["']?)
    (?:(?:bearer|basic|token)\s+)?[^"'\s,;&}]+
    """
)


def log_detail(text: str) -> str:
    """A failure's account as the request log may keep it: redacted as for a client,
    with secrets given as fields (`"password": "..."`) blanked too, and cut to
    `DETAIL_CHARS` characters (the last one an ellipsis when cut).

    Redaction runs before the cut, on a prefix long enough that a secret beginning
    inside what is kept is seen whole, so the cut never leaves a secret's first
    characters behind unredacted.
    """
    text = redact(text[: DETAIL_CHARS * 10])
    text = _SECRET_FIELD.sub(lambda m: f"{m.group(1)}<redacted>", text)
    if len(text) > DETAIL_CHARS:
        return text[: DETAIL_CHARS - 1] + "\u2026"
    return text


def error_body(error: GatewayError) -> bytes:
    """The OpenAI JSON for an error: the only place that shape is written, by the model
    the OpenAPI document describes it with (`core._api_models.ErrorResponse`)."""
    detail = ErrorDetail.model_construct(
        message=error.message, type=error.type, param=error.param, code=error.code
    )
    return json.dumps(ErrorResponse.model_construct(error=detail).model_dump()).encode()
