"""The app factory: one Quart app per Gateway, blueprints per API area, errors in one place."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from itertools import chain
from typing import Any

from quart import Quart, Response, current_app, request
from quart.sessions import NullSession, SessionInterface
from quart.wrappers import BaseRequestWebsocket
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from core import (
    BackendError,
    ClientError,
    error_response,
    in_dialect,
    route_of_path,
    type_for_status,
)
from frontends.batch_runner import BatchRunner
from frontends.batches import Batches
from frontends.gateway import Gateway
from frontends.listings import Listings
from frontends.metrics import MetricsSink
from frontends.request_log import RequestLog
from frontends.store import Replicas
from frontends.usage import Operators
from frontends.web.access import AccessLog
from frontends.web.batches_api import BATCHES_KEY, UPLOAD_ENDPOINT, batches_api
from frontends.web.convert import (
    GATEWAY_KEY,
    LISTINGS_KEY,
    OPERATORS_KEY,
    REQUEST_LOG_KEY,
    current_request,
    to_quart,
)
from frontends.web.metrics import METRICS_KEY, METRICS_TOKEN_KEY, metrics_api
from frontends.web.openai_api import openai_api
from frontends.web.openapi import openapi_api
from frontends.web.request_class import with_cached_blueprints
from frontends.web.resource_server import resource_server
from frontends.web.seed_batches_api import seed_batches_api
from frontends.web.status_page import DEFAULT_WINDOW, STATUS_KEY, StatusSettings, status_page
from frontends.web.unread_body import read_unread_body

__all__ = ["create_app"]

log = logging.getLogger("inference_gateway")

MAX_BODY_KEY = "INFERENCE_GATEWAY_MAX_BODY_BYTES"


def create_app(
    gateway: Gateway,
    *,
    max_body_bytes: int = 16 * 1024 * 1024,
    max_header_bytes: int = 32 * 1024,
    app_class: type[Quart] = Quart,
    metrics: MetricsSink | None = None,
    metrics_token: str | None = None,
    batches: Batches | None = None,
    batch_runner: BatchRunner | None = None,
    request_log: RequestLog | None = None,
    operators: Operators | None = None,
    replicas: Replicas | None = None,
    status_window: float = DEFAULT_WINDOW,
    shield_sends: bool = False,
    freeze_startup_heap: bool = False,
) -> Quart:
    """The app; `app_class=quart_trio.QuartTrio` gives the same app on trio.

    With `metrics` (the sink the gateway was built with), `GET /metrics` serves them,
    to anyone or, with `metrics_token`, only to `Authorization: Bearer <token>`.
    With `batches`, it serves the files and batches routes; with `batch_runner` too, the
    runner runs as a background task while the app serves (stopped gracefully at the end).
    With a `request_log` (its store already open), the app runs its writer while it
    serves and flushes it when it stops, and answers `/resource_server/usage`;
    `operators` may see everyone's usage there.
    A body over `max_body_bytes` gets a 413, a request line and headers over
    `max_header_bytes` a 431 (`frontends.web.limits`; serve with `hypercorn_limits`).
    With `replicas` (this server's row in the shared database, already checked), it
    keeps the row's heartbeat while serving.
    The status page (`/`, `/status`) shows figures over the last `status_window` seconds.
    `shield_sends` is for quart-trio under Hypercorn's trio worker (`AccessLog` says why).
    `freeze_startup_heap` (what `serve` asks; see `_freeze_startup_heap`) is for a process
    that serves this app and nothing else: it changes the whole process's collector.
    """
    # No static route: Quart would serve any file under ./static of the working directory.
    app = app_class("inference_gateway", static_folder=None)
    # Quart types the attribute as its default class, not as the base it documents.
    app.session_interface = _NoSessions()  # type: ignore[assignment]
    app.request_class = with_cached_blueprints(app.request_class)
    app.config.update(
        RESPONSE_TIMEOUT=None,  # streams last as long as the model keeps talking
        MAX_CONTENT_LENGTH=max_body_bytes,
        PROVIDE_AUTOMATIC_OPTIONS=True,
    )
    app.config[MAX_BODY_KEY] = max_body_bytes  # what a 413 names as the limit
    app.extensions[GATEWAY_KEY] = gateway
    app.extensions[LISTINGS_KEY] = Listings.of(gateway)
    app.register_blueprint(openai_api)
    app.register_blueprint(resource_server)
    app.register_blueprint(openapi_api)
    app.extensions[STATUS_KEY] = StatusSettings(window=status_window)
    app.register_blueprint(status_page)
    if metrics is not None:
        app.extensions[METRICS_KEY] = metrics
        app.extensions[METRICS_TOKEN_KEY] = metrics_token
        app.register_blueprint(metrics_api)
    if batches is not None:
        app.extensions[BATCHES_KEY] = batches
        app.register_blueprint(batches_api)
        app.register_blueprint(seed_batches_api)  # the seed's /resource_server batch routes
        _allow_uploads(app, max_body_bytes, batches.limits.max_file_bytes + (1 << 20))
    if batch_runner is not None:
        _run_in_background(app, batch_runner, batches)
    read_unread_body(app)  # quart-trio wedges a connection whose body was left unread
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    # Request ids, the header limit and the access log, around everything (Quart's own
    # errors included).
    access = AccessLog(app.asgi_app, max_header_bytes=max_header_bytes, shield_sends=shield_sends)
    app.asgi_app = access  # type: ignore[method-assign,assignment]
    gateway.add_log_sink(access)
    app.extensions[REQUEST_LOG_KEY] = request_log
    app.extensions[OPERATORS_KEY] = operators or Operators()
    if request_log is not None:
        gateway.add_log_sink(request_log)

        @app.while_serving
        async def run_request_log() -> AsyncGenerator[None, None]:
            async with request_log.running():
                yield

    if replicas is not None:
        _keep_announcing(app, replicas)

    if gateway.health.policy.refresh_status:

        @app.before_serving
        async def refresh_cluster_status() -> None:
            stopping = getattr(app, "shutdown_event", None)
            app.add_background_task(
                gateway.health.refresh_forever, None if stopping is None else stopping.wait
            )

    @app.after_serving
    async def close_gateway() -> None:
        await gateway.aclose()

    if freeze_startup_heap:
        app.while_serving(_freeze_startup_heap)  # last: after everything else has started
    _checked_once(app)
    return app


def _checked_once(app: Quart) -> None:
    """Quart's `ensure_async` answered from a set for the app's own views and hooks.

    Quart asks it of every view, hook and error handler it calls and of the session
    interface (four times a request here), and each time it asks `inspect` whether the
    function is a coroutine function: a handful of Python calls for an answer that never
    changes.  The functions registered by now are asked once; the ones Quart keeps as
    they are (coroutine functions) are handed back from the set, anything else
    (registered later, or not a coroutine function) still goes through Quart's own
    `ensure_async`.  The set holds only what the app holds anyway."""
    ensure_async = app.ensure_async
    registered = chain(
        (app.session_interface.open_session,),
        app.view_functions.values(),
        *app.before_request_funcs.values(),
        *app.after_request_funcs.values(),
        *app.teardown_request_funcs.values(),
    )
    kept = frozenset(function for function in registered if ensure_async(function) is function)

    def checked(function: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        try:
            if function in kept:
                return function
        except TypeError:  # an unhashable callable: not one of ours
            pass
        return ensure_async(function)

    app.ensure_async = checked  # type: ignore[method-assign,assignment]


async def _freeze_startup_heap() -> AsyncGenerator[None, None]:
    """Everything the process holds once it has started (modules, fixtures, the app,
    pools, caches: some hundred thousand objects) moved out of the collector's reach
    while it serves (`gc.freeze`).  Why: none of it becomes garbage, yet every full
    collection walked all of it, stopping the event loop for tens of milliseconds at a
    time; served with the bench's load, that was most of the gateway's p99 (one worker,
    concurrency 1: 10.7 -> 2.7 ms; concurrency 32: 111 -> 53 ms), at no cost in CPU.
    Thawed when serving ends, so the process's last collections see everything again."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class _NoSessions(SessionInterface):
    """No sessions: every client authenticates each request with its key, and nothing
    reads or writes `quart.session`.  Quart's default interface would still look for a
    signing key and build a fresh empty (null) session for every request; this one hands
    every request the same null session, made once.  It is as unusable as Quart's own
    (writing to it raises), so sharing it shares nothing, and Quart never saves it."""

    _null = NullSession()

    async def open_session(self, app: Quart, request: BaseRequestWebsocket) -> NullSession:
        return self._null


def _allow_uploads(app: Quart, max_body_bytes: int, max_upload_bytes: int) -> None:
    """A file upload may be as large as the batch file limit allows; every other route
    keeps `max_body_bytes` (refused by its declared length before the body is read)."""
    if max_upload_bytes <= max_body_bytes:
        return
    app.config["MAX_CONTENT_LENGTH"] = max_upload_bytes

    @app.before_request
    async def keep_other_bodies_small() -> None:
        # On every request: the length first, and the endpoint only for a large body.
        current = current_request()
        length = current.content_length
        if length is not None and length > max_body_bytes and current.endpoint != UPLOAD_ENDPOINT:
            raise RequestEntityTooLarge()


def _keep_announcing(app: Quart, replicas: Replicas) -> None:
    """The replica's heartbeat while serving, its row deleted when the app stops."""

    @app.before_serving
    async def start_heartbeat() -> None:
        stopping = getattr(app, "shutdown_event", None)
        app.add_background_task(replicas.keep_beating, None if stopping is None else stopping.wait)

    @app.after_serving
    async def leave_replicas() -> None:
        await replicas.aleave()


def _run_in_background(app: Quart, runner: BatchRunner, batches: Batches | None) -> None:
    if batches is not None:
        batches.notify(runner.wake)

    @app.before_serving
    async def start_batch_runner() -> None:
        # Quart sets shutdown_event when it stops (quart-trio cancels background tasks).
        stopping = getattr(app, "shutdown_event", None)
        app.add_background_task(runner.run, stopping=None if stopping is None else stopping.wait)

    @app.after_serving
    async def stop_batch_runner() -> None:
        # Before the gateway closes and the request log stops (registered after this):
        # quart-trio's background tasks are cancelled once shutdown ends, so the lines
        # in flight finish here, within the time Quart gives background tasks.
        await runner.stop_and_wait(app.config["BACKGROUND_TASK_SHUTDOWN_TIMEOUT"] or 0)


async def _http_error(error: HTTPException) -> Response:
    """Quart's own refusals (unknown route, wrong method, body too large) in OpenAI's shape."""
    status = error.code or 500
    messages = {
        404: "Unknown route. The OpenAI API is served under /v1 and /resource_server.",
        405: "Method not allowed on this route.",
        413: (
            "The request body is too large: at most "
            f"{current_app.config.get(MAX_BODY_KEY)} bytes are accepted."
        ),
    }
    message = messages.get(status, error.description or error.name)
    code = (error.name or "error").lower().replace(" ", "_")
    kind = ClientError if status < 500 else BackendError
    # A 405 says which methods the route takes (RFC 9110 requires Allow).
    allowed = getattr(error, "valid_methods", None) if status == 405 else None
    headers = (("allow", ", ".join(sorted(allowed))),) if allowed else ()
    refusal = kind(message, status=status, type=type_for_status(status), code=code, headers=headers)
    return to_quart(in_dialect(route_of_path(request.path), error_response(refusal)))


async def _unexpected_error(error: Exception) -> Response:
    """A bug of ours: logged in full for the operator, a plain 500 for the client."""
    log.error("unhandled error", exc_info=error)
    response = error_response(
        BackendError("The gateway hit an internal error.", status=500, code="internal_error")
    )
    return to_quart(in_dialect(route_of_path(request.path), response))
