"""OIDC / JWT bearer tokens, checked locally against the issuer's published keys.

The signature is checked with PyJWT against the issuer's JWKS (fetched from `jwks_url`,
or from the issuer's `/.well-known/openid-configuration`, then cached).  A token whose
`kid` is not in the cached set makes the provider fetch the set again (a key rotation),
at most once per `refresh_interval` seconds so random `kid`s cannot make it hammer the
issuer.  `iss`, `aud`, `exp` and `nbf` are checked (`exp`, `iss`, `aud` are required);
username and groups come from configurable claims.  Only asymmetric algorithms are
accepted, never `none` or HMAC.

A bearer token that is not a JWT at all is not this provider's (None: the chain goes
on); a JWT that fails a check is refused with the reason (401).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import jwt

from core import Identity
from frontends.identity._base import (
    CredentialsRejected,
    ProviderUnavailable,
    acceptable_username,
)
from frontends.identity._http import call_json, timeout_of
from transports import Transport

__all__ = ["OIDCProvider"]

log = logging.getLogger("inference_gateway.identity")

DEFAULT_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256")


class OIDCProvider:
    name = "oidc"

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        transport: Transport,
        jwks_url: str | None = None,
        username_claim: str = "preferred_username",
        groups_claim: str = "groups",
        algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
        leeway: float = 30.0,
        refresh_interval: float = 30.0,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if any(a.lower() == "none" or a.upper().startswith("HS") for a in algorithms):
            raise ValueError("only asymmetric JWT algorithms are accepted")
        self._issuer = issuer
        self._audience = audience
        self._jwks_url = jwks_url
        self._username_claim = username_claim
        self._groups_claim = groups_claim
        self._algorithms = list(algorithms)
        self._leeway = leeway
        self._refresh_interval = refresh_interval
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] | None = None
        self._fetched_at: float | None = None
        self._lock = anyio.Lock()
        self._transport = transport
        self._timeout = timeout_of(timeout)
        self.jwks_fetches = 0

    async def resolve(self, credentials: str) -> Identity | None:
        try:
            header = jwt.get_unverified_header(credentials)
        except jwt.DecodeError:
            return None  # not a JWT: not ours
        kid = header.get("kid")
        key = await self._key(kid if isinstance(kid, str) else None)
        if key is None:
            raise CredentialsRejected("unknown")
        try:
            claims = jwt.decode(
                credentials,
                key=key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise CredentialsRejected("expired") from None
        except jwt.ImmatureSignatureError:
            raise CredentialsRejected("not yet valid") from None
        except jwt.InvalidTokenError:
            # bad signature, wrong audience or issuer, missing claim, wrong algorithm
            raise CredentialsRejected("unknown") from None
        return self._identity(claims)

    def _identity(self, claims: dict[str, Any]) -> Identity:
        username = claims.get(self._username_claim)
        if not isinstance(username, str) or not acceptable_username(username):
            raise CredentialsRejected("unacceptable username")
        raw_groups = claims.get(self._groups_claim) or []
        if isinstance(raw_groups, str):
            raw_groups = raw_groups.split()
        groups = (
            [g for g in raw_groups if isinstance(g, str)] if isinstance(raw_groups, list) else []
        )
        exp = claims.get("exp")
        return Identity(
            username=username,
            groups=groups,
            provider=self.name,
            subject=str(claims["sub"]),
            expires_at=float(exp) if isinstance(exp, (int, float)) else None,
        )

    async def _key(self, kid: str | None) -> jwt.PyJWK | None:
        async with self._lock:
            if self._keys is None:
                await self._refresh()
            key = self._pick(kid)
            if key is None and self._may_refresh():
                await self._refresh()
                key = self._pick(kid)
            return key

    def _pick(self, kid: str | None) -> jwt.PyJWK | None:
        keys = self._keys or {}
        if kid is None:
            return next(iter(keys.values())) if len(keys) == 1 else None
        return keys.get(kid)

    def _may_refresh(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at >= (
            self._refresh_interval
        )

    async def _get_json(self, url: str) -> Any:
        return await call_json(
            self._transport, "GET", url, who="the OIDC issuer", timeout=self._timeout
        )

    async def _refresh(self) -> None:
        url = self._jwks_url
        if url is None:
            config = await self._get_json(
                self._issuer.rstrip("/") + "/.well-known/openid-configuration"
            )
            url = config.get("jwks_uri") if isinstance(config, dict) else None
            if not isinstance(url, str):
                raise ProviderUnavailable("the issuer's openid-configuration has no jwks_uri")
            self._jwks_url = url
        self.jwks_fetches += 1
        document = await self._get_json(url)
        try:
            keyset = jwt.PyJWKSet.from_json(json.dumps(document))
        except jwt.PyJWTError:
            raise ProviderUnavailable("the issuer's JWKS holds no usable key") from None
        self._keys = {str(k.key_id or index): k for index, k in enumerate(keyset.keys)}
        self._fetched_at = self._clock()
