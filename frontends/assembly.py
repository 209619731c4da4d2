"""Assembly: from fixtures, an identity provider and a transport to a `Gateway`.

The one place that reads the fixture files, parses them (`load_catalog`), imports and
builds every adaptor, reads the secrets the fixtures name, binds each adaptor to the
shared transport and asks the transport whether it can honour the adaptor's TLS options
(so options it cannot honour stop start-up, naming file, entry and field).  The driver
(`frontends.gateway`) gets only the finished pieces.

Secrets: a fixture entry names the environment variable holding its key
(`config.api_key_env_name`).  The environment is read here, once, from the mapping the
caller hands in (`environ`, the process environment by default), and each adaptor is
handed only the value its own entry names; adaptors never read the environment
themselves when the gateway built them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adaptors._tls import check_transport_tls, tls_options_of
from adaptors.clusters.cluster import BaseCluster
from adaptors.endpoints.endpoint import BaseEndpoint
from adaptors.loading import build_cluster, build_endpoint
from core import Catalog, ConfigurationError, QuotaPolicy, RequestLimits, load_catalog
from frontends.endpoint_health import HealthPolicy
from frontends.gateway import Gateway, StreamObserver
from frontends.identity import IdentityProvider
from frontends.log_sink import LogSink
from frontends.quota import QuotaCounters
from transports import Timeout, Transport
from transports.cassette import Fixtures

__all__ = ["assemble", "build_gateway", "catalog_of", "read_fixtures"]

SECRET_NAME_FIELD = "api_key_env_name"


def read_fixtures(folder: Path) -> Fixtures:
    """The texts of `clusters.json` and `endpoints.json` in `folder`."""
    texts = {}
    for name in ("clusters.json", "endpoints.json"):
        path = folder / name
        try:
            texts[name] = path.read_text()
        except OSError as exc:
            raise ConfigurationError(f"cannot read: {exc.strerror}", file=str(path)) from None
    return Fixtures(clusters=texts["clusters.json"], endpoints=texts["endpoints.json"])


def _files(folder: Path | str | None) -> tuple[str, str]:
    """How errors name the two files: their path, or their bare name when read from memory."""
    base = Path(folder) if folder is not None else Path()
    return str(base / "clusters.json"), str(base / "endpoints.json")


def catalog_of(fixtures: Fixtures, *, folder: Path | str | None = None) -> Catalog:
    """The catalog the two texts describe; errors name the files as if in `folder`."""
    clusters_file, endpoints_file = _files(folder)
    return load_catalog(
        clusters_text=fixtures.clusters,
        endpoints_text=fixtures.endpoints,
        clusters_file=clusters_file,
        endpoints_file=endpoints_file,
    )


def _secrets(config: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """The one secret an entry's config names, if the environment holds it."""
    name = config.get(SECRET_NAME_FIELD)
    if isinstance(name, str) and environ.get(name):
        return {name: environ[name]}
    return {}


def assemble(
    catalog: Catalog,
    *,
    identity: IdentityProvider,
    transport: Transport,
    environ: Mapping[str, str] | None = None,
    log_sink: LogSink | None = None,
    folder: Path | str | None = None,
    quota: QuotaCounters | None = None,
    quota_policy: QuotaPolicy | None = None,
    stream_usage: bool = False,
    stream_observer: StreamObserver | None = None,
    capture_limit: int | None = None,
    request_limits: RequestLimits | None = None,
    health: HealthPolicy | None = None,
    timeouts: Timeout | None = None,
) -> Gateway:
    """Build and bind every adaptor of `catalog`, then the `Gateway` over them.

    `environ` is where the secrets fixtures name are looked up (default: the process
    environment); `folder` only names the files in error messages; `timeouts` are the
    default time limits of backend calls handed to every adaptor (None: the built-in).
    """
    environ = os.environ if environ is None else environ
    clusters_file, endpoints_file = _files(folder)
    clusters: dict[str, BaseCluster] = {}
    for record in catalog.clusters:
        cluster = build_cluster(record, file=clusters_file)
        cluster.bind(
            transport=transport, secrets=_secrets(record.config, environ), timeouts=timeouts
        )
        check_transport_tls(transport, tls_options_of(cluster), file=clusters_file, entry=record.id)
        clusters[record.cluster_name] = cluster
    endpoints: dict[str, BaseEndpoint] = {}
    for entry in catalog.endpoints:
        endpoint = build_endpoint(entry, file=endpoints_file)
        endpoint.bind(
            transport=transport,
            cluster=clusters[entry.cluster],
            secrets=_secrets(entry.config, environ),
            timeouts=timeouts,
        )
        check_transport_tls(
            transport, tls_options_of(endpoint), file=endpoints_file, entry=entry.id
        )
        endpoints[entry.endpoint_slug] = endpoint
    return Gateway(
        catalog=catalog,
        endpoints=endpoints,
        clusters=clusters,
        identity=identity,
        transport=transport,
        log_sink=log_sink,
        quota=quota,
        quota_policy=quota_policy,
        stream_usage=stream_usage,
        stream_observer=stream_observer,
        capture_limit=capture_limit,
        request_limits=request_limits,
        health=health,
    )


def build_gateway(
    fixtures_dir: Path | str,
    *,
    identity: IdentityProvider,
    transport: Transport,
    environ: Mapping[str, str] | None = None,
    log_sink: LogSink | None = None,
    quota: QuotaCounters | None = None,
    quota_policy: QuotaPolicy | None = None,
    stream_usage: bool = False,
    stream_observer: StreamObserver | None = None,
    capture_limit: int | None = None,
    request_limits: RequestLimits | None = None,
    health: HealthPolicy | None = None,
    timeouts: Timeout | None = None,
) -> Gateway:
    """A `Gateway` over the fixtures in `fixtures_dir`: read, checked, built and bound."""
    folder = Path(fixtures_dir)
    catalog = catalog_of(read_fixtures(folder), folder=folder)
    return assemble(
        catalog,
        identity=identity,
        transport=transport,
        environ=environ,
        log_sink=log_sink,
        folder=folder,
        quota=quota,
        quota_policy=quota_policy,
        stream_usage=stream_usage,
        stream_observer=stream_observer,
        capture_limit=capture_limit,
        request_limits=request_limits,
        health=health,
        timeouts=timeouts,
    )
