"""Backends behind private CAs and mutual TLS, reached as the seed system's Direct API
options say, end to end, over both transports.

The backends are real HTTPS servers (Hypercorn, certificates from a `trustme` CA) that
require a client certificate signed by that CA.  The gateway is a real server; each
endpoint of its fixtures carries a different set of TLS options, and so does the
cluster, a `DirectAPICluster` subclass written as the seed writes its cluster adaptors.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from quart import Response

from adaptors.loading import build_endpoint
from core import ConfigurationError, EndpointRecord
from frontends.assembly import build_gateway
from frontends.identity import StaticKeys
from tests.support.connect_proxy import running_connect_proxy
from tests.support.fake_openai import FakeOpenAI, running_fake_openai
from tests.support.gateway_server import ALICE, running_gateway, write_fixtures, write_tokens
from tests.support.servers import serve_app
from transports import BackendRequest, ConnectError, H11Transport, TLSOptions, Transport
from transports.httpx_transport import HttpxTransport

pytestmark = pytest.mark.e2e

SECRET = "sk-mtls-backend-SECRET-51c0ffee"
KEY_ENV = "IGW_TEST_MTLS_KEY"
# The seed's Metis status page: model id -> what runs there.
STATUS = {
    "m-1": {"model": "mtls-good", "status": "Live", "description": "served", "model_version": 2},
    "m-2": {"model": "mtls-combined", "status": "Live", "description": "served"},
    "m-3": {"model": "mtls-strict", "status": "Stopped", "description": "off"},
    "m-4": {"model": "mtls-lenient", "status": "Starting", "description": "soon"},
    "m-5": {"model": "not-in-the-fixtures", "status": "Live", "description": "hidden"},
}
TRANSPORTS: dict[str, Callable[[], Transport]] = {
    "httpx": HttpxTransport,
    "h11": H11Transport,
}


class PKI:
    """A CA the backends trust and present, another nobody trusts, and the files."""

    def __init__(self, folder: Path) -> None:
        self.ca = trustme.CA()
        self.other_ca = trustme.CA()
        self.folder = folder
        server = self.ca.issue_cert("127.0.0.1")
        misnamed = self.ca.issue_cert("backend.other.example")
        client = self.ca.issue_cert("gateway.client.example")
        stranger = self.other_ca.issue_cert("gateway.client.example")
        self.ca_pem = self._write("ca.pem", self.ca.cert_pem.bytes())
        self.other_ca_pem = self._write("other-ca.pem", self.other_ca.cert_pem.bytes())
        self.server_cert = self._write("server.pem", _chain(server))
        self.server_key = self._write("server.key", server.private_key_pem.bytes())
        self.misnamed_cert = self._write("misnamed.pem", _chain(misnamed))
        self.misnamed_key = self._write("misnamed.key", misnamed.private_key_pem.bytes())
        self.client_cert = self._write("client.pem", _chain(client))
        self.client_key = self._write("client.key", client.private_key_pem.bytes())
        self.client_combined = self._write(
            "client-combined.pem", client.private_key_pem.bytes() + _chain(client)
        )
        self.stranger_cert = self._write("stranger.pem", _chain(stranger))
        self.stranger_key = self._write("stranger.key", stranger.private_key_pem.bytes())

    def _write(self, name: str, data: bytes) -> str:
        path = self.folder / name
        path.write_bytes(data)
        return str(path)

    def serving(self, cert: str, key: str) -> dict[str, Any]:
        """Hypercorn TLS settings that require a client certificate from our CA."""
        return {
            "certfile": cert,
            "keyfile": key,
            "ca_certs": self.ca_pem,
            "verify_mode": ssl.CERT_REQUIRED,
        }


def _chain(cert: trustme.LeafCert) -> bytes:
    return b"".join(blob.bytes() for blob in cert.cert_chain_pems)


def _backend() -> FakeOpenAI:
    """The fake OpenAI server, plus the seed's Metis-format status page at /status (no
    key required: the fake would ask every path for one)."""
    fake = FakeOpenAI(models=[m["model"] for m in STATUS.values()])

    @fake.app.get("/status")
    async def status() -> Response:
        return Response(json.dumps(STATUS), content_type="application/json")

    return fake


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return PKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def backends(pki: PKI) -> Iterator[dict[str, str]]:
    """Two mutual-TLS backends: one whose certificate names 127.0.0.1, one another host."""
    good, misnamed = _backend(), _backend()
    os.environ[KEY_ENV] = SECRET
    try:
        with (
            serve_app(good.app, tls=pki.serving(pki.server_cert, pki.server_key)) as good_url,
            serve_app(
                misnamed.app, tls=pki.serving(pki.misnamed_cert, pki.misnamed_key)
            ) as misnamed_url,
        ):
            yield {"good": good_url, "misnamed": misnamed_url}
            good.release()
            misnamed.release()
    finally:
        os.environ.pop(KEY_ENV, None)


@contextmanager
def environment(**values: str | None) -> Iterator[None]:
    """Set (or, with None, remove) environment variables for the block only."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _endpoint(model: str, url: str, **tls: Any) -> dict[str, Any]:
    return {
        "endpoint_slug": "",  # filled in as the seed does: mtls-api-<model>
        "cluster": "mtls",
        "framework": "api",
        "model": model,
        "endpoint_adapter": "resource_server_async.endpoints.direct_api.DirectAPIEndpoint",
        "config": {
            "api_url": f"{url}/v1/chat/completions",
            "api_key_env_name": KEY_ENV,
            "api_request_timeout": 20,
            **tls,
        },
    }


