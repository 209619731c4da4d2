"""A fixtures folder exactly as the seed system dumps it serves, end to end.

`fixtures/examples/seed-dump/` is written in the dump's spellings: `config` as JSON
text, routes as `/v1/...`, `tpm_model`/`tpm_user`, empty slugs, and the seed's
`DirectAPICluster`.  The test copies it, points its URLs (inside the config text) at a
local fake backend, and talks to the gateway with the official `openai` client.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from quart import Response

from tests.support.fake_openai import FakeOpenAI
from tests.support.gateway_server import ALICE, running_gateway, write_tokens
from tests.support.servers import serve_app
from transports import H11Transport
from transports.httpx_transport import HttpxTransport

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parent.parent / "fixtures" / "examples" / "seed-dump"
SECRET = "sk-seed-dump-SECRET-0a1b2c3d"
MODELS = ["gpt-oss-120b-131072", "meta-llama/Llama-4-Maverick-17B-128E-Instruct"]


def _pointed_at(entries: list[dict[str, Any]], key: str, url: str) -> list[dict[str, Any]]:
    """The entries with `key` in their config text replaced, config kept as text."""
    for entry in entries:
        config = json.loads(entry["fields"]["config"])
        config[key] = url
        entry["fields"]["config"] = json.dumps(config)
    return entries


@pytest.fixture(scope="module")
def backend() -> Iterator[tuple[FakeOpenAI, str]]:
    keys = {"METIS_GPT_OSS_API_KEY": SECRET, "METIS_MAVERICK_API_KEY": SECRET}
    os.environ.update(keys)
    fake = FakeOpenAI(models=MODELS)
    _with_status_page(fake)
    try:
        with serve_app(fake.app) as url:
            try:
                yield fake, url
            finally:
                fake.release()
    finally:
        for name in keys:
            os.environ.pop(name, None)


def _with_status_page(fake: FakeOpenAI) -> None:
    @fake.app.get("/status")
    async def status() -> Response:
        running = [{"Models": m, "Framework": "api", "Cluster": "metis"} for m in MODELS]
        return Response(
            json.dumps({"running": running, "cluster_status": {"cluster": "metis"}}),
            content_type="application/json",
        )


@pytest.fixture(scope="module", params=["httpx", "h11"])
def gateway_url(
    request: pytest.FixtureRequest,
    backend: tuple[FakeOpenAI, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    _, url = backend
    folder = tmp_path_factory.mktemp("seed-dump")
    fixtures = folder / "fixtures"
    fixtures.mkdir()
    clusters = json.loads((EXAMPLE / "clusters.json").read_text())
    endpoints = json.loads((EXAMPLE / "endpoints.json").read_text())
    assert all(isinstance(e["fields"]["config"], str) for e in clusters + endpoints)
    (fixtures / "clusters.json").write_text(
        json.dumps(_pointed_at(clusters, "status_url", f"{url}/status"))
    )
    (fixtures / "endpoints.json").write_text(
        json.dumps(_pointed_at(endpoints, "api_url", f"{url}/v1/chat/completions"))
    )
    transport = HttpxTransport() if request.param == "httpx" else H11Transport()
    with running_gateway(fixtures, write_tokens(folder), transport=transport) as gateway:
        yield gateway


@pytest.mark.parametrize("model", MODELS)
def test_a_seed_dump_serves_a_chat_completion(
    gateway_url: str, backend: tuple[FakeOpenAI, str], model: str
) -> None:
    fake, _ = backend
    with openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=ALICE, max_retries=0) as client:
        completion = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Hello Metis"}]
        )
    assert completion.choices[0].message.content == "fake reply to: Hello Metis"
    sent = fake.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.header("authorization") == f"Bearer {SECRET}"


def test_the_filled_in_slugs_route_the_alcf_style_path(gateway_url: str) -> None:
    listing = httpx.get(
        f"{gateway_url}/resource_server/list-endpoints",
        headers={"Authorization": f"Bearer {ALICE}"},
    )
    assert listing.status_code == 200
    assert "metis-api-meta-llamallama-4-maverick-17b-128e-instruct" in listing.text
    assert "metis-api-gpt-oss-120b-131072" in listing.text
    answer = httpx.post(
        f"{gateway_url}/resource_server/metis/api/v1/completions",
        headers={"Authorization": f"Bearer {ALICE}"},
        json={"model": "gpt-oss-120b-131072", "prompt": "Once"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["text"] == "fake reply to: Once"


def test_the_seed_direct_api_cluster_reports_its_status_page(gateway_url: str) -> None:
    jobs = httpx.get(
        f"{gateway_url}/resource_server/metis/jobs", headers={"Authorization": f"Bearer {ALICE}"}
    )
    assert jobs.status_code == 200, jobs.text
    assert sorted(j["Models"] for j in jobs.json()["running"]) == sorted(MODELS)
