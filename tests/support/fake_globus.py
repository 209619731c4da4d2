"""A local Globus Auth + Groups server speaking the documented wire format.

* `POST /v2/oauth2/token/introspect` — HTTP Basic client credentials, form fields
  `token` and `include`; answers `{"active": false}` or the token's details, with
  `identity_set_detail` only when `include=identity_set_detail` was asked for.
* `POST /v2/oauth2/token` with `grant_type=urn:globus:auth:grant_type:dependent_token`
  — a JSON list of token responses, one for `groups.api.globus.org`.
* `GET /v2/groups/my_groups` — Bearer dependent token; a list of groups with
  `my_memberships`.

Tests register users by token, switch the server `down` (HTTP 503) or `slow` (no answer
until released), and read `calls` (what was called, how often) and `forms` (the form
fields seen, tokens replaced by their SHA-256) to check the gateway's side.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import attrs
from quart import Quart, Response, request

from tests.support.servers import serve_app

__all__ = ["CLIENT_ID", "CLIENT_SECRET", "FakeGlobus", "GlobusUser", "running_fake_globus"]

CLIENT_ID = "0b1ca7b1-gateway-client"
CLIENT_SECRET = "gateway-client-secret-not-for-logs"
DEPENDENT_GRANT = "urn:globus:auth:grant_type:dependent_token"
GROUPS_SCOPE = "urn:globus:auth:scope:groups.api.globus.org:view_my_groups_and_memberships"


@attrs.define(kw_only=True)
class GlobusUser:
    token: str
    username: str
    sub: str = "11111111-2222-3333-4444-555555555555"
    groups: Sequence[str] = ()
    pending_groups: Sequence[str] = ()
    active: bool = True
    exp: float = 4_000_000_000.0
    issued: float = 1_700_000_000.0
    aud: Sequence[str] = (CLIENT_ID,)
    linked: Sequence[str] = ()  # usernames of linked identities


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, content_type="application/json")


class FakeGlobus:
    def __init__(self) -> None:
        self.users: dict[str, GlobusUser] = {}
        self.down = False
        self.slow = False
        self._lock = threading.Lock()
        self._calls: Counter[str] = Counter()
        self._forms: list[dict[str, str]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: list[asyncio.Event] = []
        self.app = self._build()

    def add(self, user: GlobusUser) -> GlobusUser:
        self.users[user.token] = user
        return user

    @property
    def calls(self) -> Counter[str]:
        with self._lock:
            return Counter(self._calls)

    @property
    def forms(self) -> list[dict[str, str]]:
        with self._lock:
            return list(self._forms)

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

    def _note(self, name: str, form: dict[str, str] | None = None) -> None:
        with self._lock:
            self._calls[name] += 1
            if form is not None:
                self._forms.append(
                    {k: (_digest(v) if k == "token" else v) for k, v in form.items()}
                )

    def _client_ok(self) -> bool:
        header = request.headers.get("Authorization", "")
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        return header == f"Basic {expected}"

    async def _misbehave(self) -> Response | None:
        if self.slow:
            event = asyncio.Event()
            with self._lock:
                self._waiting.append(event)
            await event.wait()
        if self.down:
            return _json({"error": "service unavailable"}, 503)
        return None

    def _build(self) -> Quart:
        app = Quart("fake_globus")

        @app.before_serving
        async def remember_loop() -> None:
            self._loop = asyncio.get_running_loop()

        @app.post("/v2/oauth2/token/introspect")
        async def introspect() -> Response:
            form = dict((await request.form).items())
            self._note("introspect", form)
            refused = await self._misbehave()
            if refused is not None:
                return refused
            if not self._client_ok():
                return _json({"error": "invalid_client"}, 401)
            user = self.users.get(form.get("token", ""))
            if user is None or not user.active:
                return _json({"active": False})
            body: dict[str, Any] = {
                "active": True,
                "token_type": "Bearer",
                "scope": f"https://auth.globus.org/scopes/{CLIENT_ID}/action_all",
                "client_id": "some-client-the-user-used",
                "sub": user.sub,
                "username": user.username,
                "name": user.username.split("@")[0],
                "email": None,
                "aud": list(user.aud),
                "iss": "https://auth.globus.org",
                "exp": int(user.exp),
                "iat": int(user.issued),
                "nbf": int(user.issued),
                "identity_set": [user.sub],
            }
            if "identity_set_detail" in form.get("include", "").split(","):
                body["identity_set_detail"] = [
                    {
                        "sub": f"{user.sub[:-2]}{index:02d}",
                        "username": name,
                        "name": name.split("@")[0],
                        "identity_provider": f"idp-{index}",
                        "identity_provider_display_name": name.rpartition("@")[2],
                        "organization": None,
                        "status": "used",
                        "email": None,
                    }
                    for index, name in enumerate([user.username, *user.linked])
                ]
            return _json(body)

        @app.post("/v2/oauth2/token")
        async def token() -> Response:
            form = dict((await request.form).items())
            self._note("dependent_token", form)
            refused = await self._misbehave()
            if refused is not None:
                return refused
            if not self._client_ok():
                return _json({"error": "invalid_client"}, 401)
            user = self.users.get(form.get("token", ""))
            if form.get("grant_type") != DEPENDENT_GRANT or user is None or not user.active:
                return _json({"error": "invalid_grant"}, 400)
            return _json(
                [
                    {
                        "access_token": "dep-groups-" + _digest(user.token),
                        "expires_in": 172800,
                        "resource_server": "groups.api.globus.org",
                        "scope": GROUPS_SCOPE,
                        "token_type": "Bearer",
                    },
                    {
                        "access_token": "dep-transfer-" + _digest(user.token),
                        "expires_in": 172800,
                        "resource_server": "transfer.api.globus.org",
                        "scope": "urn:globus:auth:scope:transfer.api.globus.org:all",
                        "token_type": "Bearer",
                    },
                ]
            )

        @app.get("/v2/groups/my_groups")
        async def my_groups() -> Response:
            self._note("my_groups")
            refused = await self._misbehave()
            if refused is not None:
                return refused
            bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
            user = next(
                (u for u in self.users.values() if bearer == "dep-groups-" + _digest(u.token)),
                None,
            )
            if user is None:
                return _json({"code": "AUTHENTICATION_ERROR"}, 401)
            groups = [(g, "active") for g in user.groups] + [
                (g, "invited") for g in user.pending_groups
            ]
            return _json(
                [
                    {
                        "id": group,
                        "name": f"name of {group}",
                        "description": "",
                        "group_type": "regular",
                        "enforce_session": False,
                        "my_memberships": [
                            {
                                "group_id": group,
                                "identity_id": user.sub,
                                "username": user.username,
                                "role": "member",
                                "status": status,
                            }
                        ],
                    }
                    for group, status in groups
                ]
            )

        return app


@contextmanager
def running_fake_globus() -> Iterator[tuple[FakeGlobus, str]]:
    """A FakeGlobus on a free local port: (fake, base URL) — the same base URL serves
    both the Auth and the Groups routes."""
    fake = FakeGlobus()
    with serve_app(fake.app) as url:
        try:
            yield fake, url
        finally:
            fake.release()
