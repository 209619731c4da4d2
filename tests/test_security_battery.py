"""The security battery: every way in that must not work, through the real server.

A real gateway (Hypercorn) with all three identity providers chained (static keys, a
local OIDC issuer, a local Globus Auth + Groups), in front of a real local OpenAI
backend that counts every request it receives.  Each case states the status it must get
and that no request reached the backend (or, for the few allowed controls, exactly
one).  At the end, no credential appears in any log line.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import openai
import pytest

from frontends.identity import (
    ChainProvider,
    GlobusAuth,
    OIDCProvider,
    StaticKeys,
    add_key,
    revoke_keys,
)
from tests.support.clock import ManualClock
from tests.support.fake_globus import (
    CLIENT_ID,
    CLIENT_SECRET,
    FakeGlobus,
    GlobusUser,
    running_fake_globus,
)
from tests.support.fake_openai import FakeOpenAI, running_fake_openai
from tests.support.gateway_server import running_gateway, write_fixtures, write_tokens
from tests.support.oidc_issuer import AUDIENCE, OIDCIssuer, running_oidc_issuer
from transports.httpx_transport import HttpxTransport

pytestmark = pytest.mark.e2e

KEY_ENV = "IGW_BATTERY_BACKEND_KEY"
BACKEND_SECRET = "sk-battery-backend-secret"

# Static keys: (key, username, groups)
USERS = {
    "alice": ("igw-battery-alice-0123456789abcdef", "alice@example.org", ["g-physics"]),
    "bob": ("igw-battery-bob-0123456789abcdef00", "bob@elsewhere.net", []),
    "revoked": ("igw-battery-revoked-0123456789abc", "rita@example.org", ["g-physics"]),
    "nodomain": ("igw-battery-nodomain-0123456789ab", "carol", ["g-physics"]),
    "upper": ("igw-battery-upper-0123456789abcde", "EVE@EXAMPLE.ORG", []),
    "lookalike_hyphen": ("igw-battery-hyphen-0123456789abcd", "eve@evil-example.org", []),
    "lookalike_suffix": ("igw-battery-suffix-0123456789abcd", "eve@example.org.evil.com", []),
    "confusable_cyrillic": ("igw-battery-cyrillic-01234567890", "eve@\u0435xample.org", []),
    "confusable_fullwidth": ("igw-battery-fullwidth-0123456789", "eve@\uff45xample.org", []),
    "confusable_dotless": ("igw-battery-dotless-0123456789ab", "eve@exampIe.org", []),
    "zero_width": ("igw-battery-zerowidth-0123456789", "eve@example.org\u200b", []),
    "trailing_dot": ("igw-battery-trailingdot-01234567", "eve@example.org.", []),
    "subdomain": ("igw-battery-subdomain-0123456789a", "dan@physics.example.org", []),
}
GLOBUS_TOKEN = "globus-battery-token-0123456789abcdef"
GLOBUS_INACTIVE = "globus-battery-inactive-0123456789ab"
GLOBUS_UNCACHED = "globus-battery-uncached-0123456789ab"

MODELS = ["open-model", "physics-model", "org-model", "sub-model", "closed-model"]


@attrs.frozen
class World:
    url: str
    backend: FakeOpenAI
    globus: FakeGlobus
    issuer: OIDCIssuer
    credentials: dict[str, str]
    tokens: Path
    keys_clock: ManualClock  # when the static keys provider re-checks the tokens file


def _endpoint(cluster: str, model: str, url: str, **rules: Any) -> dict[str, Any]:
    return {
        "endpoint_slug": f"{cluster}-api-{model}",
        "cluster": cluster,
        "framework": "api",
        "model": model,
        "endpoint_adapter": "adaptors.endpoints.direct_api.DirectAPIEndpoint",
        "config": {"api_url": f"{url}/v1/chat/completions", "api_key_env_name": KEY_ENV},
        **rules,
    }


def _cluster(name: str, url: str, **rules: Any) -> dict[str, Any]:
    return {
        "cluster_name": name,
        "frameworks": ["api"],
        "openai_endpoints": [
            "chat/completions",
            "completions",
            "embeddings",
            "responses",
            "messages",
        ],
        "cluster_adapter": "adaptors.clusters.openai_compatible.OpenAICompatibleCluster",
        "config": {"api_url": f"{url}/v1", "api_key_env_name": KEY_ENV},
        **rules,
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    os.environ[KEY_ENV] = BACKEND_SECRET
    folder = tmp_path_factory.mktemp("battery")
    try:
        with (
            running_fake_openai(models=MODELS, api_key=BACKEND_SECRET) as (backend, backend_url),
            running_fake_globus() as (globus, globus_url),
            running_oidc_issuer() as issuer,
        ):
            fixtures = write_fixtures(
                folder / "fixtures",
                [
                    _cluster("open", backend_url),
                    _cluster("closed", backend_url, allowed_globus_groups=["g-closed"]),
                ],
                [
                    _endpoint("open", "open-model", backend_url),
                    _endpoint(
                        "open", "physics-model", backend_url, allowed_globus_groups=["g-physics"]
                    ),
                    _endpoint("open", "org-model", backend_url, allowed_domains=["example.org"]),
                    _endpoint("open", "sub-model", backend_url, allowed_domains=["*.example.org"]),
                    _endpoint("closed", "closed-model", backend_url),  # unrestricted itself
                ],
            )
            tokens = write_tokens(
                folder,
                [{"token": t, "username": u, "groups": g} for t, u, g in USERS.values()],
            )
            assert revoke_keys(tokens, "rita@example.org") == 1
            globus.add(
                GlobusUser(token=GLOBUS_TOKEN, username="gus@example.org", groups=["g-physics"])
            )
            globus.add(GlobusUser(token=GLOBUS_INACTIVE, username="ina@example.org", active=False))
            globus.add(GlobusUser(token=GLOBUS_UNCACHED, username="unc@example.org"))
            transport = HttpxTransport()
            keys_clock = ManualClock()
            identity = ChainProvider(
                [
                    StaticKeys.from_file(tokens, clock=keys_clock),
                    OIDCProvider(
                        issuer=issuer.url, audience=AUDIENCE, transport=transport, timeout=5
                    ),
                    GlobusAuth(
                        client_id=CLIENT_ID,
                        client_secret=CLIENT_SECRET,
                        transport=transport,
                        auth_base_url=globus_url,
                        groups_base_url=globus_url,
                        timeout=5,
                    ),
                ]
            )
            credentials = {name: key for name, (key, _, _) in USERS.items()}
            alice = credentials["alice"]
            credentials["alice_truncated"] = alice[:-3]
            credentials["alice_changed"] = alice[:-1] + ("0" if alice[-1] != "0" else "1")
            other = OIDCIssuer()  # an issuer the gateway does not trust
            other.url = issuer.url
            credentials.update(
                oidc=issuer.mint(username="olive@example.org", groups=["g-physics"]),
                oidc_expired=issuer.mint(lifetime=-300),
                oidc_future=issuer.mint(nbf=4_000_000_000),
                oidc_wrong_aud=issuer.mint(aud="another-service"),
                oidc_wrong_iss=issuer.mint(iss="https://login.evil.example"),
                oidc_bad_signature=other.mint(
                    kid=issuer.current_kid, key=other.keys[other.current_kid]
                ),
                oidc_spaces=issuer.mint(username="olive smith@example.org"),
                globus=GLOBUS_TOKEN,
                globus_inactive=GLOBUS_INACTIVE,
                globus_uncached=GLOBUS_UNCACHED,
            )
            with running_gateway(fixtures, identity=identity, transport=transport) as url:
                yield World(url, backend, globus, issuer, credentials, tokens, keys_clock)
    finally:
        os.environ.pop(KEY_ENV, None)


def chat(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


@attrs.frozen
class Case:
    name: str
    status: int
    auth: str | None = None  # a credential name, sent as "Bearer <credential>"
    raw_authorization: str | None = None  # or this header verbatim ({name} filled in)
    model: str = "open-model"
    path: str = "/v1/chat/completions"
    headers: dict[str, str] = attrs.field(factory=dict)
    challenge: str | None = None  # expected in WWW-Authenticate
    rule: str | None = None  # expected in the 403 message
    globus_down: bool = False


def bearer(name: str) -> str:
    return f"Bearer {{{name}}}"


CASES = [
    # -- credentials ---------------------------------------------------------------------
    Case("no header", 401, challenge="Bearer"),
    Case("Bearer with nothing", 401, raw_authorization="Bearer", challenge="Bearer"),
    Case("Bearer null", 401, raw_authorization="Bearer null", challenge="invalid_token"),
    Case("wrong scheme Basic", 401, raw_authorization="Basic {alice}"),
    Case("wrong scheme Token", 401, raw_authorization="Token {alice}"),
    Case("key with no scheme", 401, raw_authorization="{alice}"),
    Case("two tokens", 401, raw_authorization="Bearer {alice} {bob}"),
    Case(
        "unknown key",
        401,
        raw_authorization="Bearer igw-not-a-key-0123456789abcdef",
        challenge='error="invalid_token"',
    ),
    Case("revoked key", 401, auth="revoked", challenge='error="invalid_token"'),
    Case("truncated key", 401, auth="alice_truncated", challenge="invalid_token"),
    Case("key with one character changed", 401, auth="alice_changed"),
    Case("key in the query string", 401, path="/v1/chat/completions?api_key={alice}"),
    Case("OIDC expired", 401, auth="oidc_expired", challenge="expired"),
    Case("OIDC not yet valid", 401, auth="oidc_future", challenge="not yet valid"),
    Case("OIDC wrong audience", 401, auth="oidc_wrong_aud", challenge="invalid_token"),
    Case("OIDC wrong issuer", 401, auth="oidc_wrong_iss", challenge="invalid_token"),
    Case("OIDC bad signature", 401, auth="oidc_bad_signature", challenge="invalid_token"),
    Case(
        "OIDC username with whitespace", 401, auth="oidc_spaces", challenge="unacceptable username"
    ),
    Case("Globus inactive", 401, auth="globus_inactive", challenge="inactive"),
    Case("Globus down", 503, auth="globus_uncached", globus_down=True),
    # -- groups --------------------------------------------------------------------------
    Case(
        "key of another user (no group)",
        403,
        auth="bob",
        model="physics-model",
        rule="group membership",
    ),
    Case(
        "group spoofing via headers",
        403,
        auth="bob",
        model="physics-model",
        rule="group membership",
        headers={
            "X-Globus-Groups": "g-physics",
            "X-Groups": "g-physics",
            "X-Forwarded-Groups": "g-physics",
            "X-Remote-User": "alice@example.org",
            "X-Forwarded-User": "alice@example.org",
            "X-Username": "alice@example.org",
        },
    ),
    Case(
        "cluster restriction over an unrestricted endpoint",
        403,
        auth="alice",
        model="closed-model",
        rule="cluster 'closed'",
    ),
    Case(
        "cluster restriction, header spoofing",
        403,
        auth="alice",
        model="closed-model",
        headers={"X-Globus-Groups": "g-closed"},
        rule="group membership",
    ),
    Case(
        "cluster restriction on the ALCF route",
        403,
        auth="alice",
        model="closed-model",
        path="/resource_server/closed/api/v1/chat/completions",
    ),
    Case(
        "jobs of a cluster the caller may not use",
        403,
        auth="alice",
        path="/resource_server/closed/jobs",
    ),
    Case(
        "models of a cluster the caller may not use",
        403,
        auth="alice",
        path="/resource_server/closed/models",
    ),
    Case(
        "one model of a cluster the caller may not use",
        403,
        auth="alice",
        path="/resource_server/closed/models?model_id=closed-model",
    ),
    Case("models of a cluster with no key", 401, path="/resource_server/open/models"),
    Case(
        "models of a cluster, unknown key", 401, auth="revoked", path="/resource_server/open/models"
    ),
    # -- domains -------------------------------------------------------------------------
    Case(
        "domain look-alike evil-example.org",
        403,
        auth="lookalike_hyphen",
        model="org-model",
        rule="identity domain",
    ),
    Case(
        "domain look-alike example.org.evil.com",
        403,
        auth="lookalike_suffix",
        model="org-model",
        rule="identity domain",
    ),
    Case("domain look-alike on a wildcard", 403, auth="lookalike_hyphen", model="sub-model"),
    Case("suffix look-alike on a wildcard", 403, auth="lookalike_suffix", model="sub-model"),
    Case("unicode confusable (Cyrillic e)", 403, auth="confusable_cyrillic", model="org-model"),
    Case("unicode confusable (fullwidth e)", 403, auth="confusable_fullwidth", model="org-model"),
    Case("confusable I for l", 403, auth="confusable_dotless", model="org-model"),
    Case("zero-width character", 403, auth="zero_width", model="org-model"),
    Case(
        "username without @ on a domain-restricted endpoint",
        403,
        auth="nodomain",
        model="org-model",
        rule="identity domain",
    ),
    Case("subdomain on an exact domain rule", 403, auth="subdomain", model="org-model"),
    Case("apex on a wildcard-only rule", 403, auth="alice", model="sub-model"),
    Case("OIDC identity outside the cluster group", 403, auth="oidc", model="closed-model"),
    Case("Globus identity outside the cluster group", 403, auth="globus", model="closed-model"),
    # -- controls: these must work, and reach the backend exactly once -------------------
    Case("control: static key", 200, auth="alice", model="physics-model"),
    Case("control: EXAMPLE.ORG is example.org", 200, auth="upper", model="org-model"),
    Case("control: trailing dot is the same name", 200, auth="trailing_dot", model="org-model"),
    Case("control: subdomain on a wildcard", 200, auth="subdomain", model="sub-model"),
    Case("control: no domain where none is required", 200, auth="nodomain", model="physics-model"),
    Case("control: OIDC", 200, auth="oidc", model="physics-model"),
    Case("control: Globus", 200, auth="globus", model="physics-model"),
]


def fill(text: str, credentials: dict[str, str]) -> str:
    return text.format(**credentials)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_security_battery(world: World, case: Case) -> None:
    headers = {"Content-Type": "application/json", **case.headers}
    if case.auth is not None:
        headers["Authorization"] = f"Bearer {world.credentials[case.auth]}"
    elif case.raw_authorization is not None:
        headers["Authorization"] = fill(case.raw_authorization, world.credentials)
    if case.name == "wrong scheme Basic":
        basic = base64.b64encode(f"alice:{world.credentials['alice']}".encode()).decode()
        headers["Authorization"] = f"Basic {basic}"
    path = fill(case.path, world.credentials)
    before = len(world.backend.requests)
    world.globus.down = case.globus_down
    try:
        if path.split("?")[0].endswith(("/jobs", "/models")):
            response = httpx.get(world.url + path, headers=headers)
        else:
            response = httpx.post(world.url + path, json=chat(case.model), headers=headers)
    finally:
        world.globus.down = False
    reached = len(world.backend.requests) - before
    assert response.status_code == case.status, response.text
    assert reached == (1 if case.status == 200 else 0), f"{reached} call(s) reached the backend"
    if case.status != 200:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "code", "param"}
        for group in ["g-physics", "g-closed", "example.org'"]:
            assert group not in error["message"]
    if case.status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
        if case.challenge:
            assert case.challenge in response.headers["www-authenticate"]
    if case.status == 403:
        assert response.json()["error"]["type"] == "permission_error"
        if case.rule:
            assert case.rule in response.json()["error"]["message"]
    if case.status == 503:
        assert "identity provider" in response.json()["error"]["message"]
    for secret in world.credentials.values():
        assert secret not in response.text


# -- the same refusals on the Responses and Messages APIs ---------------------------------

OTHER_APIS = {
    "responses": lambda model: {"model": model, "input": "hi"},
    "messages": lambda model: {
        "model": model,
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "hi"}],
    },
}
INFERENCE_CASES = [c for c in CASES if "chat/completions" in c.path]
ANTHROPIC_TYPES = {401: "authentication_error", 403: "permission_error", 503: "overloaded_error"}


@pytest.mark.parametrize("api", sorted(OTHER_APIS))
@pytest.mark.parametrize("case", INFERENCE_CASES, ids=[c.name for c in INFERENCE_CASES])
def test_security_battery_on_the_other_apis(world: World, case: Case, api: str) -> None:
    """Every refusal (and control) of the battery, on `/v1/responses` and `/v1/messages`;
    on the Messages route each refusal takes Anthropic's error shape."""
    headers = {"Content-Type": "application/json", **case.headers}
    if case.auth is not None:
        headers["Authorization"] = f"Bearer {world.credentials[case.auth]}"
    elif case.raw_authorization is not None:
        headers["Authorization"] = fill(case.raw_authorization, world.credentials)
    if case.name == "wrong scheme Basic":
        basic = base64.b64encode(f"alice:{world.credentials['alice']}".encode()).decode()
        headers["Authorization"] = f"Basic {basic}"
    path = fill(case.path, world.credentials).replace("chat/completions", api)
    before = len(world.backend.requests)
    world.globus.down = case.globus_down
    try:
        response = httpx.post(world.url + path, json=OTHER_APIS[api](case.model), headers=headers)
    finally:
        world.globus.down = False
    reached = len(world.backend.requests) - before
    assert response.status_code == case.status, response.text
    assert reached == (1 if case.status == 200 else 0), f"{reached} call(s) reached the backend"
    if case.status == 200:
        assert world.backend.requests[-1].path == f"/v1/{api}"
    elif api == "messages":
        payload = response.json()
        assert payload["type"] == "error" and set(payload["error"]) == {"type", "message"}
        assert payload["error"]["type"] == ANTHROPIC_TYPES[case.status]
    else:
        assert set(response.json()["error"]) == {"message", "type", "code", "param"}
    if case.status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
    if case.status == 403 and case.rule:
        assert case.rule in response.text
    for secret in [*world.credentials.values(), BACKEND_SECRET]:
        assert secret not in response.text


