"""OIDC/JWT tokens against a local issuer with a real JWKS endpoint and real signatures."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from frontends.identity import CredentialsRejected, OIDCProvider, ProviderUnavailable
from tests.support.oidc_issuer import AUDIENCE, OIDCIssuer, running_oidc_issuer

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def issuer() -> Iterator[OIDCIssuer]:
    with running_oidc_issuer() as served:
        yield served


@pytest.fixture
def fresh_issuer(issuer: OIDCIssuer) -> Iterator[OIDCIssuer]:
    issuer.down = issuer.slow = False
    yield issuer
    issuer.down = issuer.slow = False
    issuer.release()


def oidc(issuer: OIDCIssuer, **options: Any) -> OIDCProvider:
    return OIDCProvider(issuer=issuer.url, audience=AUDIENCE, **options)


@pytest.fixture
async def provider(fresh_issuer: OIDCIssuer) -> AsyncIterator[OIDCProvider]:
    p = oidc(fresh_issuer, refresh_interval=0)
    yield p
    await p.aclose()


async def test_a_valid_token_gives_username_groups_and_expiry(
    provider: OIDCProvider, fresh_issuer: OIDCIssuer
) -> None:
    token = fresh_issuer.mint(username="olive@example.org", groups=["g1", "g2"])
    identity = await provider.resolve(token)
    assert identity is not None
    assert identity.username == "olive@example.org"
    assert identity.groups == {"g1", "g2"}
    assert identity.provider == "oidc"
    assert identity.subject == "sub-olive@example.org"
    assert identity.expires_at == jwt.decode(token, options={"verify_signature": False})["exp"]


async def test_claims_are_configurable(fresh_issuer: OIDCIssuer) -> None:
    p = oidc(fresh_issuer, username_claim="email", groups_claim="roles")
    try:
        token = fresh_issuer.mint(email="e@example.org", roles=["admin"])
        identity = await p.resolve(token)
        assert identity is not None
        assert (identity.username, identity.groups) == ("e@example.org", {"admin"})
    finally:
        await p.aclose()


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"lifetime": -120}, "expired"),
        ({"nbf": 4_000_000_000}, "not yet valid"),
        ({"aud": "another-service"}, "unknown"),
        ({"iss": "https://evil.example"}, "unknown"),
        ({"username": "a b@example.org"}, "unacceptable username"),
        ({"username": "x@y@example.org"}, "unacceptable username"),
    ],
)
async def test_invalid_tokens_are_refused_with_a_reason(
    provider: OIDCProvider, fresh_issuer: OIDCIssuer, claims: dict[str, Any], reason: str
) -> None:
    with pytest.raises(CredentialsRejected) as refused:
        await provider.resolve(fresh_issuer.mint(**claims))
    assert refused.value.reason == reason


async def test_a_bad_signature_is_refused(provider: OIDCProvider, fresh_issuer: OIDCIssuer) -> None:
    forged = fresh_issuer.mint(key=ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(CredentialsRejected):
        await provider.resolve(forged)
    header, _payload, signature = fresh_issuer.mint().split(".")
    tampered_payload = fresh_issuer.mint(username="root@example.org").split(".")[1]
    with pytest.raises(CredentialsRejected):
        await provider.resolve(f"{header}.{tampered_payload}.{signature}")


async def test_alg_none_and_hmac_with_the_public_key_are_refused(
    provider: OIDCProvider, fresh_issuer: OIDCIssuer
) -> None:
    claims = jwt.decode(fresh_issuer.mint(), options={"verify_signature": False})
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": fresh_issuer.current_kid})
    with pytest.raises(CredentialsRejected):
        await provider.resolve(unsigned)
    with pytest.raises(ValueError):
        OIDCProvider(issuer=fresh_issuer.url, audience=AUDIENCE, algorithms=["HS256"])


async def test_an_unknown_kid_forces_one_jwks_refresh(
    provider: OIDCProvider, fresh_issuer: OIDCIssuer
) -> None:
    assert await provider.resolve(fresh_issuer.mint()) is not None
    fetched = fresh_issuer.jwks_requests
    assert await provider.resolve(fresh_issuer.mint()) is not None
    assert fresh_issuer.jwks_requests == fetched  # cached
    fresh_issuer.rotate()
    assert await provider.resolve(fresh_issuer.mint()) is not None
    assert fresh_issuer.jwks_requests == fetched + 1
    with pytest.raises(CredentialsRejected):
        await provider.resolve(
            fresh_issuer.mint(kid="never-published", key=ec.generate_private_key(ec.SECP256R1()))
        )


async def test_refreshes_are_rate_limited(fresh_issuer: OIDCIssuer) -> None:
    now = [0.0]
    p = oidc(fresh_issuer, refresh_interval=30, clock=lambda: now[0])
    try:
        assert await p.resolve(fresh_issuer.mint()) is not None
        fetched = fresh_issuer.jwks_requests
        for _ in range(5):
            with pytest.raises(CredentialsRejected):
                await p.resolve(
                    fresh_issuer.mint(kid="random-kid", key=ec.generate_private_key(ec.SECP256R1()))
                )
        assert fresh_issuer.jwks_requests == fetched
        now[0] += 31
        fresh_issuer.rotate()
        assert await p.resolve(fresh_issuer.mint()) is not None
        assert fresh_issuer.jwks_requests == fetched + 1
    finally:
        await p.aclose()


async def test_a_token_that_is_no_jwt_is_not_this_providers(provider: OIDCProvider) -> None:
    assert await provider.resolve("igw-some-static-key-0123456789") is None


async def test_an_issuer_that_is_down_is_unavailable(fresh_issuer: OIDCIssuer) -> None:
    fresh_issuer.down = True
    p = oidc(fresh_issuer)
    try:
        with pytest.raises(ProviderUnavailable):
            await p.resolve(fresh_issuer.mint())
    finally:
        await p.aclose()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    p = OIDCProvider(
        issuer=fresh_issuer.url, audience=AUDIENCE, jwks_url=f"http://127.0.0.1:{port}/jwks.json"
    )
    try:
        with pytest.raises(ProviderUnavailable):
            await p.resolve(fresh_issuer.mint())
    finally:
        await p.aclose()


async def test_a_slow_issuer_is_unavailable_after_the_timeout(fresh_issuer: OIDCIssuer) -> None:
    fresh_issuer.slow = True
    p = oidc(fresh_issuer, timeout=0.2)
    try:
        with pytest.raises(ProviderUnavailable):
            await p.resolve(fresh_issuer.mint())
    finally:
        fresh_issuer.slow = False
        fresh_issuer.release()
        await p.aclose()
