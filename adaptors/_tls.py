"""The seed system's TLS options for backends, as a config mix-in shared by adaptors.

`ca_cert_path`, `client_cert_path`, `client_key_path`, `check_hostname` and `trust_env`
sit in an entry's `config` beside the adaptor's own fields.  They are checked when the
config is read (files exist, are readable, hold PEM, the key matches the certificate),
so a mistake stops start-up with the entry and field named; then they travel on every
`BackendRequest` as `TLSOptions`, and the transport honours them.  At start, the
assembler asks the transport, through `check_transport_tls`, whether it can honour each
adaptor's options (a proxy variable it cannot speak to, say).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationInfo, field_validator, model_validator

from core import ConfigurationError
from transports import TLSConfigError, TLSOptions, check_readable, ssl_context_for

__all__ = ["TLSConfig", "check_transport_tls", "tls_options_of"]

TLS_FIELDS = ("ca_cert_path", "client_cert_path", "client_key_path", "check_hostname", "trust_env")


class TLSConfig(BaseModel):
    """TLS towards the backend; all optional, and without any the transport's defaults."""

    ca_cert_path: str | None = None
    client_cert_path: str | None = None
    client_key_path: str | None = None
    check_hostname: bool = True
    trust_env: bool | None = None

    @field_validator("ca_cert_path")
    @classmethod
    def _ca_readable(cls, value: str | None) -> str | None:
        return _readable("ca_cert_path", value, directory_ok=True)

    @field_validator("client_cert_path")
    @classmethod
    def _cert_readable(cls, value: str | None) -> str | None:
        return _readable("client_cert_path", value)

    @field_validator("client_key_path")
    @classmethod
    def _key_with_cert(cls, value: str | None, info: ValidationInfo) -> str | None:
        # A certificate that failed its own check is absent here and reported there.
        cert_given = info.data.get("client_cert_path", "failed") is not None
        if value is not None and not cert_given:
            raise ValueError("a client key needs client_cert_path (its certificate)")
        return _readable("client_key_path", value)

    @model_validator(mode="after")
    def _context_builds(self) -> Any:
        """Load everything once, as a transport will: PEM content, a matching key."""
        options = self.tls_options
        url = getattr(self, "api_url", None) or getattr(self, "status_url", None)
        plain = isinstance(url, str) and url.startswith("http://")
        if options is not None and plain and options != TLSOptions(trust_env=options.trust_env):
            # Nothing would use them: say so rather than ignore them.
            raise ValueError("TLS options are set but the URL is http://, not https://")
        if options is not None:
            try:
                ssl_context_for(options, trust_env=bool(options.trust_env))
            except TLSConfigError as exc:
                raise ValueError(str(exc)) from None
        return self

    @property
    def tls_options(self) -> TLSOptions | None:
        """The options for `BackendRequest.tls`; None when none was given."""
        if not self.model_fields_set.intersection(TLS_FIELDS):
            return None
        return TLSOptions(
            ca_cert_path=self.ca_cert_path,
            client_cert_path=self.client_cert_path,
            client_key_path=self.client_key_path,
            check_hostname=self.check_hostname,
            trust_env=self.trust_env,
        )


def _readable(option: str, value: str | None, *, directory_ok: bool = False) -> str | None:
    if value is not None:
        try:
            check_readable(option, value, directory_ok=directory_ok)
        except TLSConfigError as exc:
            raise ValueError(exc.reason) from None
    return value


def tls_options_of(adaptor: object) -> TLSOptions | None:
    """The TLS options of an adaptor whose `config` is a `TLSConfig`, else None."""
    config = getattr(adaptor, "config", None)
    return config.tls_options if isinstance(config, TLSConfig) else None


def check_transport_tls(
    transport: object, tls: TLSOptions | None, *, file: str, entry: object
) -> None:
    """Ask the transport (if it can be asked) whether it honours `tls`; refuse if not."""
    check = getattr(transport, "check_tls", None)
    if tls is None or check is None:
        return
    try:
        check(tls)
    except TLSConfigError as exc:
        named = exc.option in TLS_FIELDS
        raise ConfigurationError(
            exc.reason if named else str(exc),
            file=file,
            entry=entry,
            field=f"config.{exc.option if named else 'trust_env'}",
        ) from None