def _fixtures(folder: Path, pki: PKI, urls: dict[str, str]) -> Path:
    mutual = {
        "ca_cert_path": pki.ca_pem,
        "client_cert_path": pki.client_cert,
        "client_key_path": pki.client_key,
    }
    cluster = {
        "cluster_name": "mtls",
        "frameworks": ["api"],
        "openai_endpoints": ["/v1/chat/completions"],
        "cluster_adapter": "tests.guide_adaptors.status_page_cluster.StatusPageCluster",
        "config": {"status_url": f"{urls['good']}/status", "api_request_timeout": 20, **mutual},
    }
    good, misnamed = urls["good"], urls["misnamed"]
    endpoints = [
        _endpoint("mtls-good", good, **mutual),
        _endpoint(
            "mtls-combined",
            good,
            ca_cert_path=pki.ca_pem,
            client_cert_path=pki.client_combined,
        ),
        _endpoint("mtls-lenient", misnamed, **mutual, check_hostname=False),
        _endpoint("mtls-strict", misnamed, **mutual),
        _endpoint("mtls-no-client-cert", good, ca_cert_path=pki.ca_pem),
        _endpoint("mtls-wrong-ca", good, **{**mutual, "ca_cert_path": pki.other_ca_pem}),
        _endpoint(
            "mtls-stranger",
            good,
            ca_cert_path=pki.ca_pem,
            client_cert_path=pki.stranger_cert,
            client_key_path=pki.stranger_key,
        ),
        # trust_env: the CA comes from SSL_CERT_FILE, as httpx reads it.
        _endpoint(
            "mtls-env-ca",
            good,
            trust_env=True,
            client_cert_path=pki.client_cert,
            client_key_path=pki.client_key,
        ),
        _endpoint(
            "mtls-env-ignored",
            good,
            trust_env=False,
            client_cert_path=pki.client_cert,
            client_key_path=pki.client_key,
        ),
    ]
    return write_fixtures(folder / "fixtures", [cluster], endpoints)


@pytest.fixture(scope="module", params=sorted(TRANSPORTS))
def gateway_url(
    request: pytest.FixtureRequest,
    pki: PKI,
    backends: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    folder = tmp_path_factory.mktemp(f"mtls-{request.param}")
    fixtures = _fixtures(folder, pki, backends)
    # The environment is read when the gateway starts (SSL contexts are built then).
    with ExitStack() as stack:
        with environment(SSL_CERT_FILE=pki.ca_pem, SSL_CERT_DIR=None):
            transport = TRANSPORTS[request.param]()
            url = stack.enter_context(
                running_gateway(fixtures, write_tokens(folder), transport=transport)
            )
        yield url


def _chat(url: str, model: str, *, stream: bool = False) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {ALICE}"},
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream},
        timeout=30,
    )


