"""Checking a client's request body: only what the gateway itself relies on.

The gateway needs `model` (to select an endpoint), `stream` (to choose the relay) and the
input field's type (to refuse what no backend could take); the rules are the body models
of `core._api_models`, which the OpenAPI document is generated from.  Everything else
passes through untouched, because vLLM and friends accept extensions OpenAI does not
know.  Validation never raises on any input: it returns a `ValidRequest` or a
`ClientError` whose `param` names the field to fix.  The limits of `core._limits` apply
here too (JSON depth, number of messages, text no backend could encode), and every piece
of the client's input a message repeats is clipped to a short prefix.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import attrs
import pydantic

from core._api_models import RESERVED_FIELDS, ReservedField, request_model
from core._errors import ClientError
from core._limits import DEFAULT_LIMITS, RequestLimits, clip, deeper_than, lone_surrogate_at
from core._records import OpenAIRoute

__all__ = ["RESERVED_FIELDS", "ValidRequest", "validate_request"]


@attrs.frozen(kw_only=True)
class ValidRequest:
    route: OpenAIRoute
    model: str
    stream: bool
    body: Mapping[str, Any] = attrs.field(eq=False)


def _reject(message: str, *, param: str | None, code: str, status: int = 400) -> ClientError:
    return ClientError(message, status=status, param=param, code=code)


class _NonFinite(ValueError):
    """A number JSON cannot carry: NaN, Infinity, or a literal too large for a double."""


_MARK = object()  # stands in for a non-finite number while finding where it is


def _finite(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise _NonFinite(text)
    return number


def _non_finite(name: str) -> float:
    raise _NonFinite(name)


# One decoder for every request: json.loads with hooks would build a new one per call.
_DECODER = json.JSONDecoder(parse_float=_finite, parse_constant=_non_finite)
_BOM = b"\xef\xbb\xbf"


def _text(raw: bytes) -> str:
    """`raw` as UTF-8 text without a leading byte-order mark: what the "utf-8-sig" codec
    gives (the same text, the same errors), without its Python-level decoder function,
    a call on every request for a mark that nearly no body has."""
    return (raw[3:] if raw.startswith(_BOM) else raw).decode()


def _where_non_finite(raw: bytes) -> str | None:
    """The path (`temperature`, `messages[0].x`) of the first non-finite number in `raw`.

    Only asked after a parse failed on one, so the refusal can name the field to fix.
    """

    def mark(text: str) -> object:
        return _MARK if text in ("NaN", "Infinity", "-Infinity") or math.isinf(float(text)) else 0

    def find(value: object, path: str) -> str | None:
        if value is _MARK:
            return path or None
        children: Any = ()
        if isinstance(value, dict):
            children = ((f"{path}.{k}" if path else str(k), v) for k, v in value.items())
        elif isinstance(value, list):
            children = ((f"{path}[{i}]", v) for i, v in enumerate(value))
        for child_path, child in children:
            found = find(child, child_path)
            if found is not None:
                return found
        return None

    try:
        return find(json.loads(raw, parse_float=mark, parse_constant=mark), "")
    except (ValueError, RecursionError):
        return None


def _too_deep(limit: int, where: str | None) -> ClientError:
    at = f" at {clip(where)!r}" if where else ""
    return _reject(
        f"The JSON body nests deeper than {limit} levels{at}; flatten it.",
        param=clip(where) if where else None,
        code="json_too_deep",
    )


def _parse_body(
    content_type: str | None, raw: bytes, limits: RequestLimits = DEFAULT_LIMITS
) -> dict[str, Any] | ClientError:
    if content_type is not None:
        media = content_type.split(";", 1)[0].strip().lower()
        if media and media != "application/json" and not media.endswith("+json"):
            return _reject(
                f"Unsupported Content-Type {clip(media)!r}; send the body as application/json.",
                param=None,
                code="unsupported_media_type",
                status=415,
            )
    if not raw.strip():
        return _reject(
            "The request body is empty; send a JSON object.", param=None, code="empty_body"
        )
    try:
        data = _DECODER.decode(_text(raw))
    except _NonFinite:
        where = _where_non_finite(raw)
        where = clip(where) if where else None
        return _reject(
            f"Invalid number{f' for {where!r}' if where else ''}: JSON numbers must be finite "
            "(NaN, Infinity and literals beyond a double's range such as 1e400 are refused).",
            param=where,
            code="invalid_value",
        )
    except RecursionError:  # deeper than the parser goes, so far deeper than any limit
        return _too_deep(limits.max_json_depth, None)
    except ValueError:
        return _reject(
            "We could not parse the JSON body of your request.", param=None, code="invalid_json"
        )
    if not isinstance(data, dict):
        return _reject("The request body must be a JSON object.", param=None, code="invalid_json")
    if raw.count(b"[") + raw.count(b"{") > limits.max_json_depth:  # else it cannot be deeper
        deep = deeper_than(data, limits.max_json_depth)
        if deep is not None:
            return _too_deep(limits.max_json_depth, deep)
    lone = lone_surrogate_at(raw, data)
    if lone is not None:
        return _reject(
            f"Invalid text in {clip(lone)!r}: it holds a lone UTF-16 surrogate (an escape "
            "such as \\ud800 without its pair), which cannot be encoded as UTF-8.",
            param=clip(lone),
            code="invalid_encoding",
        )
    return data


def validate_request(
    route: OpenAIRoute,
    content_type: str | None,
    raw: bytes,
    limits: RequestLimits = DEFAULT_LIMITS,
) -> ValidRequest | ClientError:
    data = _parse_body(content_type, raw, limits)
    if isinstance(data, ClientError):
        return data
    return validate_body(route, data, limits)


def validate_body(
    route: OpenAIRoute, body: dict[str, Any], limits: RequestLimits = DEFAULT_LIMITS
) -> ValidRequest | ClientError:
    """The route's body model (`core._api_models`) decides; its first error is refused.
    The number of messages is a setting, not part of the model: checked first, so that a
    huge array costs a length, not a walk."""
    chat_like = route in (OpenAIRoute.CHAT_COMPLETIONS, OpenAIRoute.MESSAGES)
    messages = body.get("messages") if chat_like else None
    if isinstance(messages, list) and len(messages) > limits.max_messages:
        return _reject(
            f"Invalid 'messages': array too long. Expected an array with maximum length "
            f"{limits.max_messages}, but got an array with length {len(messages)} instead.",
            param="messages",
            code="array_above_max_length",
        )
    try:
        checked = request_model(route).model_validate(body)
    except pydantic.ValidationError as exc:
        return _refusal(route, exc.errors(include_url=False)[0])
    return ValidRequest(route=route, model=checked.model, stream=bool(checked.stream), body=body)


# The Responses and Messages APIs' other checked fields, and what each must be.
_OTHER_FIELDS = {
    "max_tokens": "a positive integer",
    "previous_response_id": "a non-empty string",
}


def _refusal(route: OpenAIRoute, error: Mapping[str, Any]) -> ClientError:
    """The model's first error as the message and code for the field to fix.  Pydantic
    reports fields in declaration order (model, stream, input), so the first error is
    the first rule broken, as the messages below put it."""
    reserved = error.get("ctx", {}).get("error")
    if isinstance(reserved, ReservedField):
        return _reject(str(reserved), param=reserved.name, code="reserved_parameter")
    location = error["loc"]
    field = str(location[0]) if location else None
    value = error["input"]
    if error["type"] == "missing" or (field == "model" and value is None):
        if field == "model":
            message = "You must provide a model parameter."
        else:
            message = f"Missing required parameter: '{field}'."
        return _reject(message, param=field, code="missing_required_parameter")
    if field == "model":
        return _reject("'model' must be a non-empty string.", param="model", code="invalid_type")
    if field == "stream":
        if isinstance(value, bool):  # only embeddings refuse a boolean
            return _reject(
                "Streaming is not supported for embeddings.",
                param="stream",
                code="unsupported_parameter",
            )
        return _reject("'stream' must be a boolean.", param="stream", code="invalid_type")
    if field == "messages":
        if len(location) > 1:
            index = location[1]
            return _reject(
                f"Invalid 'messages[{index}]': expected an object.",
                param=f"messages[{index}]",
                code="invalid_type",
            )
        if error["type"] == "too_short":
            return _reject(
                "Invalid 'messages': empty array. Expected an array with minimum length 1.",
                param=field,
                code="empty_array",
            )
        return _reject("Invalid 'messages': expected an array.", param=field, code="invalid_type")
    words = _OTHER_FIELDS.get(field or "")
    if words is not None:
        return _reject(f"Invalid '{field}': expected {words}.", param=field, code="invalid_type")
    if route is OpenAIRoute.RESPONSES and field == "input":
        return _reject(
            "Invalid 'input': expected a string or an array of input items.",
            param=field,
            code="invalid_type",
        )
    if value == []:
        return _reject(f"Invalid '{field}': empty array.", param=field, code="empty_array")
    return _reject(
        f"Invalid '{field}': expected a string, an array of strings, an array of tokens "
        "or an array of token arrays.",
        param=field,
        code="invalid_type",
    )
