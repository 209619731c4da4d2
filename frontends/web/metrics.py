"""`GET /metrics`: the Prometheus exposition, open to scrapers unless a token is set."""

from __future__ import annotations

import anyio
from quart import Blueprint, Response, current_app, request

from core import ClientError, error_response
from frontends.metrics import MetricsSink, authorized
from frontends.web.convert import to_quart

__all__ = ["METRICS_KEY", "METRICS_TOKEN_KEY", "metrics_api"]

METRICS_KEY = "inference_gateway_metrics"
METRICS_TOKEN_KEY = "inference_gateway_metrics_token"

metrics_api = Blueprint("metrics", __name__)


@metrics_api.get("/metrics")
async def metrics() -> Response:
    token: str | None = current_app.extensions.get(METRICS_TOKEN_KEY)
    if not authorized(request.headers.get("Authorization"), token):
        refusal = ClientError(
            "The metrics need a bearer token (INFERENCE_GATEWAY_METRICS_TOKEN).",
            status=401,
            type="authentication_error",
            code="invalid_api_key",
            headers=(("www-authenticate", 'Bearer realm="inference-gateway-metrics"'),),
        )
        return to_quart(error_response(refusal))
    sink: MetricsSink = current_app.extensions[METRICS_KEY]
    # With several workers the exposition reads their files: off the event loop.
    body, content_type = await anyio.to_thread.run_sync(sink.render, request.headers.get("Accept"))
    return Response(body, status=200, content_type=content_type)