@pytest.mark.parametrize(
    "model",
    [
        "mtls-good",  # CA + client certificate + key
        "mtls-combined",  # the key inside the certificate file
        "mtls-lenient",  # a certificate for another name, check_hostname false
        "mtls-env-ca",  # trust_env: SSL_CERT_FILE names the CA
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_mutual_tls_reaches_the_backend(gateway_url: str, model: str, stream: bool) -> None:
    response = _chat(gateway_url, model, stream=stream)
    assert response.status_code == 200, response.text
    if stream:
        assert response.text.rstrip().endswith("data: [DONE]")
    else:
        assert response.json()["choices"][0]["message"]["content"] == "fake reply to: hi"


@pytest.mark.parametrize(
    "model",
    [
        "mtls-strict",  # the backend's certificate names another host
        "mtls-no-client-cert",  # the backend requires one
        "mtls-wrong-ca",  # the backend's CA is not the one we trust
        "mtls-stranger",  # our certificate is from a CA the backend does not trust
        "mtls-env-ignored",  # trust_env false: SSL_CERT_FILE is not read
    ],
)
def test_refusals_are_502_and_leak_nothing(
    gateway_url: str, backends: dict[str, str], pki: PKI, model: str
) -> None:
    response = _chat(gateway_url, model)
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    exposed = response.text + repr(response.headers)
    for secret in (SECRET, *backends.values(), "127.0.0.1:", pki.folder.name, ".pem", ".key"):
        assert secret not in exposed
    assert error["type"] == "api_error"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.anyio
@pytest.mark.parametrize("transport_name", sorted(TRANSPORTS))
@pytest.mark.parametrize(
    ("tls", "connects"),
    [
        ({"check_hostname": True}, False),  # a certificate for another name
        ({"check_hostname": False}, True),
        ({"ca_cert_path": "other"}, False),  # a CA that did not sign the backend's
    ],
    ids=["hostname-checked", "hostname-not-checked", "wrong-ca"],
)
async def test_a_refused_handshake_is_a_connect_error_naming_nothing(
    pki: PKI, backends: dict[str, str], transport_name: str, tls: dict[str, Any], connects: bool
) -> None:
    """The adaptor's own answer, before the core words it for the client: a refused
    handshake is "could not connect" (502), with no URL, path or key in it."""
    options = {
        "ca_cert_path": pki.other_ca_pem if tls.get("ca_cert_path") else pki.ca_pem,
        "client_cert_path": pki.client_cert,
        "client_key_path": pki.client_key,
        "check_hostname": tls.get("check_hostname", True),
    }
    url = backends["misnamed"] if "check_hostname" in tls else backends["good"]
    fields = _endpoint("mtls-good", url, **options)
    record = EndpointRecord(id="1", **fields)
    endpoint = build_endpoint(record, file="endpoints.json")
    transport = TRANSPORTS[transport_name]()
    endpoint.bind(transport=transport)
    try:
        answer = await endpoint.submit_task(
            {
                "model_params": {
                    "model": "mtls-good",
                    "messages": [{"role": "user", "content": "hi"}],
                },
                "openai_endpoint": "chat/completions",
            }
        )
    finally:
        await transport.aclose()
    if connects:
        assert answer.error_message is None and answer.result
        return
    assert (answer.error_code, answer.error_message) == (
        502,
        "The gateway could not connect to the backend.",
    )


def test_the_seed_style_cluster_reads_its_status_page_over_mutual_tls(gateway_url: str) -> None:
    response = httpx.get(
        f"{gateway_url}/resource_server/mtls/jobs",
        headers={"Authorization": f"Bearer {ALICE}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    jobs = response.json()
    assert [j["Models"] for j in jobs["running"]] == ["mtls-good", "mtls-combined"]
    assert jobs["running"][0]["Model Status"] == "running"
    assert jobs["running"][0]["Model Version"] == 2
    assert [j["Models"] for j in jobs["stopped"]] == ["mtls-strict"]
    assert [j["Models"] for j in jobs["queued"]] == ["mtls-lenient"]


# -- trust_env: proxies from the environment ----------------------------------------------


@pytest.mark.parametrize("transport_name", sorted(TRANSPORTS))
@pytest.mark.parametrize("exempt", [False, True], ids=["proxied", "no_proxy"])
def test_trust_env_sends_through_the_environments_proxy(
    pki: PKI,
    backends: dict[str, str],
    tmp_path: Path,
    transport_name: str,
    exempt: bool,
) -> None:
    """HTTPS_PROXY is honoured (a CONNECT tunnel, TLS inside it), NO_PROXY exempts."""
    endpoint = _endpoint(
        "mtls-good",
        backends["good"],
        trust_env=True,
        ca_cert_path=pki.ca_pem,
        client_cert_path=pki.client_cert,
        client_key_path=pki.client_key,
    )
    cluster = {
        "cluster_name": "mtls",
        "frameworks": ["api"],
        "openai_endpoints": ["chat/completions"],
        "cluster_adapter": "adaptors.clusters.demo.DemoCluster",
    }
    fixtures = write_fixtures(tmp_path / "fixtures", [cluster], [endpoint])
    with running_connect_proxy() as (proxy_url, seen), ExitStack() as stack:
        # Only while the gateway starts (it reads the environment then); the test's own
        # client must not go through the proxy.
        with environment(
            HTTPS_PROXY=f"{proxy_url.replace('http://', 'http://igw:pa%3Ass@')}",
            https_proxy=None,
            ALL_PROXY=None,
            all_proxy=None,
            NO_PROXY="127.0.0.1" if exempt else None,
            no_proxy=None,
        ):
            transport = TRANSPORTS[transport_name]()
            url = stack.enter_context(
                running_gateway(fixtures, write_tokens(tmp_path), transport=transport)
            )
        response = _chat(url, "mtls-good")
    assert response.status_code == 200, response.text
    port = backends["good"].rsplit(":", 1)[1]
    if exempt:
        assert seen.targets == []
    else:
        assert seen.targets == [f"127.0.0.1:{port}"]
        assert seen.authorizations == ["Basic aWd3OnBhOnNz"]  # igw:pa:ss


# -- refused at start ---------------------------------------------------------------------


@pytest.mark.parametrize("transport_name", sorted(TRANSPORTS))
@pytest.mark.parametrize("proxy", ["socks5://127.0.0.1:1080", "ftp://127.0.0.1:21"])
def test_a_proxy_the_transport_cannot_use_stops_start_up(
    pki: PKI, tmp_path: Path, transport_name: str, proxy: str
) -> None:
    if transport_name == "httpx" and proxy.startswith("socks5") and find_spec("socksio"):
        pytest.skip("socksio is installed: httpx can use a SOCKS proxy")
    endpoint = _endpoint("m", "https://127.0.0.1:9", trust_env=True, ca_cert_path=pki.ca_pem)
    cluster = {
        "cluster_name": "mtls",
        "frameworks": ["api"],
        "openai_endpoints": ["chat/completions"],
        "cluster_adapter": "adaptors.clusters.demo.DemoCluster",
    }
    fixtures = write_fixtures(tmp_path / "fixtures", [cluster], [endpoint])
    # httpx reads the environment when a client is made: its shared one is made first.
    transport = TRANSPORTS[transport_name]() if transport_name == "httpx" else None
    with (
        environment(HTTPS_PROXY=proxy, https_proxy=None, NO_PROXY=None, no_proxy=None),
        pytest.raises(ConfigurationError) as caught,
    ):
        transport = transport or TRANSPORTS[transport_name]()
        build_gateway(fixtures, identity=StaticKeys(), transport=transport)
    assert (caught.value.entry, caught.value.field) == ("1", "config.trust_env")


@pytest.mark.parametrize("transport_name", sorted(TRANSPORTS))
def test_trust_env_sends_a_plain_http_backend_through_the_proxy_in_absolute_form(
    tmp_path: Path, transport_name: str
) -> None:
    endpoint = _endpoint("plain", "BACKEND", trust_env=True)
    cluster = {
        "cluster_name": "mtls",
        "frameworks": ["api"],
        "openai_endpoints": ["chat/completions"],
        "cluster_adapter": "adaptors.clusters.demo.DemoCluster",
    }
    with running_fake_openai(models=["plain"]) as (fake, backend_url):
        endpoint["config"]["api_url"] = f"{backend_url}/v1/chat/completions"
        fixtures = write_fixtures(tmp_path / "fixtures", [cluster], [endpoint])
        with running_connect_proxy() as (proxy_url, seen), ExitStack() as stack:
            with environment(
                HTTP_PROXY=proxy_url,
                http_proxy=None,
                ALL_PROXY=None,
                all_proxy=None,
                NO_PROXY=None,
                no_proxy=None,
            ):
                transport = TRANSPORTS[transport_name]()
                url = stack.enter_context(
                    running_gateway(fixtures, write_tokens(tmp_path), transport=transport)
                )
            response = _chat(url, "plain")
    assert response.status_code == 200, response.text
    assert seen.targets == [f"{backend_url}/v1/chat/completions"]
    assert fake.requests[-1].path == "/v1/chat/completions"


@pytest.mark.anyio
@pytest.mark.parametrize("transport_name", sorted(TRANSPORTS))
async def test_a_tunnel_the_proxy_refuses_is_a_connect_error(pki: PKI, transport_name: str) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now: the proxy answers 502 to CONNECT
    with (
        running_connect_proxy() as (proxy_url, seen),
        environment(HTTPS_PROXY=proxy_url, https_proxy=None, NO_PROXY=None, no_proxy=None),
    ):
        transport = TRANSPORTS[transport_name]()
        request = BackendRequest(
            method="GET",
            url=f"https://127.0.0.1:{port}/v1/models",
            tls=TLSOptions(ca_cert_path=pki.ca_pem, trust_env=True),
        )
        try:
            with pytest.raises(ConnectError) as caught:
                await transport.send(request)
        finally:
            await transport.aclose()
    assert seen.targets == [f"127.0.0.1:{port}"]
    assert str(port) not in str(caught.value)
