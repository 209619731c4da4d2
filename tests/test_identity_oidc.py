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
from transports import H11Transport, Transport
from transports.httpx_transport import HttpxTransport

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["httpx", "h11"])
async def transport(request: pytest.FixtureRequest) -> AsyncIterator[Transport]:
    """The issuer is called through the gateway's transport, whichever it is."""
    made: Transport = HttpxTransport() if request.param == "httpx" else H11Transport()
    yield made
    await made.aclose()


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


def oidc(issuer: OIDCIssuer, transport: Transport, **options: Any) -> OIDCProvider:
    return OIDCProvider(issuer=issuer.url, audience=AUDIENCE, transport=transport, **options)


@pytest.fixture
def provider(fresh_issuer: OIDCIssuer, transport: Transport) -> OIDCProvider:
    return oidc(fresh_issuer, transport, refresh_interval=0)


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


async def test_claims_are_configurable(fresh_issuer: OIDCIssuer, transport: Transport) -> None:
    p = oidc(fresh_issuer, transport, username_claim="email", groups_claim="roles")
    token = fresh_issuer.mint(email="e@example.org", roles=["admin"])
    identity = await p.resolve(token)
    assert identity is not None
    assert (identity.username, identity.groups) == ("e@example.org", {"admin"})


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
    provider: OIDCProvider, fresh_issuer: OIDCIssuer, transport: Transport
) -> None:
    claims = jwt.decode(fresh_issuer.mint(), options={"verify_signature": False})
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": fresh_issuer.current_kid})
    with pytest.raises(CredentialsRejected):
        await provider.resolve(unsigned)
    with pytest.raises(ValueError):
        oidc(fresh_issuer, transport, algorithms=["HS256"])


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


async def test_refreshes_are_rate_limited(fresh_issuer: OIDCIssuer, transport: Transport) -> None:
    now = [0.0]
    p = oidc(fresh_issuer, transport, refresh_interval=30, clock=lambda: now[0])
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


async def test_a_token_that_is_no_jwt_is_not_this_providers(provider: OIDCProvider) -> None:
    assert await provider.resolve("igw-some-static-key-0123456789") is None


async def test_an_issuer_that_is_down_is_unavailable(
    fresh_issuer: OIDCIssuer, transport: Transport
) -> None:
    fresh_issuer.down = True
    p = oidc(fresh_issuer, transport)
    with pytest.raises(ProviderUnavailable):
        await p.resolve(fresh_issuer.mint())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    p = oidc(fresh_issuer, transport, jwks_url=f"http://127.0.0.1:{port}/jwks.json")
    with pytest.raises(ProviderUnavailable):
        await p.resolve(fresh_issuer.mint())


async def test_a_slow_issuer_is_unavailable_after_the_timeout(
    fresh_issuer: OIDCIssuer, transport: Transport
) -> None:
    fresh_issuer.slow = True
    p = oidc(fresh_issuer, transport, timeout=0.2)
    try:
        with pytest.raises(ProviderUnavailable):
            await p.resolve(fresh_issuer.mint())
    finally:
        fresh_issuer.slow = False
        fresh_issuer.release()
