"""The app's request class answers `blueprint` and `blueprints` as Quart's own does."""

from __future__ import annotations

from typing import Any

import pytest
from quart import Quart
from quart.wrappers import Request
from quart_trio import QuartTrio
from werkzeug.datastructures import Headers
from werkzeug.routing import Rule

from frontends.web.request_class import with_cached_blueprints


async def _no_push(path: str, headers: Headers) -> None:
    pass


ENDPOINTS = [None, "index", "openai_api.chat_completions", "outer.inner.view", "a.b.c.d"]


@pytest.mark.parametrize("app_class", [Quart, QuartTrio])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_blueprints_as_quart_reads_them(app_class: type[Quart], endpoint: str | None) -> None:
    base = app_class.request_class
    cached = with_cached_blueprints(base)
    assert issubclass(cached, base)
    assert with_cached_blueprints(base) is cached  # one class per base

    def made(request_class: type[Request]) -> Request:
        scope: Any = {"type": "http"}
        request = request_class(
            "GET", "http", "/", b"", Headers(), "", "1.1", send_push_promise=_no_push, scope=scope
        )
        if endpoint is not None:
            request.url_rule = Rule("/", endpoint=endpoint)  # type: ignore[assignment]
        return request

    ours, quarts = made(cached), made(base)
    for _ in range(2):  # the first read fills the table, the second reads it
        assert ours.blueprint == quarts.blueprint
        assert ours.blueprints == quarts.blueprints
        assert type(ours.blueprints) is list
    ours.blueprints.append("changed")  # a fresh list each time, as Quart's
    assert ours.blueprints == quarts.blueprints
