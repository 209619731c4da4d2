"""The app's request class: Quart's own (or quart-trio's), with `blueprint` and
`blueprints` found without Quart's per-call work.

Quart reads `request.blueprints` at least three times per request (to run the before-
and after-request hooks and the teardown functions, per blueprint and for the app), and
again to find an error handler.  Its property imports `_split_blueprint_path` anew on
every read (an import statement in the body: the import machinery's look-up each
time), reads `endpoint` twice through `blueprint`, and splits the name; a served
profile put it at about 1.8 % of the gateway's samples.  Here both answers are looked up
by the request's endpoint in a table filled on first use (an app's endpoints are a fixed
set), the same names in the same order, and a fresh list each time, as Quart gives.
"""

from __future__ import annotations

from functools import cache

from quart.helpers import _split_blueprint_path
from quart.wrappers import Request

__all__ = ["with_cached_blueprints"]


class _CachedBlueprints(Request):
    """`blueprint` and `blueprints` as Quart's `BaseRequestWebsocket` defines them."""

    @property
    def blueprint(self) -> str | None:
        rule = self.url_rule
        return None if rule is None else _blueprint_of(rule.endpoint)

    @property
    def blueprints(self) -> list[str]:
        rule = self.url_rule
        return [] if rule is None else list(_blueprints_of(rule.endpoint))


@cache
def _blueprint_of(endpoint: str | None) -> str | None:
    if endpoint is not None and "." in endpoint:
        return endpoint.rsplit(".", 1)[0]
    return None


@cache
def _blueprints_of(endpoint: str | None) -> tuple[str, ...]:
    blueprint = _blueprint_of(endpoint)
    return () if blueprint is None else tuple(_split_blueprint_path(blueprint))


@cache
def with_cached_blueprints(request_class: type[Request]) -> type[Request]:
    """`request_class` (the app's own: Quart's `Request`, quart-trio's `TrioRequest`)
    with the cached look-ups; one class per base."""
    return type(request_class.__name__, (_CachedBlueprints, request_class), {})
