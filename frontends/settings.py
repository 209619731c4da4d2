"""Settings: environment variables `INFERENCE_GATEWAY_*`, or one TOML file named by
`INFERENCE_GATEWAY_CONFIG`; the environment wins.  Validated once, at start."""

from __future__ import annotations

import importlib.resources
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from core import ConfigurationError
from transports import DEFAULT_MAX_ANSWER_BYTES, ConnectionLimits, Timeout

__all__ = ["Settings", "default_fixtures", "load_settings"]

CONFIG_ENV = "INFERENCE_GATEWAY_CONFIG"
# The demo catalog ships inside the wheel as this package (setup.py maps the repository's
# top-level fixtures/ onto it), so an installed gateway finds it from any directory.
FIXTURES_PACKAGE = "frontends._fixtures"


def default_fixtures() -> Path:
    """The built-in demo catalog: the package data of an installed gateway, or, run from a
    source checkout (an editable install included), the repository's own `fixtures/`.
    Both are the same files; `fixtures/` is their one source."""
    try:
        catalog = importlib.resources.files(FIXTURES_PACKAGE) / "clusters.json"
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "fixtures"
    if not isinstance(catalog, Path):
        raise ConfigurationError(
            f"the built-in fixtures ({FIXTURES_PACKAGE}) are not a folder on disk; "
            "name a fixtures folder with INFERENCE_GATEWAY_FIXTURES_DIR",
            file="settings",
            field="fixtures_dir",
        )
    return catalog.parent


ProviderName = Literal["static", "globus", "oidc"]


