"""The SSL context for a set of `TLSOptions`, built one way for every transport.

Both transports call `ssl_context_for`, so an endpoint's CA, client certificate and
hostname rule mean the same over httpx and over h11; and adaptors call it once at start
(through their config's validation) so a missing, unreadable or mismatched file stops
start-up instead of failing the first request.

Which CAs are trusted, in order: `ca_cert_path` if given; else, with `trust_env`,
`SSL_CERT_FILE` then `SSL_CERT_DIR` (as httpx reads them); else the transport's default
(`default_cafile`, e.g. certifi's bundle for httpx, or the system's store, read from
OpenSSL's built-in locations so that without `trust_env` the variables do not count).  Verification
is never turned off here: `check_hostname=False` still requires a chain to a trusted CA.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Sequence

from transports._base import TLSOptions

__all__ = ["TLSConfigError", "check_readable", "environment_ca", "ssl_context_for"]


class TLSConfigError(ValueError):
    """A TLS option cannot be honoured; `option` names it, `reason` says why."""

    def __init__(self, message: str) -> None:
        option, _, reason = message.partition(": ")
        self.option = option if reason else None
        self.reason = reason or message
        super().__init__(message)


def check_readable(option: str, path: str, *, directory_ok: bool = False) -> None:
    """Refuse a path that does not exist, is the wrong kind or cannot be read."""
    _readable(option, path, directory_ok=directory_ok)


def _readable(option: str, path: str, *, directory_ok: bool = False) -> None:
    if not os.path.exists(path):
        raise TLSConfigError(f"{option}: {path!r} does not exist")
    if os.path.isdir(path):
        if not directory_ok:
            raise TLSConfigError(f"{option}: {path!r} is a directory, not a file")
    elif not os.path.isfile(path):
        raise TLSConfigError(f"{option}: {path!r} is not a regular file")
    if not os.access(path, os.R_OK):
        raise TLSConfigError(f"{option}: {path!r} is not readable by the gateway")


def _no_password() -> str:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key.
    raise TLSConfigError("client_key_path: encrypted private keys are not supported")


def environment_ca() -> tuple[str, str | None, str | None] | None:
    """The CA location the environment names (`SSL_CERT_FILE`, else `SSL_CERT_DIR`)."""
    cafile = os.environ.get("SSL_CERT_FILE")
    if cafile:
        return ("SSL_CERT_FILE", cafile, None)
    capath = os.environ.get("SSL_CERT_DIR")
    if capath:
        return ("SSL_CERT_DIR", None, capath)
    return None


def _trusting(
    options: TLSOptions, *, trust_env: bool, default_cafile: str | None
) -> ssl.SSLContext:
    if options.ca_cert_path is not None:
        path = options.ca_cert_path
        _readable("ca_cert_path", path, directory_ok=True)
        try:
            if os.path.isdir(path):
                return ssl.create_default_context(capath=path)
            context = ssl.create_default_context(cafile=path)
        except (ssl.SSLError, OSError, ValueError):
            raise TLSConfigError(f"ca_cert_path: {path!r} holds no PEM CA certificate") from None
        return context
    found = environment_ca() if trust_env else None
    if found is not None:
        variable, cafile, capath = found
        try:
            _readable(variable, cafile or capath or "", directory_ok=capath is not None)
            return ssl.create_default_context(cafile=cafile, capath=capath)
        except (ssl.SSLError, OSError, ValueError) as exc:
            if isinstance(exc, TLSConfigError):
                raise
            raise TLSConfigError(f"{variable} (trust_env) holds no PEM CA certificate") from None
    if default_cafile is not None:
        return ssl.create_default_context(cafile=default_cafile)
    if trust_env:
        return ssl.create_default_context()
    return _system_store_ignoring_environment()


def _system_store_ignoring_environment() -> ssl.SSLContext:
    """The system's CAs from OpenSSL's built-in locations, not from SSL_CERT_FILE/DIR.

    `ssl.create_default_context()` asks OpenSSL for its default paths, which OpenSSL
    itself takes from those variables when set; without trust_env they must not count.
    """
    paths = ssl.get_default_verify_paths()
    cafile = paths.openssl_cafile if os.path.isfile(paths.openssl_cafile) else None
    capath = paths.openssl_capath if os.path.isdir(paths.openssl_capath) else None
    if cafile is None and capath is None:
        return ssl.create_default_context()  # nowhere else to look
    return ssl.create_default_context(cafile=cafile, capath=capath)


def ssl_context_for(
    options: TLSOptions,
    *,
    trust_env: bool,
    default_cafile: str | None = None,
    alpn: Sequence[str] | None = None,
) -> ssl.SSLContext:
    """A client SSL context honouring `options`; raises TLSConfigError naming the option.

    `trust_env` is the effective value (the options' own, or the transport's default).
    """
    context = _trusting(options, trust_env=trust_env, default_cafile=default_cafile)
    context.check_hostname = options.check_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    if options.client_cert_path is not None:
        cert, key = options.client_cert_path, options.client_key_path
        _readable("client_cert_path", cert)
        if key is not None:
            _readable("client_key_path", key)
        try:
            context.load_cert_chain(cert, key, password=_no_password)
        except TLSConfigError:
            raise
        except (ssl.SSLError, OSError, ValueError):
            which = "client_cert_path and client_key_path" if key else "client_cert_path"
            raise TLSConfigError(
                f"{which}: not a PEM certificate with its matching private key"
            ) from None
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context
