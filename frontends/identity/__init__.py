"""Identity at the edge: bearer credentials in, an `Identity` for the core out.

One interface (`IdentityProvider.resolve`), three providers, tried in the operator's
order by a `ChainProvider`: static API keys (the embedded default), Globus Auth token
introspection, and OIDC/JWT.  `build_identity(settings)` makes the chain the settings ask
for.
"""

from typing import TYPE_CHECKING, Any

from frontends.identity._base import (
    AccessRefused,
    ChainProvider,
    CredentialsRejected,
    IdentityProvider,
    ProviderUnavailable,
    acceptable_username,
)
from frontends.identity._build import build_identity
from frontends.identity._globus import GlobusAuth
from frontends.identity._static import (
    StaticKeys,
    add_key,
    ensure_tokens_file,
    first_token,
    holds_key,
    local_key_path,
    local_username,
    read_entries,
    revoke_keys,
)

if TYPE_CHECKING:
    from frontends.identity._oidc import OIDCProvider

__all__ = [
    "AccessRefused",
    "ChainProvider",
    "CredentialsRejected",
    "GlobusAuth",
    "IdentityProvider",
    "OIDCProvider",
    "ProviderUnavailable",
    "StaticKeys",
    "acceptable_username",
    "add_key",
    "build_identity",
    "ensure_tokens_file",
    "first_token",
    "holds_key",
    "local_key_path",
    "local_username",
    "read_entries",
    "revoke_keys",
]


def __getattr__(name: str) -> Any:
    """`OIDCProvider` loads PyJWT and cryptography, which a gateway without OIDC never
    needs: it is imported on first use."""
    if name == "OIDCProvider":
        from frontends.identity._oidc import OIDCProvider

        return OIDCProvider
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
