"""The request headers each relayed API defines, read the same way by every front-end.

Anthropic's clients send their key as `x-api-key` rather than `Authorization: Bearer`,
and name the API version they speak in `anthropic-version` (and opt into betas with
`anthropic-beta`).  On the Messages route the gateway takes the key from either header
(`Authorization` wins when both are sent) and hands the version headers on to the
backend unchanged; on every other route neither is read.
"""

from __future__ import annotations

from collections.abc import Callable

from core import OpenAIRoute

__all__ = ["PASSED_ON", "authorization_for", "passed_headers"]

# The client's headers handed on to the backend, per route.
PASSED_ON = {OpenAIRoute.MESSAGES: ("anthropic-version", "anthropic-beta")}


def authorization_for(route: OpenAIRoute, header: Callable[[str], str | None]) -> str | None:
    """The Authorization to resolve for a request, from its headers (`header(name)`)."""
    authorization = header("authorization")
    if authorization or route is not OpenAIRoute.MESSAGES:
        return authorization
    key = header("x-api-key")
    return f"Bearer {key}" if key else None


def passed_headers(
    route: OpenAIRoute, header: Callable[[str], str | None]
) -> tuple[tuple[str, str], ...]:
    """The headers of the client's that its API defines, to send on to the backend."""
    pairs = ((name, header(name)) for name in PASSED_ON.get(route, ()))
    return tuple((name, value) for name, value in pairs if value)
