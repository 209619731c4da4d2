"""The app factory: one Quart app per Gateway, blueprints per API area, errors in one place."""

from __future__ import annotations

import logging

from quart import Quart, Response
from werkzeug.exceptions import HTTPException

from core import BackendError, ClientError, error_response, type_for_status
from frontends.gateway import Gateway
from frontends.listings import Listings
from frontends.metrics import MetricsSink
from frontends.web.convert import GATEWAY_KEY, LISTINGS_KEY, to_quart
from frontends.web.metrics import METRICS_KEY, METRICS_TOKEN_KEY, metrics_api
from frontends.web.openai_api import openai_api
from frontends.web.resource_server import resource_server

__all__ = ["create_app"]

log = logging.getLogger("inference_gateway")


def create_app(
    gateway: Gateway,
    *,
    max_body_bytes: int = 16 * 1024 * 1024,
    app_class: type[Quart] = Quart,
    metrics: MetricsSink | None = None,
    metrics_token: str | None = None,
) -> Quart:
    """The app; `app_class=quart_trio.QuartTrio` gives the same app on trio.

    With `metrics` (the sink the gateway was built with), `GET /metrics` serves them,
    to anyone or, with `metrics_token`, only to `Authorization: Bearer <token>`."""
    app = app_class("inference_gateway")
    app.config.update(
        RESPONSE_TIMEOUT=None,  # streams last as long as the model keeps talking
        MAX_CONTENT_LENGTH=max_body_bytes,
        PROVIDE_AUTOMATIC_OPTIONS=True,
    )
    app.extensions[GATEWAY_KEY] = gateway
    app.extensions[LISTINGS_KEY] = Listings.of(gateway)
    app.register_blueprint(openai_api)
    app.register_blueprint(resource_server)
    if metrics is not None:
        app.extensions[METRICS_KEY] = metrics
        app.extensions[METRICS_TOKEN_KEY] = metrics_token
        app.register_blueprint(metrics_api)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)

    @app.after_serving
    async def close_gateway() -> None:
        await gateway.aclose()

    return app


async def _http_error(error: HTTPException) -> Response:
    """Quart's own refusals (unknown route, wrong method, body too large) in OpenAI's shape."""
    status = error.code or 500
    messages = {
        404: "Unknown route. The OpenAI API is served under /v1 and /resource_server.",
        405: "Method not allowed on this route.",
        413: "The request body is too large.",
    }
    message = messages.get(status, error.description or error.name)
    code = (error.name or "error").lower().replace(" ", "_")
    kind = ClientError if status < 500 else BackendError
    response = error_response(kind(message, status=status, type=type_for_status(status), code=code))
    return to_quart(response)


async def _unexpected_error(error: Exception) -> Response:
    """A bug of ours: logged in full for the operator, a plain 500 for the client."""
    log.error("unhandled error", exc_info=error)
    response = error_response(
        BackendError("The gateway hit an internal error.", status=500, code="internal_error")
    )
    return to_quart(response)
