"""The provider chain the settings ask for, in their order, calling out through `transport`.

Only the providers asked for are imported: OIDC loads PyJWT and cryptography, the shared
Globus cache redis-py, and a gateway on static keys needs neither (megabytes of RSS in
every worker)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from frontends.identity._base import ChainProvider, IdentityProvider
from frontends.identity._globus import GlobusAuth
from frontends.identity._static import StaticKeys
from transports import Transport

if TYPE_CHECKING:
    from frontends.settings import Settings

__all__ = ["build_identity"]


def build_identity(settings: Settings, *, transport: Transport) -> ChainProvider:
    """Globus and OIDC make their HTTP calls through `transport` (the gateway's own)."""
    providers: list[IdentityProvider] = []
    shared = None
    if settings.redis_url is not None and "globus" in settings.identity_providers:
        from frontends.identity._shared import RedisIdentities

        # Replicas share Globus's answers through the Redis they count quotas in.
        shared = RedisIdentities(
            settings.redis_url.get_secret_value(), prefix=settings.redis_key_prefix
        )
    for name in settings.identity_providers:
        if name == "static":
            providers.append(StaticKeys.from_file(settings.tokens_path))
        elif name == "globus":
            assert settings.globus_client_id and settings.globus_client_secret
            providers.append(
                GlobusAuth(
                    client_id=settings.globus_client_id,
                    client_secret=settings.globus_client_secret.get_secret_value(),
                    auth_base_url=settings.globus_auth_base_url,
                    groups_base_url=settings.globus_groups_base_url,
                    allowed_domains=settings.globus_allowed_domains,
                    allowed_service_accounts=settings.globus_allowed_service_accounts,
                    required_group=settings.globus_required_group,
                    transport=transport,
                    timeout=settings.identity_timeout,
                    shared=shared,
                )
            )
        elif name == "oidc":
            assert settings.oidc_issuer and settings.oidc_audience
            from frontends.identity._oidc import OIDCProvider

            providers.append(
                OIDCProvider(
                    issuer=settings.oidc_issuer,
                    audience=settings.oidc_audience,
                    jwks_url=settings.oidc_jwks_url,
                    username_claim=settings.oidc_username_claim,
                    groups_claim=settings.oidc_groups_claim,
                    algorithms=settings.oidc_algorithms,
                    transport=transport,
                    timeout=settings.identity_timeout,
                )
            )
    return ChainProvider(providers)
