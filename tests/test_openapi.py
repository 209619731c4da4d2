"""The OpenAPI document: every route the app serves is in it (a route added without
`@documented(...)` fails here), its inference bodies are the very models the core
validates with, every error is OpenAI's shape, and the bearer key is its security.
schemathesis checks the live server against it: tests/test_openapi_live.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from quart import Quart, Response

from core import OpenAIRoute, request_model
from frontends.assembly import build_gateway
from frontends.batches import Batches
from frontends.identity import StaticKeys
from frontends.metrics import MetricsSink
from frontends.store import BatchStore, Store
from frontends.web import create_app
from frontends.web.openapi import (
    SCHEMAS,
    Operation,
    UndocumentedRoute,
    build_document,
    documented,
    documented_routes,
)
from tests.support.gateway_server import REPO_FIXTURES, write_tokens
from transports.httpx_transport import HttpxTransport


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Quart]:
    """The app with every optional part on: metrics, files and batches."""
    gateway = build_gateway(
        REPO_FIXTURES,
        identity=StaticKeys.from_file(write_tokens(tmp_path)),
        transport=HttpxTransport(),
    )
    store = Store.connect(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        yield create_app(
            gateway, metrics=MetricsSink(), batches=Batches(gateway, BatchStore(store.engine))
        )
    finally:
        store.close()


def matches(rule: str, path: str) -> bool:
    """Whether an OpenAPI path documents a werkzeug rule: a variable is `{name}` there,
    or, for a rule whose last variable stands for several operations, one of its values."""
    pattern = ""
    pieces = re.findall(r"([^<]*)(?:<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>)?", rule)
    for literal, converter, name in pieces:
        pattern += re.escape(literal)
        if name:
            pattern += rf"(?:\{{{name}\}}|{'.+' if converter == 'path' else '[^/{}]+'})"
    return re.fullmatch(pattern, path) is not None


def test_every_route_the_app_serves_is_in_the_document(app: Quart) -> None:
    document = build_document(app)
    served = documented_routes(app)
    assert len(served) >= 20
    for method, rule in served:
        documenting = [p for p, ops in document["paths"].items() if matches(rule, p)]
        assert any(method.lower() in document["paths"][p] for p in documenting), (method, rule)


def test_each_seed_operation_is_a_path_of_its_own(app: Quart) -> None:
    paths = build_document(app)["paths"]
    for route in OpenAIRoute:
        operation = paths[f"/resource_server/{{cluster}}/{{framework}}/v1/{route.value}"]["post"]
        assert [p["name"] for p in operation["parameters"]] == ["cluster", "framework"]


def test_a_route_added_without_documentation_fails_the_document(app: Quart) -> None:
    @app.get("/v1/forgotten")
    async def forgotten() -> Response:
        return Response("")

    with pytest.raises(UndocumentedRoute, match=r"/v1/forgotten \(GET, view forgotten\)"):
        build_document(app)


def test_documenting_a_route_is_one_line_beside_it(app: Quart) -> None:
    @app.get("/v1/remembered/<thing_id>")
    @documented(Operation(summary="A thing.", errors=(401, 404)))
    async def remembered(thing_id: str) -> Response:
        return Response(thing_id)

    operation = build_document(app)["paths"]["/v1/remembered/{thing_id}"]["get"]
    assert operation["summary"] == "A thing."
    assert operation["parameters"][0] == {
        "name": "thing_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1},
    }
    assert set(operation["responses"]) == {"200", "401", "404"}


@pytest.mark.parametrize("route", list(OpenAIRoute))
def test_inference_bodies_are_the_models_the_core_validates_with(
    app: Quart, route: OpenAIRoute
) -> None:
    document = build_document(app)
    body = document["paths"][f"/v1/{route.value}"]["post"]["requestBody"]
    reference = body["content"]["application/json"]["schema"]["$ref"]
    model = request_model(route)
    assert reference == SCHEMAS + model.__name__
    schema = model.model_json_schema(ref_template=SCHEMAS + "{model}")
    assert document["components"]["schemas"][model.__name__] == schema
    assert "model_params" in str(schema["not"])  # the reserved fields are in the schema


def test_every_error_is_openai_shaped_and_every_key_is_a_bearer_token(app: Quart) -> None:
    document = build_document(app)
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    error = document["components"]["schemas"]["ErrorDetail"]
    assert set(error["required"]) == {"message", "type", "param", "code"}
    open_routes = set()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, answer in operation["responses"].items():
                if status != "200":
                    schema = answer["content"]["application/json"]["schema"]
                    # Anthropic's Messages API answers in Anthropic's error shape.
                    shape = (
                        "AnthropicErrorResponse" if path.endswith("/messages") else "ErrorResponse"
                    )
                    assert schema == {"$ref": SCHEMAS + shape}, (method, path)
            if {"bearerAuth": []} not in operation["security"]:
                open_routes.add(f"{method.upper()} {path}")
            else:
                assert "401" in operation["responses"], (method, path)
    assert open_routes == {
        "GET /openapi.json",
        "GET /resource_server/health",
        # The status page and its files (its data route takes a key optionally).
        "GET /",
        "GET /status",
        "GET /status/assets/page.js",
        "GET /status/assets/page.css",
        "GET /resource_server/status",
    }


def test_the_document_is_valid_openapi(app: Quart) -> None:
    document: dict[str, Any] = build_document(app)
    loaded = schemathesis.openapi.from_dict(document)
    loaded.validate()
    assert len(list(loaded.get_all_operations())) >= 20
