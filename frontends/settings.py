"""Settings: environment variables `INFERENCE_GATEWAY_*`, or one TOML file named by
`INFERENCE_GATEWAY_CONFIG`; the environment wins.  Validated once, at start."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pydantic
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from core import ConfigurationError

__all__ = ["REPO_FIXTURES", "Settings", "load_settings"]

REPO_FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CONFIG_ENV = "INFERENCE_GATEWAY_CONFIG"


def _state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "inference-gateway"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INFERENCE_GATEWAY_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = pydantic.Field(default=8000, ge=0, le=65535)
    fixtures_dir: Path = REPO_FIXTURES
    state_dir: Path = pydantic.Field(default_factory=_state_dir)
    tokens_file: Path | None = None
    log_level: str = "INFO"
    verify_tls: bool = True

    @property
    def tokens_path(self) -> Path:
        return self.tokens_file or self.state_dir / "tokens.json"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_ENV)
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment and config file; ConfigurationError names the culprit."""
    source = os.environ.get(CONFIG_ENV) or "environment (INFERENCE_GATEWAY_*)"
    if os.environ.get(CONFIG_ENV) and not Path(os.environ[CONFIG_ENV]).is_file():
        raise ConfigurationError("config file not found", file=os.environ[CONFIG_ENV])
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except pydantic.ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "settings"
        raise ConfigurationError(str(error["msg"]), file=source, field=field) from None
    except ValueError as exc:  # a TOML syntax error
        raise ConfigurationError(f"cannot read: {exc}", file=source) from None
