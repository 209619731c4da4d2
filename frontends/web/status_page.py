"""The status page: `/` and `/status`, its script and style, and `GET /status/summary`.

The page is three small files shipped in the package (`static/`), served from memory
with a Content-Security-Policy that allows nothing but this origin: no build step, no
asset from elsewhere.  Its script asks `/status/summary` every 15 seconds.

The summary is IO gathered here and decided in the core (`core.status_summary`): which
endpoints to show (the public ones without a key, the caller's own with one), each
model's state from the cluster status cache (`HealthBook.jobs`, the one way the gateway
reads cluster status), the figures from the request log over the last
`status_window` seconds (the same on every worker and replica, since all write to the
one log), and for a caller their usage today and what their quota counters hold.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import anyio
import attrs
from quart import Blueprint, Response, current_app, request

from core import (
    JSON_HEADERS,
    EndpointRecord,
    Figures,
    Identity,
    ModelState,
    endpoint_figures,
    model_states,
    remaining_tokens,
    status_summary,
    user_tokens_key,
    visible_endpoints,
)
from frontends.api_models import StatusSummary
from frontends.gateway import Gateway, GatewayResponse
from frontends.store import recent_samples, usage
from frontends.web.convert import current_gateway, current_listings, current_request_log, to_quart
from frontends.web.openapi import Operation, documented

__all__ = ["DEFAULT_WINDOW", "STATUS_KEY", "StatusSettings", "status_page"]

log = logging.getLogger("inference_gateway")

STATUS_KEY = "inference_gateway_status_page"
DEFAULT_WINDOW = 900.0  # seconds of the request log the figures cover
# The figures are read at most this often per process, however many visitors ask.
FIGURES_TTL = 5.0

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def _asset(name: str) -> bytes:
    return (resources.files("frontends.web") / "static" / name).read_bytes()


def _versioned(name: str, content: bytes) -> str:
    return f"/status/assets/{name}?v={hashlib.sha256(content).hexdigest()[:12]}"


_SCRIPT = _asset("page.js")
_STYLE = _asset("page.css")
_PAGE = (
    _asset("page.html")
    .replace(b"{{script}}", _versioned("page.js", _SCRIPT).encode())
    .replace(b"{{style}}", _versioned("page.css", _STYLE).encode())
)


@attrs.define
class StatusSettings:
    """The page's window, and the figures last read (with the monotonic time of it)."""

    window: float = DEFAULT_WINDOW
    figures: dict[str, Figures] | None = None
    read_at: float = float("-inf")


status_page = Blueprint("status_page", __name__)


def _serve(content: bytes, media: str, cache: str) -> Response:
    headers = {**_SECURITY_HEADERS, "Cache-Control": cache}
    return Response(content, status=200, content_type=media, headers=headers)


@status_page.get("/")
@status_page.get("/status")
@documented(
    Operation(
        summary="The status page: clusters, models, their state and recent figures.",
        auth="none",
        media="text/html",
        errors=(),
        tags=("status",),
    )
)
async def page() -> Response:
    return _serve(_PAGE, "text/html; charset=utf-8", "no-cache")


@status_page.get("/status/assets/page.js")
@documented(
    Operation(
        summary="The status page's script.",
        auth="none",
        media="text/javascript",
        errors=(),
        tags=("status",),
    )
)
async def script() -> Response:
    return _serve(_SCRIPT, "text/javascript; charset=utf-8", "public, max-age=86400")


@status_page.get("/status/assets/page.css")
@documented(
    Operation(
        summary="The status page's style.",
        auth="none",
        media="text/css",
        errors=(),
        tags=("status",),
    )
)
async def style() -> Response:
    return _serve(_STYLE, "text/css; charset=utf-8", "public, max-age=86400")


