"""Where an OpenAI route lives, given the URL an operator configured.

Seed fixtures give a *full* route URL (`https://host/v1/chat/completions`), yet the
gateway sends completions and embeddings for the same model to the same backend.  So the
configured URL is reduced to its base (the route suffix removed) and the requested route
is appended to that, keeping any query string (Azure-style `?api-version=`).
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import urlsplit, urlunsplit

__all__ = ["ROUTE_SUFFIXES", "resolve_url"]

# Longest first: "/chat/completions" also ends with "/completions".
ROUTE_SUFFIXES = ("/chat/completions", "/completions", "/embeddings", "/responses", "/messages")


def _strip_route(path: str) -> str:
    path = path.rstrip("/")
    for suffix in ROUTE_SUFFIXES:
        if path.endswith(suffix):
            return path[: -len(suffix)].rstrip("/")
    return path


@lru_cache(maxsize=1024)  # a few URLs per endpoint, asked on every request
def resolve_url(api_url: str, route: str | None) -> str:
    """The URL to call for `route`; with no route, the configured URL exactly as given."""
    if route is None:
        return api_url
    parts = urlsplit(api_url)
    path = f"{_strip_route(parts.path)}/{route.strip('/')}"
    return urlunsplit(parts._replace(path=path))
