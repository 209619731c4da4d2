"""Globus Auth: token introspection, then the caller's groups from the Groups API.

The wire protocol, as Globus documents it:

1. `POST {auth}/v2/oauth2/token/introspect`, HTTP Basic auth with the gateway's client
   id and secret, form body `token=<token>&include=identity_set_detail`.  The answer is
   `{"active": false}` or `{"active": true, "sub", "username", "exp", "aud": [...],
   "scope", "client_id", "identity_set": [...], "identity_set_detail": [{"sub",
   "username", "identity_provider", "status", ...}], ...}`.
2. `POST {auth}/v2/oauth2/token`, the same Basic auth, form body
   `grant_type=urn:globus:auth:grant_type:dependent_token&token=<token>`: a JSON list of
   token responses, one per resource server the gateway's scope depends on; the one with
   `"resource_server": "groups.api.globus.org"` is for the Groups API.
3. `GET {groups}/v2/groups/my_groups` with that dependent token as Bearer: a JSON list of
   groups `{"id", "name", "my_memberships": [{"identity_id", "username", "role",
   "status"}], ...}`.  Group ids (not names, which anyone may choose) are the groups the
   core's rules compare with `allowed_globus_groups`.

Answers are cached under the SHA-256 of the token: a valid identity for min(10 min, time
to the token's expiry), a refusal for 60 s.  When Globus cannot be reached the provider
raises `ProviderUnavailable` (503) and keeps every cached identity.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from core import Identity, Rule, domain_allowed
from frontends.identity._base import (
    AccessRefused,
    CredentialsRejected,
    ProviderUnavailable,
    acceptable_username,
)
from frontends.identity._cache import TokenCache
from frontends.identity._http import basic_authorization, call_json, timeout_of
from transports import Transport

if TYPE_CHECKING:
    from frontends.identity._shared import RedisIdentities

__all__ = ["GlobusAuth"]

log = logging.getLogger("inference_gateway.identity")

DEPENDENT_TOKEN_GRANT = "urn:globus:auth:grant_type:dependent_token"
GROUPS_RESOURCE_SERVER = "groups.api.globus.org"
IDENTITY_TTL = 600.0
FAILURE_TTL = 60.0

_Cached = Identity | CredentialsRejected | AccessRefused


class GlobusAuth:
    name = "globus"

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        transport: Transport,
        auth_base_url: str = "https://auth.globus.org",
        groups_base_url: str = "https://groups.api.globus.org",
        allowed_domains: Sequence[str] = (),
        allowed_service_accounts: Sequence[str] = (),
        required_group: str | None = None,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
        shared: RedisIdentities | None = None,
    ) -> None:
        self._shared = shared
        self._client_id = client_id
        self._client_authorization = basic_authorization(client_id, client_secret)
        self._transport = transport
        self._timeout = timeout_of(timeout)
        self._auth_base = auth_base_url.rstrip("/")
        self._groups_base = groups_base_url.rstrip("/")
        self._allowed_domains = tuple(allowed_domains)
        self._service_accounts = frozenset(a.lower() for a in allowed_service_accounts)
        self._required_group = required_group
        self._clock = clock
        self._cache: TokenCache[_Cached] = TokenCache(clock)

    async def resolve(self, credentials: str) -> Identity | None:
        cached = self._cache.get(credentials)
        if cached is None and self._shared is not None:
            # Replicas share answers: one of them introspects, all of them read it.
            cached = await self._shared.answer(
                credentials, lambda: self._answer(credentials), self._ttl
            )
            self._cache.put(credentials, cached, self._ttl(cached))
        elif cached is None:
            cached = await self._ask_globus(credentials)
        if isinstance(cached, Identity):
            return cached
        if isinstance(cached, CredentialsRejected):
            raise CredentialsRejected(cached.reason)
        raise AccessRefused(cached.rule)

    async def _ask_globus(self, token: str) -> _Cached:
        answer = await self._answer(token)
        self._cache.put(token, answer, self._ttl(answer))
        return answer

    async def _answer(self, token: str) -> _Cached:
        """Globus's answer: an identity or a refusal (both cached); `ProviderUnavailable`
        (Globus could not answer) is raised and never cached."""
        try:
            return await self._introspect(token)
        except (CredentialsRejected, AccessRefused) as refusal:
            return refusal

    def _ttl(self, answer: _Cached) -> float:
        """How long an answer is kept: an identity for at most IDENTITY_TTL and never past
        the token's expiry; a refusal for FAILURE_TTL."""
        if not isinstance(answer, Identity):
            return FAILURE_TTL
        if answer.expires_at is None:
            return IDENTITY_TTL
        return min(IDENTITY_TTL, answer.expires_at - self._clock())

    async def _call(
        self,
        method: str,
        url: str,
        *,
        bearer: str | None = None,
        form: dict[str, str] | None = None,
    ) -> Any:
        """One request to Globus: with the gateway's client credentials, or `bearer`."""
        authorization = f"Bearer {bearer}" if bearer else self._client_authorization
        return await call_json(
            self._transport,
            method,
            url,
            who="Globus",
            timeout=self._timeout,
            headers=[("authorization", authorization)],
            form=form,
        )

    async def _introspect(self, token: str) -> Identity:
        data = await self._call(
            "POST",
            f"{self._auth_base}/v2/oauth2/token/introspect",
            form={"token": token, "include": "identity_set_detail"},
        )
        if not isinstance(data, dict):
            raise ProviderUnavailable("Globus introspection answer is not an object")
        if data.get("active") is not True:
            raise CredentialsRejected("inactive")
        now = self._clock()
        exp = data.get("exp")
        if isinstance(exp, (int, float)) and exp <= now:
            raise CredentialsRejected("expired")
        nbf = data.get("nbf")
        if isinstance(nbf, (int, float)) and nbf > now + 60:
            raise CredentialsRejected("not yet valid")
        aud = data.get("aud") or []
        if isinstance(aud, str):
            aud = [aud]
        if self._client_id not in aud:
            # A token meant for another service, not for this gateway.
            raise CredentialsRejected("inactive")
        username = self._username(data)
        groups = await self._groups(token)
        if self._required_group and self._required_group not in groups:
            raise AccessRefused(Rule.GROUP)
        return Identity(
            username=username,
            groups=groups,
            provider=self.name,
            subject=str(data.get("sub") or "") or None,
            expires_at=float(exp) if isinstance(exp, (int, float)) else None,
        )

    def _username(self, data: dict[str, Any]) -> str:
        """The username the rules see: the token's own identity, or, when identity
        provider domains are restricted, the first linked identity from an allowed one."""
        primary = data.get("username")
        if not isinstance(primary, str) or not acceptable_username(primary):
            raise CredentialsRejected("unacceptable username")
        if primary.lower() in self._service_accounts or not self._allowed_domains:
            return primary
        candidates = [primary]
        for detail in data.get("identity_set_detail") or []:
            if (
                isinstance(detail, dict)
                and isinstance(detail.get("username"), str)
                and detail.get("status", "used") == "used"
            ):
                candidates.append(detail["username"])
        for username in candidates:
            _, at, domain = username.rpartition("@")
            if (
                at
                and acceptable_username(username)
                and domain_allowed(domain, self._allowed_domains)
            ):
                return username
        raise AccessRefused(Rule.DOMAIN)

    async def _groups(self, token: str) -> frozenset[str]:
        tokens = await self._call(
            "POST",
            f"{self._auth_base}/v2/oauth2/token",
            form={"grant_type": DEPENDENT_TOKEN_GRANT, "token": token},
        )
        if isinstance(tokens, dict):  # tolerate a single token response
            tokens = tokens.get("other_tokens", [tokens])
        groups_token = next(
            (
                t.get("access_token")
                for t in tokens or []
                if isinstance(t, dict) and t.get("resource_server") == GROUPS_RESOURCE_SERVER
            ),
            None,
        )
        if not isinstance(groups_token, str):
            log.warning("Globus gave no dependent token for the Groups API (scope missing?)")
            return frozenset()
        found = await self._call(
            "GET",
            f"{self._groups_base}/v2/groups/my_groups",
            bearer=groups_token,
        )
        ids = set()
        for group in found if isinstance(found, list) else []:
            if not isinstance(group, dict) or not isinstance(group.get("id"), str):
                continue
            memberships = group.get("my_memberships")
            if isinstance(memberships, list) and not any(
                isinstance(m, dict) and m.get("status", "active") == "active" for m in memberships
            ):
                continue  # invited or pending, not (yet) a member
            ids.add(group["id"])
        return frozenset(ids)
