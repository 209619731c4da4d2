"""The one interface every identity provider implements, the errors it may raise, and
the chain that tries several providers in the operator's order.

A provider answers `resolve(credentials)` with an `Identity`, or None when the
credentials are simply not its own (an unknown key, a token of another kind).  It raises
`CredentialsRejected` when it knows the credentials and refuses them (expired, inactive:
a 401 with that reason), `AccessRefused` when the identity is valid but a gateway-wide
rule of the provider refuses it (a 403), and `ProviderUnavailable` when it cannot answer
at all (a 503).  No exception message ever carries the credentials.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from core import REFUSAL_REASONS, Identity, Rule

__all__ = [
    "AccessRefused",
    "ChainProvider",
    "CredentialsRejected",
    "IdentityProvider",
    "ProviderUnavailable",
    "acceptable_username",
]


class IdentityProvider(Protocol):
    async def resolve(self, credentials: str) -> Identity | None:
        """The identity behind the credentials, or None when they are not valid."""
        ...


class CredentialsRejected(Exception):
    """The provider knows these credentials and refuses them; `reason` is from the core's
    fixed vocabulary (`REFUSAL_REASONS`)."""

    def __init__(self, reason: str) -> None:
        if reason not in REFUSAL_REASONS:
            raise ValueError(f"unknown refusal reason {reason!r}")
        super().__init__(reason)
        self.reason = reason


class AccessRefused(Exception):
    """A valid identity that a gateway-wide rule of the provider refuses."""

    def __init__(self, rule: Rule) -> None:
        super().__init__(f"refused by the gateway-wide {rule.value} rule")
        self.rule = rule


class ProviderUnavailable(Exception):
    """The provider could not answer: down, slow, or answering nonsense."""


def acceptable_username(username: str) -> bool:
    """Usernames the edge lets through: no `<`, `>`, whitespace, at most one `@`."""
    return (
        bool(username)
        and not any(c in "<>" or c.isspace() for c in username)
        and username.count("@") <= 1
    )


class ChainProvider:
    """Providers tried in a fixed order; the first identity wins.

    Without an identity from anyone, a provider that could not answer makes the whole
    answer "unavailable" (its verdict might have been yes), else the first refusal is
    raised, else None.
    """

    def __init__(self, providers: Sequence[IdentityProvider]) -> None:
        self.providers = tuple(providers)

    async def resolve(self, credentials: str) -> Identity | None:
        refusal: CredentialsRejected | AccessRefused | None = None
        outage: ProviderUnavailable | None = None
        for provider in self.providers:
            try:
                identity = await provider.resolve(credentials)
            except (CredentialsRejected, AccessRefused) as exc:
                refusal = refusal or exc
                continue
            except ProviderUnavailable as exc:
                outage = outage or exc
                continue
            if identity is not None:
                return identity
        if outage is not None:
            raise outage
        if refusal is not None:
            raise refusal
        return None

    async def aclose(self) -> None:
        for provider in self.providers:
            close = getattr(provider, "aclose", None)
            if close is not None:
                await close()
