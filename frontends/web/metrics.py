"""`GET /metrics`: the Prometheus exposition, open to scrapers unless a token is set.

With several workers (multiprocess mode) each worker also copies its request-log queue's
numbers and its quota counters' state into its files every `REFRESH_SECONDS` while it
serves, so a scrape answered by another worker sees an idle worker's queue drain (and its
Redis come back), not what it was at its last request."""

from __future__ import annotations

from typing import Any

import anyio
from quart import Blueprint, Response, current_app, request

from core import ClientError, error_response
from frontends.metrics import MetricsSink, authorized
from frontends.web.convert import to_quart
from frontends.web.openapi import Operation, documented

__all__ = ["METRICS_KEY", "METRICS_TOKEN_KEY", "metrics_api"]

METRICS_KEY = "inference_gateway_metrics"
METRICS_TOKEN_KEY = "inference_gateway_metrics_token"

REFRESH_SECONDS = 1.0

metrics_api = Blueprint("metrics", __name__)


@metrics_api.before_app_serving
async def start_refreshing() -> None:
    sink: MetricsSink = current_app.extensions[METRICS_KEY]
    if sink.multiprocess_dir is not None:
        current_app.add_background_task(_refresh, sink, current_app.shutdown_event)


@metrics_api.after_app_serving
async def stop_refreshing() -> None:
    # Quart sets it when shutting down; quart-trio does not, so say it here too.
    current_app.shutdown_event.set()


async def _refresh(sink: MetricsSink, stopping: Any) -> None:
    """Until the app stops: the log queue's numbers and the quota's state into this
    worker's files."""
    while not stopping.is_set():
        sink.sync_live()
        with anyio.move_on_after(REFRESH_SECONDS):
            await stopping.wait()


@metrics_api.get("/metrics")
@documented(
    Operation(
        summary="Prometheus metrics; a bearer token only when METRICS_TOKEN is set.",
        auth="optional",
        media="text/plain",
        errors=(401,),
        tags=("gateway",),
    )
)
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
