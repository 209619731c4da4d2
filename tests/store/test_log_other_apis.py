"""The request log records the Responses and Messages APIs' own usage, on SQLite and
PostgreSQL: `input_tokens`/`output_tokens`/`total_tokens` of a response (in its final
`response.completed` event when streamed), and a message's `input_tokens` and
`output_tokens` (in `message_start` and `message_delta` when streamed), as reported,
never estimated; the route and endpoint as for any request."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from frontends.assembly import build_gateway
from frontends.identity import StaticKeys
from frontends.request_log import RequestLog
from frontends.web import create_app
from tests.store.test_request_log_wiring import records
from tests.support.fake_openai import running_fake_openai
from tests.support.gateway_server import ALICE, write_fixtures, write_tokens
from tests.support.servers import serve_app
from transports.httpx_transport import HttpxTransport

pytestmark = pytest.mark.e2e

HELLO = [{"role": "user", "content": "Hello backend"}]
# The fake backend counts words: "Hello backend" is 2 input words as a Responses input
# and 5 as the JSON of the messages list; "fake reply to: Hello backend" is 5 output.
EXPECTED = {
    "responses": (2, 5, 7),
    "messages": (5, 5, 10),
}
BODIES = {
    "responses": {"model": "gpt-test", "input": "Hello backend"},
    "messages": {"model": "gpt-test", "max_tokens": 64, "messages": HELLO},
}


def test_usage_of_both_apis_is_recorded_as_reported(tmp_path: Path, database_url: str) -> None:
    with running_fake_openai(models=["gpt-test"]) as (fake, backend_url):
        cluster = {
            "cluster_name": "fake",
            "frameworks": ["api"],
            "openai_endpoints": ["responses", "messages"],
            "cluster_adapter": "adaptors.clusters.openai_compatible.OpenAICompatibleCluster",
            "config": {"api_url": f"{backend_url}/v1"},
        }
        endpoint = {
            "endpoint_slug": "fake-api-gpt-test",
            "cluster": "fake",
            "framework": "api",
            "model": "gpt-test",
            "endpoint_adapter": "adaptors.endpoints.direct_api.DirectAPIEndpoint",
            "config": {"api_url": f"{backend_url}/v1", "api_key_env_name": "UNSET_KEY"},
        }
        fixtures = write_fixtures(tmp_path / "fixtures", [cluster], [endpoint])
        gateway = build_gateway(
            fixtures,
            identity=StaticKeys.from_file(write_tokens(tmp_path)),
            transport=HttpxTransport(),
            stream_usage=True,  # as `serve` runs: it must leave these two APIs' bodies alone
        )
        log = RequestLog.open(database_url)
        with serve_app(create_app(gateway, request_log=log)) as url:
            for api, body in BODIES.items():
                for stream in (False, True):
                    answer = httpx.post(
                        f"{url}/v1/{api}",
                        content=json.dumps({**body, "stream": stream}).encode(),
                        headers={"Authorization": f"Bearer {ALICE}", "X-Request-ID": api},
                        timeout=30,
                    )
                    assert answer.status_code == 200, answer.text
        # Usage injection is for chat and completions: these bodies go as they came.
        assert all("stream_options" not in r.json() for r in fake.requests if r.method == "POST")
    logged = sorted(records(database_url), key=lambda r: (r.route, r.streamed))
    assert [(r.route, r.streamed) for r in logged] == [
        ("messages", False),
        ("messages", True),
        ("responses", False),
        ("responses", True),
    ]
    for record in logged:
        counts = (record.prompt_tokens, record.completion_tokens, record.total_tokens)
        assert counts == EXPECTED[record.route], record
        assert record.tokens_estimated is False
        assert (record.status, record.endpoint_slug, record.model) == (
            200,
            "fake-api-gpt-test",
            "gpt-test",
        )
        assert record.username == "alice@example.org"
