"""Who is calling: an identity provider's answer as the event the core expects.

The driver feeds this event to the request machine; the listing routes read the same
event, so both ask the provider the same way and read its errors the same way.  The
provider's exceptions are turned into data here and nowhere else.
"""

from __future__ import annotations

import logging

import anyio

from core import IdentityResolved, IdentityUnavailable, redact
from frontends.identity import AccessRefused, CredentialsRejected, IdentityProvider

__all__ = ["resolve_caller"]

log = logging.getLogger("inference_gateway")


async def resolve_caller(
    provider: IdentityProvider, credentials: str
) -> IdentityResolved | IdentityUnavailable:
    """The provider's verdict on `credentials`: an identity, a refusal, or an outage."""
    try:
        identity = await provider.resolve(credentials)
    except anyio.get_cancelled_exc_class():
        raise
    except CredentialsRejected as exc:
        return IdentityResolved(identity=None, reason=exc.reason)
    except AccessRefused as exc:
        return IdentityResolved(identity=None, refused_by=exc.rule)
    except Exception as exc:
        log.warning("identity provider failed: %s", type(exc).__name__)
        return IdentityUnavailable(detail=redact(f"{type(exc).__name__}: {exc}"))
    if identity is None:  # the provider does not know these credentials
        return IdentityResolved(identity=None, reason="unknown")
    return IdentityResolved(identity=identity)
