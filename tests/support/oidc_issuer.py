"""A local OIDC issuer: a real JWKS endpoint and real ES256-signed tokens.

`issuer.mint(...)` signs a token with the current key (or any key it is given);
`issuer.rotate()` makes a new current key, published at once, so a token signed with it
carries a `kid` the gateway has not seen and forces a JWKS refresh.  `jwks_requests`
counts fetches; `down` answers 503, `slow` holds every answer until released.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from quart import Quart, Response

from tests.support.servers import serve_app

__all__ = ["AUDIENCE", "OIDCIssuer", "running_oidc_issuer"]

AUDIENCE = "inference-gateway"


class OIDCIssuer:
    def __init__(self) -> None:
        self.url = ""  # set once served
        self.keys: dict[str, ec.EllipticCurvePrivateKey] = {}
        self.current_kid = ""
        self.down = False
        self.slow = False
        self._lock = threading.Lock()
        self._jwks_requests = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: list[asyncio.Event] = []
        self.rotate()
        self.app = self._build()

    @property
    def jwks_requests(self) -> int:
        with self._lock:
            return self._jwks_requests

    def rotate(self) -> str:
        kid = "key-" + secrets.token_hex(4)
        self.keys[kid] = ec.generate_private_key(ec.SECP256R1())
        self.current_kid = kid
        return kid

    def mint(
        self,
        *,
        username: str = "olive@example.org",
        groups: list[str] | None = None,
        lifetime: float = 600,
        kid: str | None = None,
        key: ec.EllipticCurvePrivateKey | None = None,
        **claims: Any,
    ) -> str:
        now = time.time()
        payload: dict[str, Any] = {
            "iss": self.url,
            "aud": AUDIENCE,
            "sub": "sub-" + username,
            "preferred_username": username,
            "groups": groups or [],
            "iat": int(now),
            "nbf": int(now),
            "exp": int(now + lifetime),
            **claims,
        }
        kid = kid or self.current_kid
        return jwt.encode(payload, key or self.keys[kid], algorithm="ES256", headers={"kid": kid})

    def release(self) -> None:
        """Let every request held by `slow` go on (later ones are held again while
        `slow` stays set)."""
        loop = self._loop
        with self._lock:
            waiting, self._waiting = self._waiting, []
        if loop is not None and not loop.is_closed():
            for event in waiting:
                with suppress(RuntimeError):
                    loop.call_soon_threadsafe(event.set)

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, private in self.keys.items():
            jwk = json.loads(ECAlgorithm.to_jwk(private.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "ES256"})
        return {"keys": keys}

    async def _misbehave(self) -> Response | None:
        if self.slow:
            event = asyncio.Event()
            with self._lock:
                self._waiting.append(event)
            await event.wait()
        if self.down:
            return Response("{}", status=503, content_type="application/json")
        return None

    def _build(self) -> Quart:
        app = Quart("oidc_issuer")

        @app.before_serving
        async def remember_loop() -> None:
            self._loop = asyncio.get_running_loop()

        @app.get("/.well-known/openid-configuration")
        async def configuration() -> Response:
            refused = await self._misbehave()
            if refused is not None:
                return refused
            body = {"issuer": self.url, "jwks_uri": f"{self.url}/jwks.json"}
            return Response(json.dumps(body), content_type="application/json")

        @app.get("/jwks.json")
        async def jwks() -> Response:
            with self._lock:
                self._jwks_requests += 1
            refused = await self._misbehave()
            if refused is not None:
                return refused
            return Response(json.dumps(self.jwks()), content_type="application/json")

        return app


@contextmanager
def running_oidc_issuer() -> Iterator[OIDCIssuer]:
    issuer = OIDCIssuer()
    with serve_app(issuer.app) as url:
        issuer.url = url
        try:
            yield issuer
        finally:
            issuer.release()