@status_page.get("/status/summary")
@documented(
    Operation(
        summary="What the status page shows: without a key the unrestricted models; with "
        "one, the models you may use with your usage and remaining quota.",
        auth="optional",
        answer=StatusSummary,
        errors=(401, 503),
        tags=("status",),
    )
)
async def summary() -> Response:
    authorization = request.headers.get("Authorization")
    identity: Identity | None = None
    if authorization is not None:
        known = await current_listings().authenticate(authorization)
        if isinstance(known, GatewayResponse):
            return to_quart(known)
        identity = known
    gateway = current_gateway()
    settings: StatusSettings = current_app.extensions[STATUS_KEY]
    endpoints = visible_endpoints(gateway.catalog, identity)
    states = await _states(gateway, endpoints)
    figures = await _figures(settings)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    mine: dict[str, Any] = {}
    if identity is not None:
        mine = {
            "usage": await _usage(identity, today),
            "remaining": await _remaining(gateway, identity, endpoints),
            "usage_since": today.isoformat(),
        }
    answer = status_summary(
        gateway.catalog,
        endpoints,
        states=states,
        figures=figures,
        window_seconds=settings.window,
        identity=identity,
        **mine,
    )
    body = json.dumps(answer).encode()
    headers = (*JSON_HEADERS, ("cache-control", "no-store"))
    return to_quart(GatewayResponse(status=200, headers=headers, body=body))


async def _states(gateway: Gateway, endpoints: Sequence[EndpointRecord]) -> dict[str, ModelState]:
    """Each endpoint's model state, by case-folded slug, from its cluster's cached report
    (read now if stale; the clusters side by side)."""
    reports: dict[str, dict[str, ModelState]] = {}

    async def read(cluster: str) -> None:
        answer = await gateway.health.jobs(cluster)
        jobs = None if answer is None or answer.jobs is None else answer.jobs.model_dump()
        reports[cluster] = model_states(jobs)

    async with anyio.create_task_group() as tasks:
        for cluster in dict.fromkeys(e.cluster for e in endpoints):
            tasks.start_soon(read, cluster)
    return {
        e.endpoint_slug.casefold(): reports[e.cluster].get(e.model.casefold(), ModelState.UNKNOWN)
        for e in endpoints
    }


async def _figures(settings: StatusSettings) -> dict[str, Figures] | None:
    """The figures of every endpoint over the window; None without a request log (or
    while it cannot be read)."""
    request_log = current_request_log()
    if request_log is None:
        return None
    now = time.monotonic()
    if now - settings.read_at < FIGURES_TTL:
        return settings.figures
    since = datetime.now(UTC) - timedelta(seconds=settings.window)
    try:
        figures: dict[str, Figures] | None = endpoint_figures(
            await recent_samples(request_log.store, since)
        )
    except Exception:
        log.warning("status page: the request log could not be read", exc_info=True)
        figures = None
    settings.figures, settings.read_at = figures, now
    return figures


async def _usage(identity: Identity, since: datetime) -> dict[str, dict[str, int]] | None:
    """The caller's usage by model since `since`; None without a request log."""
    request_log = current_request_log()
    if request_log is None:
        return None
    try:
        rows = await usage(request_log.store, user=identity.username, since=since, by="model")
    except Exception:
        log.warning("status page: usage could not be read", exc_info=True)
        return None
    return {
        str(row.key): {
            "requests": row.requests,
            "prompt_tokens": row.prompt_tokens,
            "completion_tokens": row.completion_tokens,
            "total_tokens": row.total_tokens,
        }
        for row in rows
        if row.key is not None
    }


async def _remaining(
    gateway: Gateway, identity: Identity, endpoints: Sequence[EndpointRecord]
) -> dict[str, int | None]:
    """What is left of the caller's tokens per minute on each endpoint, by slug."""
    quota, policy = gateway.quota, gateway.quota_policy
    left: dict[str, int | None] = {}
    for endpoint in endpoints:
        capacity = used = None
        if quota is not None and policy is not None and endpoint.tpm_user:
            capacity = policy.part(endpoint.tpm_user)
            try:
                used = await quota.holding(user_tokens_key(endpoint, identity))
            except Exception:
                log.warning("status page: quota counters could not be read", exc_info=True)
        left[endpoint.endpoint_slug.casefold()] = remaining_tokens(endpoint, capacity, used)
    return left
