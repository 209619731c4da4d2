"""The web layer's shortcuts give what Quart itself would: `to_quart` builds the same
response as Quart's constructor for every kind of answer, and the app's `ensure_async`
hands back what Quart's own would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from quart import Quart, Response
from werkzeug.datastructures import Headers

from core import Response as CoreResponse
from frontends.gateway import GatewayResponse
from frontends.web.app import _checked_once
from frontends.web.convert import to_quart


async def _chunks() -> AsyncIterator[bytes]:
    yield b"data: 1\n\n"


JSON = ("Content-Type", "application/json")
ANSWERS: dict[str, Any] = {
    "json": GatewayResponse(status=200, headers=(JSON, ("x-request-id", "r1")), body=b'{"a":1}'),
    "empty body": GatewayResponse(status=200, headers=(JSON,), body=b""),
    "error": GatewayResponse(status=404, headers=(JSON,), body=b'{"error":{}}'),
    "allow": GatewayResponse(status=405, headers=(JSON, ("allow", "GET, POST")), body=b"{}"),
    "no content type": GatewayResponse(status=200, headers=(("x-a", "1"),), body=b"x"),
    "content length given": GatewayResponse(
        status=200, headers=(JSON, ("content-length", "2")), body=b"{}"
    ),
    "line break in a value": GatewayResponse(
        status=200, headers=(JSON, ("x-a", "1\r\n")), body=b"x"
    ),
    "not strings": GatewayResponse(status=200, headers=((b"x-a", b"1"),), body=b"x"),  # type: ignore[arg-type]
    "list pairs": GatewayResponse(status=200, headers=([*JSON],), body=b"x"),  # type: ignore[arg-type]
    "core response": CoreResponse(status=400, headers=(JSON,), body=b"{}"),
    "stream": GatewayResponse(
        status=200, headers=(("Content-Type", "text/event-stream"),), stream=_chunks()
    ),
}


def _as_quart_builds_it(answer: Any) -> Response:
    stream = getattr(answer, "stream", None)
    response = Response(
        stream if stream is not None else answer.body,
        status=answer.status,
        headers=Headers(answer.headers),
    )
    if stream is not None:
        response.timeout = None
    return response


def _seen(response: Response) -> tuple[object, ...]:
    return (
        type(response.response),
        getattr(response.response, "data", None),
        response.status,
        response.status_code,
        list(response.headers.items()),
        response.timeout,
        response.content_length,
        response.mimetype,
    )


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_to_quart_gives_what_quarts_constructor_gives(name: str) -> None:
    answer = ANSWERS[name]
    try:
        ours = to_quart(answer)
    except Exception as exc:  # then Quart's own must refuse it alike
        with pytest.raises(type(exc)):
            _as_quart_builds_it(answer)
        return
    assert isinstance(ours, Response)
    assert _seen(ours) == _seen(_as_quart_builds_it(answer))


class _Unhashable:
    __hash__ = None  # type: ignore[assignment]

    def __call__(self) -> str:
        return "sync"


def test_ensure_async_answers_as_quarts_own() -> None:
    app = Quart(__name__)

    @app.route("/")
    async def index() -> str:
        return "ok"

    def later() -> str:
        return "sync"

    own = app.ensure_async
    _checked_once(app)
    assert app.ensure_async(index) is own(index) is index
    for function in (later, _Unhashable()):
        wrapped = app.ensure_async(function)  # type: ignore[arg-type]
        assert wrapped is not function  # run in a thread, as Quart's own does
