"""Between Quart's request/response objects and the Gateway's plain records."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from quart import Request, Response, current_app, request
from werkzeug.datastructures import Headers
from werkzeug.local import LocalProxy

from core import OpenAIRoute
from core import Response as CoreResponse
from frontends.api_headers import authorization_for, passed_headers
from frontends.gateway import ByteStream, Gateway, GatewayRequest, GatewayResponse
from frontends.listings import Listings
from frontends.request_log import RequestLog
from frontends.usage import Operators
from frontends.web.access import SCOPE_KEY, Trace

__all__ = [
    "GATEWAY_KEY",
    "LISTINGS_KEY",
    "current_gateway",
    "current_listings",
    "current_operators",
    "current_request",
    "current_request_id",
    "current_request_log",
    "gateway_request",
    "request_body",
    "to_quart",
]

GATEWAY_KEY = "inference_gateway"
LISTINGS_KEY = "inference_gateway_listings"
REQUEST_LOG_KEY = "inference_gateway_request_log"
OPERATORS_KEY = "inference_gateway_operators"


def current_gateway() -> Gateway:
    gateway: Gateway = current_app.extensions[GATEWAY_KEY]
    return gateway


def current_listings() -> Listings:
    listings: Listings = current_app.extensions[LISTINGS_KEY]
    return listings


def current_request_log() -> RequestLog | None:
    request_log: RequestLog | None = current_app.extensions.get(REQUEST_LOG_KEY)
    return request_log


def current_operators() -> Operators:
    operators: Operators = current_app.extensions[OPERATORS_KEY]
    return operators


async def gateway_request(
    route: OpenAIRoute, *, cluster: str | None = None, framework: str | None = None
) -> GatewayRequest:
    current = current_request()
    trace = current.scope.get(SCOPE_KEY)
    traced: dict[str, Any] = {}
    if isinstance(trace, Trace):  # the access layer's ids for this request
        traced = {"request_id": trace.request_id, "log_id": trace.log_id}
    else:
        trace = None
    header = current.headers.get
    return GatewayRequest(
        route=route,
        body=await _body(current, trace),
        content_type=header("Content-Type"),
        authorization=authorization_for(route, header),
        cluster=cluster,
        framework=framework,
        client=current.remote_addr or None,
        passed_headers=passed_headers(route, header),
        **traced,
    )


async def request_body(trace: Trace | None = None) -> bytes:
    """The request's body, not kept by Quart: it would keep its own copy for as long as
    the request lasts (a stream's whole life); the gateway holds the one it needs.

    A body the access layer saw arrive whole is taken as it is; only one still arriving
    goes through `get_data`, whose wait for it is bounded by Quart's `BODY_TIMEOUT` (on
    asyncio that bound costs a task and a timer, for nothing when there is nothing left
    to wait for).  Both raise the same 413 for a body over the limit.
    """
    return await _body(current_request(), trace)


async def _body(current: Request, trace: Trace | None) -> bytes:
    if trace is not None and trace.body_received:
        body = current.body
        data: bytes = await body
        body.clear()
        return data
    return await current.get_data(cache=False, as_text=False, parse_form_data=False)


def current_request() -> Request:
    """Quart's request itself, looked up once: every attribute read through the
    context-local `request` looks it up again."""
    return cast("LocalProxy[Request]", request)._get_current_object()


def current_request_id() -> str | None:
    """The HTTP request id the access layer gave this request, if it runs."""
    trace = request.scope.get(SCOPE_KEY)
    return trace.request_id if isinstance(trace, Trace) else None


def to_quart(answer: GatewayResponse | CoreResponse) -> Response:
    stream = getattr(answer, "stream", None)
    body: Any = answer.body
    kept = _plain_pairs(answer.headers)
    if kept is not None and (stream is not None or body.__class__ is bytes):
        response: Response = _Answer(stream, body, answer.status, kept)
    else:
        response = Response(
            stream if stream is not None else body,
            status=answer.status,
            headers=Headers(answer.headers),
        )
    if stream is not None:
        response.timeout = None
    return response


def _plain_pairs(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]] | None:
    """The answer's header pairs as a list werkzeug's `Headers` keeps, when they need
    none of the work Quart's `Response` would do on them: strings, no line break in a
    value (what werkzeug's per-pair checks pass unchanged), a content type given (none
    to default) and no content length (none to replace).  Else None."""
    kept = []
    typed = False
    for pair in pairs:
        name, value = pair
        if (
            name.__class__ is not str
            or value.__class__ is not str
            or "\n" in value
            or "\r" in value
        ):
            return None
        lowered = name.lower()
        if lowered == "content-type":
            typed = True
        elif lowered == "content-length":
            return None
        kept.append(pair if pair.__class__ is tuple else (name, value))
    return kept if typed else None


class _Answer(Response):
    """Quart's `Response` for a body of bytes or a stream, with headers that need no work
    (`_plain_pairs`): the same attributes and the same headers, `Content-Length` last
    for a body, as Quart's constructor gives it, without its general steps (the headers
    added one by one through werkzeug's checks, the content-type default looked up,
    the body's type tested against its classes, the length set through a header
    property): about 21k instructions off a JSON answer and 8k off a stream's."""

    def __init__(
        self,
        stream: ByteStream | None,
        body: bytes,
        status: int,
        pairs: list[tuple[str, str]],
    ) -> None:
        headers = Headers()
        headers._list = pairs
        self.headers = headers
        self.status = status
        self.timeout = Ellipsis
        if stream is None:
            self.response = self.data_body_class(body)
            pairs.append(("Content-Length", str(len(body))))
        else:
            self.response = self.iterable_body_class(stream)
