"""`GET /openapi.json`: the OpenAPI document of every route the app serves.

Each view says what it takes and answers with one `@documented(Operation(...))` line
under its route decorator; the document walks the app's URL map and turns each route's
`Operation` into OpenAPI, with the JSON schemas of the pydantic models it names.  The
inference bodies are the models the core validates with (`core._api_models`), so the
document cannot promise what the gateway does not enforce.  A route without an
`Operation` is an error (`UndocumentedRoute`): the document cannot be built, and
`tests/test_openapi.py` fails, so no route can be added and forgotten here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from importlib import metadata
from typing import Any, Literal, TypeVar

import attrs
import pydantic
from pydantic.json_schema import models_json_schema
from quart import Blueprint, Quart, Response, current_app
from werkzeug.routing import Rule

from core import (
    AnthropicErrorResponse,
    ChatCompletion,
    ChatCompletionChunk,
    Completion,
    EmbeddingList,
    ErrorResponse,
    Message,
    MessageStreamEvent,
    OpenAIRoute,
    ResponseObject,
    ResponseStreamEvent,
    request_model,
)

__all__ = [
    "AUTH_ERRORS",
    "INFERENCE_ERRORS",
    "INFERENCE_OPERATIONS",
    "STORED_RESPONSE",
    "Operation",
    "UndocumentedRoute",
    "documented",
    "openapi_api",
    "openapi_document",
]

Model = type[pydantic.BaseModel]
Auth = Literal["bearer", "none", "optional"]
View = TypeVar("View", bound=Callable[..., Any])

ATTRIBUTE = "__openapi_operations__"
DOCUMENT_KEY = "inference_gateway_openapi"
SCHEMAS = "#/components/schemas/"
BEARER = "bearerAuth"
# Methods the server adds by itself to every route (HEAD for GET, OPTIONS everywhere).
IMPLICIT_METHODS = frozenset({"HEAD", "OPTIONS"})

# The errors of a route that needs a token: none, a bad one, the provider unreachable.
AUTH_ERRORS = (401, 503)
# And of an inference call: the body, the model, quotas, the backend.
INFERENCE_ERRORS = (400, 401, 403, 404, 413, 415, 429, 502, 503, 504)


class UndocumentedRoute(LookupError):
    """A route the app serves has no `@documented(...)`; the message names it."""


@attrs.frozen(kw_only=True)
class Operation:
    """What one route (one method) takes and answers, for the document.

    `body`: the JSON request body's model; `form`: a multipart body's; `query`: a model
    whose fields are the query parameters.  `answer`: the 200 JSON body's model, or
    `media` for another media type (its schema a string); `stream`: the model of each
    server-sent event's data, when the route may stream.  `errors`: the statuses it may
    refuse with, each answered with `ErrorResponse`.  `path_values`: for a route whose
    last path variable stands for several operations (`<path:operation>`), the value of
    each, documented as its own path (see `documented`).
    """

    summary: str
    auth: Auth = "bearer"
    body: Model | None = None
    form: Model | None = None
    query: Model | None = None
    answer: Model | None = None
    media: str = "application/json"
    stream: Model | None = None
    errors: tuple[int, ...] = AUTH_ERRORS
    tags: tuple[str, ...] = ()
    description: str | None = None
    # The shape of its errors: OpenAI's, or Anthropic's on the Messages API.
    error_model: Model = ErrorResponse


def documented(
    operation: Operation | None = None, *, per_value: Mapping[str, Operation] | None = None
) -> Callable[[View], View]:
    """Put under a route decorator: `@documented(Operation(...))`.  For a route whose
    last path variable picks one of several operations, `per_value={"chat/completions":
    Operation(...), ...}` documents each value as a path of its own."""
    if (operation is None) == (per_value is None):
        raise TypeError("documented() takes one Operation or per_value, not both or neither")

    def mark(view: View) -> View:
        setattr(view, ATTRIBUTE, operation if per_value is None else dict(per_value))
        return view

    return mark


# The inference operations, on the OpenAI routes and the seed's alike.
INFERENCE_OPERATIONS = {
    OpenAIRoute.CHAT_COMPLETIONS: Operation(
        summary="A chat completion, answered whole or streamed.",
        body=request_model(OpenAIRoute.CHAT_COMPLETIONS),
        answer=ChatCompletion,
        stream=ChatCompletionChunk,
        errors=INFERENCE_ERRORS,
        tags=("openai",),
    ),
    OpenAIRoute.COMPLETIONS: Operation(
        summary="A text completion, answered whole or streamed.",
        body=request_model(OpenAIRoute.COMPLETIONS),
        answer=Completion,
        stream=Completion,
        errors=INFERENCE_ERRORS,
        tags=("openai",),
    ),
    OpenAIRoute.EMBEDDINGS: Operation(
        summary="Embeddings of the input.",
        body=request_model(OpenAIRoute.EMBEDDINGS),
        answer=EmbeddingList,
        errors=INFERENCE_ERRORS,
        tags=("openai",),
    ),
    OpenAIRoute.RESPONSES: Operation(
        summary="OpenAI's Responses API: a response, answered whole or streamed.",
        body=request_model(OpenAIRoute.RESPONSES),
        answer=ResponseObject,
        stream=ResponseStreamEvent,
        errors=INFERENCE_ERRORS,
        tags=("openai",),
    ),
    OpenAIRoute.MESSAGES: Operation(
        summary="Anthropic's Messages API (key as x-api-key or bearer): a message, answered "
        "whole or streamed; its errors take Anthropic's shape.",
        body=request_model(OpenAIRoute.MESSAGES),
        answer=Message,
        stream=MessageStreamEvent,
        errors=INFERENCE_ERRORS,
        tags=("anthropic",),
        error_model=AnthropicErrorResponse,
    ),
}

# The Responses API's calls on a stored response (retrieve, delete, cancel, input items):
# relayed to the endpoint that made it, answered as its backend keeps it.
STORED_RESPONSE = Operation(
    summary="A stored response of yours (GET: it; DELETE: remove it; POST .../cancel; "
    "GET .../input_items), from the endpoint that made it; another user's id is a 404.",
    errors=(400, 401, 404, 502, 503, 504),
    tags=("openai",),
)

openapi_api = Blueprint("openapi", __name__)


@openapi_api.get("/openapi.json")
@documented(
    Operation(
        summary="This document: every route the gateway serves.",
        auth="none",
        errors=(),
        tags=("gateway",),
    )
)
async def openapi_json() -> Response:
    document = current_app.extensions.get(DOCUMENT_KEY)
    if document is None:  # built once: the routes are fixed once the app serves
        document = current_app.extensions[DOCUMENT_KEY] = openapi_document(current_app)
    return Response(document, status=200, content_type="application/json")


def openapi_document(app: Quart) -> str:
    """The document, as JSON text, of every route of `app`."""
    return _json(build_document(app))


def build_document(app: Quart) -> dict[str, Any]:
    """The document of every route of `app`; `UndocumentedRoute` if one has none."""
    paths: dict[str, dict[str, Any]] = {}
    models: set[Model] = {ErrorResponse}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        view = app.view_functions.get(rule.endpoint)
        found = getattr(view, ATTRIBUTE, None)
        if found is None:
            raise UndocumentedRoute(
                f"Route {rule.rule} ({', '.join(sorted(_methods(rule)))}, view "
                f"{rule.endpoint}) has no OpenAPI documentation: put "
                "@documented(Operation(...)) under its route decorator "
                "(frontends/web/openapi.py)."
            )
        for path, variables, operation in _expand(rule, found):
            for method in sorted(_methods(rule)):
                operation_id = rule.endpoint if path == _template(rule.rule) else path
                paths.setdefault(path, {})[method.lower()] = _operation(
                    operation, variables, _operation_id(method, operation_id)
                )
                models.update(_models_of(operation))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "inference-gateway",
            "version": _version(),
            "description": (
                "An OpenAI-compatible inference gateway. Every error has OpenAI's shape "
                '{"error": {"message", "type", "param", "code"}}, but on /v1/messages '
                '(Anthropic\'s Messages API): {"type": "error", "error": {"type", "message"}}.'
            ),
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(models),
            "securitySchemes": {
                BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key of the gateway's (or the identity "
                    "provider's access token), as `Authorization: Bearer <key>`.",
                }
            },
        },
    }


def documented_routes(app: Quart) -> set[tuple[str, str]]:
    """Every (method, werkzeug rule) the app serves, HEAD and OPTIONS aside."""
    return {(m, rule.rule) for rule in app.url_map.iter_rules() for m in _methods(rule)}


def _methods(rule: Rule) -> set[str]:
    return set(rule.methods or ()) - IMPLICIT_METHODS


_VARIABLE = re.compile(r"<(?:(?P<converter>\w+)(?:\([^)]*\))?:)?(?P<name>\w+)>")


def _template(rule: str) -> str:
    """`/v1/files/<file_id>` → `/v1/files/{file_id}`."""
    return _VARIABLE.sub(lambda m: "{" + m["name"] + "}", rule)


def _expand(
    rule: Rule, found: Operation | dict[str, Operation]
) -> Iterable[tuple[str, list[str], Operation]]:
    """Each OpenAPI path a rule stands for, with its path variables, and the operation."""
    variables = [m["name"] for m in _VARIABLE.finditer(rule.rule)]
    if isinstance(found, Operation):
        return [(_template(rule.rule), variables, found)]
    last = list(_VARIABLE.finditer(rule.rule))[-1]
    expanded = []
    for value, operation in found.items():
        concrete = rule.rule[: last.start()] + value + rule.rule[last.end() :]
        expanded.append((_template(concrete), variables[:-1], operation))
    return expanded


def _operation_id(method: str, name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", f"{method.lower()}_{name}").strip("_")


def _ref(model: Model) -> dict[str, str]:
    return {"$ref": SCHEMAS + model.__name__}


def _operation(operation: Operation, variables: list[str], operation_id: str) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for name in variables
    ]
    if operation.query is not None:
        parameters.extend(_query_parameters(operation.query))
    described: dict[str, Any] = {"operationId": operation_id, "summary": operation.summary}
    if operation.description:
        described["description"] = operation.description
    if operation.tags:
        described["tags"] = list(operation.tags)
    if parameters:
        described["parameters"] = parameters
    if operation.body is not None:
        described["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(operation.body)}},
        }
    elif operation.form is not None:
        described["requestBody"] = {
            "required": True,
            "content": {"multipart/form-data": {"schema": _ref(operation.form)}},
        }
    described["responses"] = _responses(operation)
    if operation.auth == "bearer":
        described["security"] = [{BEARER: []}]
    elif operation.auth == "optional":
        described["security"] = [{}, {BEARER: []}]
    else:
        described["security"] = []
    return described


def _query_parameters(query: Model) -> list[dict[str, Any]]:
    schema = query.model_json_schema(ref_template=SCHEMAS + "{model}")
    required = set(schema.get("required", ()))
    parameters = []
    for name, field in schema.get("properties", {}).items():
        field = {k: v for k, v in field.items() if k != "title"}
        # A query parameter is absent rather than null: drop the `null` of `X | None`.
        options = field.pop("anyOf", None)
        if options is not None:
            field.update(next(o for o in options if o.get("type") != "null"))
            if field.get("default", ...) is None:
                del field["default"]
        parameter: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": field,
        }
        if "description" in field:
            parameter["description"] = field.pop("description")
        parameters.append(parameter)
    return parameters


def _responses(operation: Operation) -> dict[str, Any]:
    if operation.answer is not None:
        content: dict[str, Any] = {operation.media: {"schema": _ref(operation.answer)}}
    elif operation.media == "application/json":
        content = {operation.media: {"schema": {"type": "object"}}}
    else:
        content = {operation.media: {"schema": {"type": "string"}}}
    if operation.stream is not None:
        # Before OpenAPI 3.2 (itemSchema) a stream's `schema` describes one event.
        content["text/event-stream"] = {
            "schema": {
                "type": "object",
                "description": "One server-sent event: its `data` is one "
                f"{operation.stream.__name__} as JSON; the last is `[DONE]`. A stream that "
                f"breaks ends with an event whose data is an {operation.error_model.__name__}.",
                "required": ["data"],
                "properties": {
                    "data": {
                        "anyOf": [
                            {
                                "type": "string",
                                "contentMediaType": "application/json",
                                "contentSchema": {
                                    "anyOf": [_ref(operation.stream), _ref(operation.error_model)]
                                },
                            },
                            {"const": "[DONE]"},
                        ]
                    }
                },
            }
        }
    responses: dict[str, Any] = {"200": {"description": "OK", "content": content}}
    for status in operation.errors:
        responses[str(status)] = {
            "description": HTTPStatus(status).phrase,
            "content": {"application/json": {"schema": _ref(operation.error_model)}},
        }
    return responses


def _models_of(operation: Operation) -> set[Model]:
    named = (
        operation.body,
        operation.form,
        operation.answer,
        operation.stream,
        operation.error_model,
    )
    return {model for model in named if model is not None}


def _schemas(models: set[Model]) -> dict[str, Any]:
    """The JSON schema of each model, and of the models they use, under its class name."""
    ordered = sorted(models, key=lambda m: m.__name__)
    names = [m.__name__ for m in ordered]
    if len(set(names)) != len(names):
        raise ValueError(f"Two models share a name in the OpenAPI document: {sorted(names)}")
    top, shared = models_json_schema(
        [(m, "validation") for m in ordered], ref_template=SCHEMAS + "{model}"
    )
    schemas: dict[str, Any] = dict(shared.get("$defs", {}))
    for (model, _), schema in top.items():
        if "$ref" not in schema:
            schemas[model.__name__] = schema
    return dict(sorted(schemas.items()))


def _version() -> str:
    try:
        return metadata.version("inference-gateway")
    except metadata.PackageNotFoundError:
        return "0"


def _json(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=1)