@pytest.mark.parametrize(
    ("key", "path", "status"),
    [
        ("alice", "/v1/messages", 200),
        ("bob", "/v1/messages", 403),  # physics-model: a group bob is not in
        ("revoked", "/v1/messages", 401),
        ("alice_changed", "/v1/messages", 401),
        ("alice", "/resource_server/closed/api/v1/messages", 403),
        ("alice", "/v1/responses", 401),  # x-api-key is the Messages API's header only
        ("alice", "/v1/chat/completions", 401),
    ],
)
def test_x_api_key_is_checked_as_a_bearer_token_is(
    world: World, key: str, path: str, status: int
) -> None:
    model = "closed-model" if "closed" in path else "physics-model"
    body = OTHER_APIS["messages"](model) if "messages" in path else chat(model)
    if path.endswith("responses"):
        body = OTHER_APIS["responses"](model)
    before = len(world.backend.requests)
    response = httpx.post(
        world.url + path, json=body, headers={"x-api-key": world.credentials[key]}
    )
    assert response.status_code == status, response.text
    assert len(world.backend.requests) - before == (1 if status == 200 else 0)
    assert world.credentials[key] not in response.text and BACKEND_SECRET not in response.text


# -- listings show only what the caller may use ------------------------------------------


def get(world: World, path: str, credential: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {world.credentials[credential]}"}
    return httpx.get(world.url + path, headers=headers)


@pytest.mark.parametrize(
    ("credential", "models"),
    [
        ("alice", {"open-model", "physics-model", "org-model"}),
        ("bob", {"open-model"}),
        ("subdomain", {"open-model", "sub-model"}),
        ("lookalike_hyphen", {"open-model"}),
        ("oidc", {"open-model", "physics-model", "org-model"}),
        ("globus", {"open-model", "physics-model", "org-model"}),
    ],
)
def test_listings_show_only_what_the_caller_may_use(
    world: World, credential: str, models: set[str]
) -> None:
    before = len(world.backend.requests)
    listed = get(world, "/v1/models", credential).json()
    assert {m["id"] for m in listed["data"]} == models
    endpoints = get(world, "/resource_server/list-endpoints", credential).json()
    shown = {
        m["model"]
        for cluster in endpoints["clusters"].values()
        for framework in cluster["frameworks"].values()
        for m in framework["models"]
    }
    assert shown == models
    assert "closed" not in endpoints["clusters"]
    assert len(world.backend.requests) == before


def test_whoami_shows_the_identity_without_tokens(world: World) -> None:
    for credential, username, provider in [
        ("alice", "alice@example.org", "static"),
        ("oidc", "olive@example.org", "oidc"),
        ("globus", "gus@example.org", "globus"),
    ]:
        response = get(world, "/resource_server/whoami", credential)
        assert response.status_code == 200
        body = response.json()
        assert (body["username"], body["provider"]) == (username, provider)
        assert body["groups"] == ["g-physics"]
        assert world.credentials[credential] not in response.text
    assert httpx.get(world.url + "/resource_server/whoami").status_code == 401


def test_each_provider_works_with_the_official_client(world: World) -> None:
    for credential in ["alice", "oidc", "globus"]:
        with openai.OpenAI(
            base_url=f"{world.url}/v1", api_key=world.credentials[credential], max_retries=0
        ) as client:
            reply = client.chat.completions.create(**chat("physics-model"))
            assert "hi" in (reply.choices[0].message.content or "")
            streamed = list(client.chat.completions.create(**chat("physics-model"), stream=True))
            assert streamed[-1].choices[0].finish_reason == "stop"
            assert {m.id for m in client.models.list()} >= {"open-model", "physics-model"}
            with pytest.raises(openai.PermissionDeniedError):
                client.chat.completions.create(**chat("closed-model"))
    with (
        openai.OpenAI(
            base_url=f"{world.url}/v1", api_key=world.credentials["oidc_expired"], max_retries=0
        ) as client,
        pytest.raises(openai.AuthenticationError),
    ):
        client.chat.completions.create(**chat("open-model"))


def test_a_key_revoked_while_serving_stops_working_without_a_restart(world: World) -> None:
    _, key = add_key(world.tokens, "kim@example.org", ["g-physics"])
    world.keys_clock.advance(60)  # past the provider's next look at the file
    headers = {"Authorization": f"Bearer {key}"}
    before = len(world.backend.requests)
    ok = httpx.post(f"{world.url}/v1/chat/completions", json=chat("physics-model"), headers=headers)
    assert ok.status_code == 200
    assert revoke_keys(world.tokens, "kim@example.org") == 1
    world.keys_clock.advance(60)
    refused = httpx.post(
        f"{world.url}/v1/chat/completions", json=chat("physics-model"), headers=headers
    )
    assert refused.status_code == 401
    assert len(world.backend.requests) == before + 1


def test_no_credential_reaches_the_logs(
    world: World, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    for case in CASES:
        test_security_battery(world, case)
    # Everything the servers logged (their threads), and the gateway's own loggers; the
    # test's own HTTP client logs the URLs it was asked to call, a query key included.
    records = [
        r
        for r in caplog.records
        if r.threadName != "MainThread" or r.name.startswith("inference_gateway")
    ]
    text = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in records)
    assert "inference_gateway.requests" in {r.name for r in records}
    assert any(r.name.startswith("httpx") for r in records)  # the gateway's calls out
    for secret in [*world.credentials.values(), CLIENT_SECRET, BACKEND_SECRET]:
        assert secret not in text
