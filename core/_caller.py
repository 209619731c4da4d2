"""Who is calling: the one decision from an Authorization header to an identity or a refusal.

Every route that needs a caller asks the same two questions in the same order, so both
live here and nowhere else: the request machine uses them for OpenAI calls and the
driver for the listing routes (models, endpoints, jobs, whoami).

1. `credentials(authorization)`: the bearer token, or the 401 for a missing or
   malformed one (no identity provider is asked).
2. `caller(answer)`: once the identity edge has answered (IdentityResolved or
   IdentityUnavailable), the identity, or the 401/403/503 to answer with.
"""

from __future__ import annotations

from core._authorization import Rule
from core._errors import BackendError, ClientError, GatewayError
from core._events import IdentityResolved, IdentityUnavailable
from core._records import Identity

__all__ = [
    "bearer_credentials",
    "caller",
    "credentials",
    "identity_refusal",
    "identity_unavailable",
    "missing_credentials",
]

_REALM = 'Bearer realm="inference-gateway"'


def bearer_credentials(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    # `split()` cuts at exactly the characters `isspace` names: one piece, no whitespace
    # inside (one C call, not a generator step per character of every request's key).
    if scheme.lower() != "bearer" or not token or len(token.split()) != 1:
        return None
    return token


def missing_credentials() -> ClientError:
    """The answer to a request without a bearer token: 401 with a Bearer challenge."""
    return ClientError(
        "Missing bearer token in the Authorization header.",
        status=401,
        type="authentication_error",
        code="invalid_api_key",
        headers=(("www-authenticate", _REALM),),
    )


def identity_unavailable() -> BackendError:
    """The answer when the identity provider cannot be asked: not the caller's fault."""
    return BackendError(
        "The identity provider is unavailable; try again shortly.",
        status=503,
        code="identity_provider_unavailable",
    )


def identity_refusal(event: IdentityResolved) -> ClientError:
    """The answer to credentials the provider did not accept: 401 with a Bearer challenge
    (its `error_description` the provider's reason), or 403 for a gateway-wide rule."""
    if event.refused_by is not None:
        what = "group membership" if event.refused_by is Rule.GROUP else "identity domain"
        return ClientError(
            f"Permission denied: this gateway is restricted by {what}.",
            status=403,
            type="permission_error",
            code="permission_denied",
        )
    reason = event.reason or "unknown"
    challenge = f'{_REALM}, error="invalid_token", error_description="{reason} token"'
    if reason == "unacceptable username":
        challenge = f'{_REALM}, error="invalid_token", error_description="{reason}"'
    return ClientError(
        f"Invalid bearer token ({reason}).",
        status=401,
        type="authentication_error",
        code="invalid_api_key",
        headers=(("www-authenticate", challenge),),
    )


def credentials(authorization: str | None) -> str | ClientError:
    """Step 1: the bearer token to resolve, or the 401 that ends the request here."""
    token = bearer_credentials(authorization)
    return missing_credentials() if token is None else token


def caller(answer: IdentityResolved | IdentityUnavailable) -> Identity | GatewayError:
    """Step 2: the identity the edge vouched for, or the error to answer with."""
    if isinstance(answer, IdentityUnavailable):
        return identity_unavailable()
    if answer.identity is None:
        return identity_refusal(answer)
    return answer.identity
