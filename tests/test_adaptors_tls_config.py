"""The seed's Direct API TLS options are checked when the fixtures are read: every
mistake stops start-up naming file, entry and field, and nothing is silently ignored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trustme

from adaptors.loading import build_cluster, build_endpoint
from core import ClusterRecord, ConfigurationError, EndpointRecord
from transports import TLSOptions

ENDPOINTS = "fixtures/endpoints.json"
CLUSTERS = "fixtures/clusters.json"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("tls-files")
    ca, other = trustme.CA(), trustme.CA()
    leaf, other_leaf = ca.issue_cert("client.example"), other.issue_cert("client.example")
    written = {
        "ca": ca.cert_pem.bytes(),
        "cert": leaf.cert_chain_pems[0].bytes(),
        "key": leaf.private_key_pem.bytes(),
        "combined": leaf.private_key_pem.bytes() + leaf.cert_chain_pems[0].bytes(),
        "other-key": other_leaf.private_key_pem.bytes(),
        "garbage": b"this is not PEM\n",
    }
    paths = {}
    for name, data in written.items():
        path = folder / f"{name}.pem"
        path.write_bytes(data)
        paths[name] = str(path)
    paths["dir"] = str(folder)
    paths["missing"] = str(folder / "missing.pem")
    return paths


def _endpoint(config: dict[str, Any]) -> EndpointRecord:
    return EndpointRecord(
        id="7",
        endpoint_slug="c-api-m",
        cluster="c",
        framework="api",
        model="m",
        endpoint_adapter="resource_server_async.endpoints.direct_api.DirectAPIEndpoint",
        config={"api_url": "https://backend.example/v1", "api_key_env_name": "K", **config},
    )


def _cluster(config: dict[str, Any]) -> ClusterRecord:
    return ClusterRecord(
        id="3",
        cluster_name="c",
        cluster_adapter="resource_server_async.clusters.direct_api.DirectAPICluster",
        frameworks=["api"],
        openai_endpoints=["chat/completions"],
        config={"status_url": "https://status.example/jobs", **config},
    )


# name, config (file names resolved through `files`), field, words in the reason
REFUSED: list[tuple[str, dict[str, Any], str, str]] = [
    ("CA file missing", {"ca_cert_path": "missing"}, "config.ca_cert_path", "does not exist"),
    ("CA file not PEM", {"ca_cert_path": "garbage"}, "config", "ca_cert_path"),
    ("cert missing", {"client_cert_path": "missing"}, "config.client_cert_path", "does not exist"),
    ("cert a directory", {"client_cert_path": "dir"}, "config.client_cert_path", "directory"),
    (
        "key without cert",
        {"client_key_path": "key"},
        "config.client_key_path",
        "needs client_cert_path",
    ),
    (
        "key missing",
        {"client_cert_path": "cert", "client_key_path": "missing"},
        "config.client_key_path",
        "does not exist",
    ),
    (
        "key of another certificate",
        {"client_cert_path": "cert", "client_key_path": "other-key"},
        "config",
        "matching private key",
    ),
    ("cert without its key", {"client_cert_path": "cert"}, "config", "client_cert_path"),
    ("cert not PEM", {"client_cert_path": "garbage", "client_key_path": "key"}, "config", "PEM"),
    ("misspelt option", {"ca_cert": "ca"}, "config.ca_cert", "Extra inputs"),
    ("check_hostname not a boolean", {"check_hostname": "sometimes"}, "config.check_hostname", ""),
    ("trust_env not a boolean", {"trust_env": [1]}, "config.trust_env", ""),
]


def _resolved(config: dict[str, Any], files: dict[str, str]) -> dict[str, Any]:
    return {k: files.get(v, v) if k.endswith("_path") else v for k, v in config.items()}


@pytest.mark.parametrize("kind", ["endpoint", "cluster"])
@pytest.mark.parametrize(
    ("config", "field", "words"), [pytest.param(*case[1:], id=case[0]) for case in REFUSED]
)
def test_a_tls_mistake_stops_start_up_naming_file_entry_and_field(
    files: dict[str, str], kind: str, config: dict[str, Any], field: str, words: str
) -> None:
    config = _resolved(config, files)
    with pytest.raises(ConfigurationError) as caught:
        if kind == "endpoint":
            build_endpoint(_endpoint(config), file=ENDPOINTS)
        else:
            build_cluster(_cluster(config), file=CLUSTERS)
    error = caught.value
    file, entry = (ENDPOINTS, "7") if kind == "endpoint" else (CLUSTERS, "3")
    assert (error.file, error.entry, error.field) == (file, entry, field)
    assert words in error.reason


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        pytest.param({}, None, id="no options: the transport's defaults"),
        pytest.param(
            {"ca_cert_path": "ca", "client_cert_path": "cert", "client_key_path": "key"},
            TLSOptions(ca_cert_path="ca", client_cert_path="cert", client_key_path="key"),
            id="mutual TLS",
        ),
        pytest.param(
            {"client_cert_path": "combined"},
            TLSOptions(client_cert_path="combined"),
            id="key inside the certificate file",
        ),
        pytest.param({"ca_cert_path": "dir"}, TLSOptions(ca_cert_path="dir"), id="CA directory"),
        pytest.param(
            {"check_hostname": False}, TLSOptions(check_hostname=False), id="check_hostname"
        ),
        pytest.param({"trust_env": False}, TLSOptions(trust_env=False), id="trust_env"),
    ],
)
def test_accepted_tls_options_travel_on_every_backend_request(
    files: dict[str, str], config: dict[str, Any], expected: TLSOptions | None
) -> None:
    endpoint = build_endpoint(_endpoint(_resolved(config, files)), file=ENDPOINTS)
    cluster = build_cluster(_cluster(_resolved(config, files)), file=CLUSTERS)
    if expected is not None:
        expected = TLSOptions(
            **{
                name: files.get(value, value) if name.endswith("_path") and value else value
                for name, value in (
                    ("ca_cert_path", expected.ca_cert_path),
                    ("client_cert_path", expected.client_cert_path),
                    ("client_key_path", expected.client_key_path),
                    ("check_hostname", expected.check_hostname),
                    ("trust_env", expected.trust_env),
                )
            }
        )
    assert endpoint.config.tls_options == expected  # type: ignore[attr-defined]
    assert cluster.config.tls_options == expected  # type: ignore[attr-defined]
    request = endpoint._request({"model": "m"}, "chat/completions", "application/json")  # type: ignore[attr-defined]
    assert request.tls == expected


@pytest.mark.parametrize(
    "config",
    [
        {"ca_cert_path": "ca"},
        {"client_cert_path": "combined"},
        {"check_hostname": False},
    ],
)
def test_tls_options_on_a_plain_http_url_are_refused_not_ignored(
    files: dict[str, str], config: dict[str, Any]
) -> None:
    config = _resolved(config, files)
    with pytest.raises(ConfigurationError) as caught:
        build_endpoint(
            _endpoint({**config, "api_url": "http://backend.example/v1"}), file=ENDPOINTS
        )
    assert (caught.value.field, caught.value.entry) == ("config", "7")
    assert "http://" in caught.value.reason
    with pytest.raises(ConfigurationError):
        build_cluster(_cluster({**config, "status_url": "http://status.example/"}), file=CLUSTERS)
    # trust_env alone means something for http (the proxy variables): accepted.
    build_endpoint(
        _endpoint({"trust_env": True, "api_url": "http://backend.example/v1"}), file=ENDPOINTS
    )


def test_the_seed_timeout_and_tls_options_all_load_together(files: dict[str, str]) -> None:
    config = {
        "api_request_timeout": 30,
        "ca_cert_path": files["ca"],
        "client_cert_path": files["cert"],
        "client_key_path": files["key"],
        "check_hostname": True,
        "trust_env": False,
    }
    endpoint = build_endpoint(_endpoint(config), file=ENDPOINTS)
    assert endpoint.config.api_request_timeout == 30  # type: ignore[attr-defined]
    cluster = build_cluster(_cluster(config), file=CLUSTERS)
    assert cluster.config.api_request_timeout == 30  # type: ignore[attr-defined]


def test_a_key_never_appears_in_a_message(files: dict[str, str], tmp_path: Path) -> None:
    # A PEM body that fails to load must not be quoted back (it may be a private key).
    bad = tmp_path / "bad.pem"
    bad.write_bytes(b"-----BEGIN PRIVATE KEY-----\nSECRETKEYMATERIAL\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigurationError) as caught:
        build_endpoint(
            _endpoint({"client_cert_path": files["cert"], "client_key_path": str(bad)}),
            file=ENDPOINTS,
        )
    assert "SECRETKEYMATERIAL" not in str(caught.value)
