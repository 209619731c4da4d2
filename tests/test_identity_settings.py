"""Identity settings: the chain in the configured order, and mistakes named at start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core import ConfigurationError
from frontends.identity import GlobusAuth, OIDCProvider, StaticKeys, build_identity
from frontends.settings import load_settings
from transports.httpx_transport import HttpxTransport

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("INFERENCE_GATEWAY_"):
            monkeypatch.delenv(name)


@pytest.mark.anyio
@pytest.mark.usefixtures("clean_env")
async def test_providers_are_built_in_the_configured_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tokens.json").write_text('{"keys": []}')
    monkeypatch.setenv("INFERENCE_GATEWAY_IDENTITY_PROVIDERS", "oidc, globus,static")
    monkeypatch.setenv("INFERENCE_GATEWAY_TOKENS_FILE", str(tmp_path / "tokens.json"))
    monkeypatch.setenv("INFERENCE_GATEWAY_GLOBUS_CLIENT_ID", "client")
    monkeypatch.setenv("INFERENCE_GATEWAY_GLOBUS_CLIENT_SECRET", "s3cr3t-value")
    monkeypatch.setenv("INFERENCE_GATEWAY_GLOBUS_ALLOWED_DOMAINS", "anl.gov,*.anl.gov")
    monkeypatch.setenv("INFERENCE_GATEWAY_OIDC_ISSUER", "https://issuer.example")
    monkeypatch.setenv("INFERENCE_GATEWAY_OIDC_AUDIENCE", "gateway")
    settings = load_settings()
    assert settings.globus_allowed_domains == ["anl.gov", "*.anl.gov"]
    assert "s3cr3t-value" not in repr(settings)
    transport = HttpxTransport()
    chain = build_identity(settings, transport=transport)
    try:
        assert [type(p) for p in chain.providers] == [OIDCProvider, GlobusAuth, StaticKeys]
    finally:
        await chain.aclose()
        await transport.aclose()


def test_the_readme_toml_example_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    readme = (ROOT / "README.md").read_text()
    example = readme.split("```toml\n")[1].split("```")[0]
    config = tmp_path / "gateway.toml"
    config.write_text(example)
    monkeypatch.setenv("INFERENCE_GATEWAY_CONFIG", str(config))
    settings = load_settings()
    assert settings.identity_providers == ["oidc", "static"]
    assert settings.oidc_username_claim == "email"


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"INFERENCE_GATEWAY_IDENTITY_PROVIDERS": "globus"}, "globus_client_id"),
        (
            {
                "INFERENCE_GATEWAY_IDENTITY_PROVIDERS": "oidc",
                "INFERENCE_GATEWAY_OIDC_ISSUER": "https://issuer.example",
            },
            "oidc_audience",
        ),
        ({"INFERENCE_GATEWAY_IDENTITY_PROVIDERS": "ldap"}, "identity_providers"),
        ({"INFERENCE_GATEWAY_IDENTITY_PROVIDERS": "static,static"}, "identity_providers"),
        ({"INFERENCE_GATEWAY_OIDC_ALGORITHMS": "HS256"}, "oidc_algorithms"),
        ({"INFERENCE_GATEWAY_IDENTITY_TIMEOUT": "0"}, "identity_timeout"),
    ],
)
def test_invalid_identity_settings_fail_naming_the_field(
    env: dict[str, str], named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    assert named in str(raised.value)


def test_serve_refuses_to_start_with_missing_globus_settings(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERENCE_GATEWAY_")}
    env.update(
        INFERENCE_GATEWAY_STATE_DIR=str(tmp_path / "state"),
        INFERENCE_GATEWAY_IDENTITY_PROVIDERS="static,globus",
        PYTHONPATH=str(ROOT),
    )
    result = subprocess.run(
        [sys.executable, "-m", "frontends.cli", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "globus_client_id" in result.stderr
    assert "Traceback" not in result.stderr
