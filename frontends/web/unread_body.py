"""Reading what is left of a request's body before its answer goes (a workaround).

Under quart-trio with Hypercorn's trio worker, an answer given before the request's body
was read (a 404 or 405 from routing, a refusal that needs no body) leaves the keep-alive
connection wedged about one time in eight: the client's next request on it is never
answered.  schemathesis found it against `serve --loop trio`; a bare QuartTrio app with
one route does the same, a raw ASGI app under the same worker does not, so the fault is
upstream, between quart-trio's body task and the worker.  Reading the body the client is
sending anyway keeps the connection in step, on both loops alike.

Nothing to do, and nothing paid, when the whole body has already reached Quart (the
access layer saw its last part arrive): the usual case, since a handler that uses the
body has read it, and a small one comes with the request's head.

Bounded: a body refused for its size (413), or declared larger than the app takes, is
not read, one that grows past it stops the reading, and a client that declares a body and
never sends it is waited for `WAIT_SECONDS` at most.
"""

from __future__ import annotations

import contextlib

import anyio
from quart import Quart, Response, current_app, request
from werkzeug.exceptions import HTTPException

from frontends.web.access import SCOPE_KEY, Trace

__all__ = ["WAIT_SECONDS", "read_unread_body"]

WAIT_SECONDS = 5.0


def read_unread_body(app: Quart) -> None:
    """Have `app` read each request's remaining body after its handler answered."""
    app.after_request(_read_rest)


async def _read_rest(response: Response) -> Response:
    if response.status_code == 413:  # refused for its size: never read it
        return response
    trace = request.scope.get(SCOPE_KEY)
    if isinstance(trace, Trace) and trace.body_received:
        return response
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    length = request.content_length
    if limit is not None and length is not None and length > limit:
        return response
    # A body that grows past the limit raises 413 while read: the reading stops there.
    with anyio.move_on_after(WAIT_SECONDS), contextlib.suppress(HTTPException):
        await request.get_data(cache=True, as_text=False, parse_form_data=False)
    return response
