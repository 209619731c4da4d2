"""Assembly: fixtures to a Gateway, with the secrets fixtures name handed in, not read
from the process environment deep inside an adaptor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core import ConfigurationError, Identity
from frontends.assembly import build_gateway
from frontends.embedding import FixedIdentity
from tests.support.gateway_server import write_fixtures
from transports import BackendRequest, BackendResponse, FunctionTransport

pytestmark = pytest.mark.anyio

KEY_ENV = "INFERENCE_GATEWAY_TEST_ASSEMBLY_KEY"
SECRET = "sk-assembly-handed-in-0123456789"
CHAT = {"model": "m-1", "messages": [{"role": "user", "content": "hi"}]}
ADA = FixedIdentity(Identity(username="ada@example.org"))
AUTH = {"Authorization": "Bearer x"}  # FixedIdentity vouches for every caller


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _fixtures(folder: Path) -> Path:
    config = {"api_url": "http://backend.invalid/v1", "api_key_env_name": KEY_ENV}
    return write_fixtures(
        folder,
        [
            {
                "cluster_name": "c",
                "frameworks": ["api"],
                "openai_endpoints": ["chat/completions"],
                "cluster_adapter": "adaptors.clusters.openai_compatible.OpenAICompatibleCluster",
                "config": config,
            }
        ],
        [
            {
                "endpoint_slug": "c-api-m-1",
                "cluster": "c",
                "framework": "api",
                "model": "m-1",
                "endpoint_adapter": "adaptors.endpoints.direct_api.DirectAPIEndpoint",
                "config": config,
            }
        ],
    )


def _backend(request: BackendRequest) -> BackendResponse:
    if request.url.endswith("/models"):
        return BackendResponse(status=200, body=json.dumps({"data": [{"id": "m-1"}]}).encode())
    return BackendResponse(
        status=200,
        headers={"content-type": "application/json"},
        body=json.dumps({"object": "chat.completion", "choices": []}).encode(),
    )


def _authorization(request: BackendRequest) -> str | None:
    return next((v for k, v in request.headers if k.lower() == "authorization"), None)


async def test_the_key_comes_from_the_environment_handed_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-process-environment-not-this-one")
    transport = FunctionTransport(_backend)
    gateway = build_gateway(
        _fixtures(tmp_path), identity=ADA, transport=transport, environ={KEY_ENV: SECRET}
    )
    try:
        reply = await gateway.request("chat/completions", CHAT, headers=AUTH)
        assert reply.status == 200
        jobs = await gateway.clusters["c"].get_jobs()
        assert jobs.jobs is not None
    finally:
        await gateway.aclose()
    assert [_authorization(r) for r in transport.requests] == [f"Bearer {SECRET}"] * 2


async def test_an_environment_without_the_key_sends_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-process-environment-not-this-one")
    transport = FunctionTransport(_backend)
    gateway = build_gateway(_fixtures(tmp_path), identity=ADA, transport=transport, environ={})
    try:
        await gateway.request("chat/completions", CHAT, headers=AUTH)
    finally:
        await gateway.aclose()
    assert [_authorization(r) for r in transport.requests] == [None]


async def test_by_default_the_process_environment_is_read_once_at_assembly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    transport = FunctionTransport(_backend)
    gateway = build_gateway(_fixtures(tmp_path), identity=ADA, transport=transport)
    monkeypatch.setenv(KEY_ENV, "sk-changed-after-start")
    try:
        await gateway.request("chat/completions", CHAT, headers=AUTH)
    finally:
        await gateway.aclose()
    assert [_authorization(r) for r in transport.requests] == [f"Bearer {SECRET}"]


def test_a_missing_fixtures_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as raised:
        build_gateway(tmp_path, identity=ADA, transport=FunctionTransport(_backend))
    assert str(tmp_path / "clusters.json") in str(raised.value)