def _state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "inference-gateway"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INFERENCE_GATEWAY_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = pydantic.Field(default=8000, ge=0, le=65535)
    fixtures_dir: Path = pydantic.Field(default_factory=default_fixtures)
    state_dir: Path = pydantic.Field(default_factory=_state_dir)
    tokens_file: Path | None = None
    log_level: str = "INFO"
    verify_tls: bool = True
    # The store: an SQLite file under state_dir unless this names a database
    # (sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST/DB); may hold a password.
    database_url: pydantic.SecretStr | None = None
    # Ask backends for usage at the end of chat/completions streams (include_usage), so
    # streamed tokens are counted rather than estimated; off for a backend that refuses it.
    stream_usage: bool = True
    # Metrics: with several worker processes, a directory they share (prometheus-client's
    # multiprocess mode); none, the metrics of this one process.  A token, if /metrics
    # should need `Authorization: Bearer <token>` (Prometheus scrapes without by default).
    metrics_dir: Path | None = None
    metrics_token: pydantic.SecretStr | None = None
    # Files and batches (/v1/files, /v1/batches): an input file's size and lines, the
    # unfinished batches a user may have, the lines a batch runs at once.
    batch_max_file_bytes: int = pydantic.Field(default=100 * 1024 * 1024, ge=1)
    batch_max_lines: int = pydantic.Field(default=50_000, ge=1)
    batch_max_active: int = pydantic.Field(default=1, ge=1)
    batch_concurrency: int = pydantic.Field(default=8, ge=1, le=1024)
    # Worker processes of `serve` sharing its port (`serve --workers N`), and whether this
    # process runs batches (workers after the first do not, on SQLite).
    workers: int = pydantic.Field(default=1, ge=1, le=256)
    worker_index: int = pydantic.Field(default=0, ge=0, le=255)  # set by serve for each
    # This server's id among the replicas of a shared database (its workers share it);
    # none: a new one at each start.
    replica_id: str | None = None
    batch_runner: bool = True
    # Batch durability (README "Batches"): how long a process holds a batch without
    # renewing (it renews several times within); a batch whose holder died waits this
    # long before another process takes it up.
    batch_lease_seconds: float = pydantic.Field(default=60.0, ge=1.0, le=3600.0)
    # Delegated batches (an endpoint whose adaptor runs the whole file, README "Seed
    # batch routes"): how often each job's status is asked for, and the directory the
    # gateway copies inputs to and jobs write outputs in (default STATE_DIR/batch-jobs).
    batch_poll_seconds: float = pydantic.Field(default=30.0, gt=0)
    batch_work_dir: Path | None = None
    # The request log keeps prompts and responses only when asked, each capped (chars).
    capture_bodies: bool = False
    capture_limit: int = pydantic.Field(default=4096, ge=1, le=65536)
    # Who may see everyone's usage: usernames, and groups written "group:NAME".
    operators: Annotated[list[str], NoDecode] = []

    # Quotas (README "Quotas"): off altogether with quotas=false.  Counted in process
    # unless redis_url names a Redis (redis://[:PASSWORD@]HOST[:PORT][/DB], rediss://,
    # unix://) that replicas share, under redis_key_prefix; may hold a password.
    quotas: bool = True
    redis_url: pydantic.SecretStr | None = None
    redis_key_prefix: str = pydantic.Field(default="inference-gateway:{quota}:", min_length=1)
    requests_per_minute_per_user: int = pydantic.Field(default=0, ge=0)
    quota_default_max_tokens: int = pydantic.Field(default=1024, ge=1)
    # With redis_url, which endpoint holds each stored Responses API answer is kept there
    # for every replica this many seconds (default 30 days, as OpenAI keeps a response).
    response_ttl: float = pydantic.Field(default=30 * 24 * 3600.0, gt=0)

    # Limits on what a client may send (README "Limits"): the body's bytes (413), the
    # request line and headers' bytes (431), how deeply its JSON nests and how many chat
    # messages it carries (400).  The depth stays below where Python's parser gives up.
    max_body_bytes: int = pydantic.Field(default=16 * 1024 * 1024, ge=1024)
    max_header_bytes: int = pydantic.Field(default=32 * 1024, ge=1024, le=1024 * 1024)
    max_json_depth: int = pydantic.Field(default=64, ge=2, le=512)
    max_messages: int = pydantic.Field(default=2048, ge=1)

    # Endpoint health (README "Several endpoints for one model"): consecutive failures
    # that open an endpoint's circuit breaker, seconds it stays open before one probe
    # call, and seconds a cluster's get_jobs status is cached (read again in the
    # background while serving).
    breaker_failures: int = pydantic.Field(default=5, ge=1)
    breaker_cooldown: float = pydantic.Field(default=30.0, gt=0)
    status_ttl: float = pydantic.Field(default=10.0, gt=0)
    # The status page (README "Status page"): the seconds of the request log its
    # latency, time-to-first-token and throughput figures cover.
    status_window_seconds: float = pydantic.Field(default=900.0, gt=0, le=7 * 86400)

    # Backend calls (README "Backend time limits, connections and answer size"): the
    # default time limits, which an endpoint's or its cluster's config may override; the
    # connections in use per backend (host) and in all, and how long a request waits for
    # one before its 503; the largest non-streamed answer read from a backend (bytes).
    connect_timeout: float = pydantic.Field(default=10.0, gt=0)
    first_byte_timeout: float = pydantic.Field(default=120.0, gt=0)
    stream_idle_timeout: float = pydantic.Field(default=120.0, gt=0)
    total_timeout: float = pydantic.Field(default=120.0, gt=0)
    max_connections_per_backend: int = pydantic.Field(default=100, ge=1)
    max_connections: int = pydantic.Field(default=1000, ge=1)
    pool_wait_timeout: float = pydantic.Field(default=5.0, gt=0)
    max_answer_bytes: int = pydantic.Field(default=DEFAULT_MAX_ANSWER_BYTES, ge=1)
    # The outbound HTTP client of a served gateway: h11 (transports.h11_transport, the
    # faster under load) or httpx (transports.httpx_transport).
    transport: Literal["h11", "httpx"] = "h11"
    # `serve --loop asyncio` on uvloop (the `fast` extra) instead of asyncio's own loop;
    # see frontends/event_loop.py for what it costs.
    uvloop: bool = False

    # Identity providers, tried in this order (a JSON list or "static,globus").
    identity_providers: Annotated[list[ProviderName], NoDecode] = ["static"]
    identity_timeout: float = pydantic.Field(default=10.0, gt=0)
    # Globus Auth (https://docs.globus.org/api/auth/)
    globus_client_id: str | None = None
    globus_client_secret: pydantic.SecretStr | None = None
    globus_auth_base_url: str = "https://auth.globus.org"
    globus_groups_base_url: str = "https://groups.api.globus.org"
    globus_allowed_domains: Annotated[list[str], NoDecode] = []
    globus_allowed_service_accounts: Annotated[list[str], NoDecode] = []
    globus_required_group: str | None = None
    # OIDC / JWT
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = None
    oidc_username_claim: str = "preferred_username"
    oidc_groups_claim: str = "groups"
    oidc_algorithms: Annotated[list[str], NoDecode] = ["RS256", "ES256"]

    # Graceful drain and connections (README "Stopping"): after SIGTERM or SIGINT, how
    # long requests and streams in flight may go on before they are ended with a
    # "shutting down" error; how long an idle keep-alive connection is kept open.
    drain_seconds: float = pydantic.Field(default=30.0, ge=0)
    keep_alive_seconds: float = pydantic.Field(default=5.0, gt=0)

    @pydantic.field_validator(
        "identity_providers",
        "globus_allowed_domains",
        "globus_allowed_service_accounts",
        "oidc_algorithms",
        "operators",
        mode="before",
    )
    @classmethod
    def _list(cls, value: Any) -> Any:
        """A list from TOML, or from the environment as JSON or comma-separated."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @pydantic.field_validator("identity_providers")
    @classmethod
    def _providers(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("name at least one identity provider")
        if len(set(value)) != len(value):
            raise ValueError("a provider is named twice")
        return value

    @pydantic.field_validator("database_url")
    @classmethod
    def _database_url(cls, value: pydantic.SecretStr | None) -> pydantic.SecretStr | None:
        if value is None:
            return None
        # Imported when needed: the store's libraries are slow to import for `token`.
        from frontends.store import normalise_database_url

        try:
            return pydantic.SecretStr(normalise_database_url(value.get_secret_value()))
        except ValueError as exc:
            raise ValueError(f"INFERENCE_GATEWAY_DATABASE_URL: {exc}") from None

    @pydantic.field_validator("metrics_token")
    @classmethod
    def _metrics_token(cls, value: pydantic.SecretStr | None) -> pydantic.SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("an empty token would lock every scraper out; unset it instead")
        return value

    @pydantic.field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: pydantic.SecretStr | None) -> pydantic.SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        import redis

        try:
            redis.ConnectionPool.from_url(value.get_secret_value())  # parses; connects not
        except ValueError as exc:
            raise ValueError(f"INFERENCE_GATEWAY_REDIS_URL: {exc}") from None
        return value

    @pydantic.field_validator("oidc_algorithms")
    @classmethod
    def _algorithms(cls, value: list[str]) -> list[str]:
        for name in value:
            if name.lower() == "none" or name.upper().startswith("HS"):
                raise ValueError(f"{name!r}: only asymmetric JWT algorithms are accepted")
        return value

    @pydantic.model_validator(mode="after")
    def _provider_settings(self) -> Settings:
        needed = {
            "globus": ("globus_client_id", "globus_client_secret"),
            "oidc": ("oidc_issuer", "oidc_audience"),
        }
        for provider, fields in needed.items():
            if provider in self.identity_providers:
                for name in fields:
                    if not getattr(self, name):
                        raise ValueError(
                            f"field '{name}' is required when identity_providers "
                            f"includes '{provider}' (INFERENCE_GATEWAY_{name.upper()})"
                        )
        return self

    @pydantic.model_validator(mode="after")
    def _connections(self) -> Settings:
        if self.max_connections_per_backend > self.max_connections:
            raise ValueError(
                f"field 'max_connections_per_backend' ({self.max_connections_per_backend}) "
                f"must not exceed max_connections ({self.max_connections}): one backend "
                "could then hold every connection"
            )
        return self

    @property
    def backend_timeouts(self) -> Timeout:
        """The default time limits of a backend call (see `adaptors._timeouts`)."""
        return Timeout(
            connect=self.connect_timeout,
            read=self.total_timeout,
            first_byte=self.first_byte_timeout,
            idle=self.stream_idle_timeout,
            total=self.total_timeout,
        )

    @property
    def connection_limits(self) -> ConnectionLimits:
        return ConnectionLimits(
            total=self.max_connections,
            per_backend=self.max_connections_per_backend,
            pool_wait=self.pool_wait_timeout,
        )

    @property
    def tokens_path(self) -> Path:
        return self.tokens_file or self.state_dir / "tokens.json"

    @property
    def store_url(self) -> str:
        """The store's database URL: `database_url`, or the SQLite file under state_dir."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        from frontends.store import default_database_url

        return default_database_url(self.state_dir)

    @property
    def capture_chars(self) -> int | None:
        """How much of each prompt and response the log keeps; None: nothing."""
        return self.capture_limit if self.capture_bodies else None

    @property
    def local_key_path(self) -> Path:
        """The local user's own copy of the key made on first start (mode 0600)."""
        return self.state_dir / "local-key"

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
