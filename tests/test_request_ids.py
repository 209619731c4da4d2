"""Request ids and the access log, through a real gateway server in front of a real
fake-OpenAI backend: a client's valid `X-Request-ID` is kept, forwarded to the backend
and returned (errors and streams too); an invalid or missing one is replaced by one the
gateway makes; one JSON access-log line per request, without credentials or bodies."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from core import LogEntry, Usage
from frontends.web.access import access_line, valid_request_id
from tests.support.fake_openai import FakeOpenAI, running_fake_openai
from tests.support.gateway_server import ALICE, running_gateway, write_fixtures, write_tokens

pytestmark = pytest.mark.e2e

KEY_ENV = "IGW_TEST_REQUEST_ID_KEY"
GENERATED = re.compile(r"[0-9a-f]{32}")
CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "secret prompt text"}]}


@pytest.fixture(scope="module")
def backend() -> Iterator[tuple[FakeOpenAI, str]]:
    with running_fake_openai(models=["gpt-test"]) as running:
        yield running


@pytest.fixture(scope="module")
def gateway_url(
    backend: tuple[FakeOpenAI, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    _, backend_url = backend
    folder: Path = tmp_path_factory.mktemp("ids")
    cluster = {
        "cluster_name": "fake",
        "frameworks": ["api"],
        "openai_endpoints": ["chat/completions"],
        "cluster_adapter": "adaptors.clusters.openai_compatible.OpenAICompatibleCluster",
        "config": {"api_url": f"{backend_url}/v1", "api_key_env_name": KEY_ENV},
    }
    endpoint = {
        "endpoint_slug": "fake-api-gpt-test",
        "cluster": "fake",
        "framework": "api",
        "model": "gpt-test",
        "endpoint_adapter": "resource_server_async.endpoints.direct_api.DirectAPIEndpoint",
        "config": {"api_url": f"{backend_url}/v1/chat/completions", "api_key_env_name": KEY_ENV},
    }
    fixtures = write_fixtures(folder / "fixtures", [cluster], [endpoint])
    with running_gateway(fixtures, write_tokens(folder)) as url:
        yield url


class LinesArrived(logging.Handler):
    """Collects access lines and lets the test wait for the n-th: the line is written
    when the server's handler returns, which may be just after the client has read the
    last byte of the answer, on the server's thread.  `keep` picks this test's lines: a
    line of an earlier test's request may arrive just after the handler is added."""

    def __init__(self, keep: Callable[[str], bool] = lambda line: True) -> None:
        super().__init__(logging.INFO)
        self._lines: list[str] = []
        self._keep = keep
        self._changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage()
        if not self._keep(line):
            return
        with self._changed:
            self._lines.append(line)
            self._changed.notify_all()

    def wait_for(self, count: int) -> list[str]:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._lines) >= count, timeout=30):
                raise AssertionError(f"{count} access lines expected, {self._lines!r} arrived")
            return list(self._lines)


def chat(url: str, request_id: bytes | str | None = None, **extra: object) -> httpx.Response:
    headers: dict[str, str | bytes] = {"Authorization": f"Bearer {ALICE}"}
    if request_id is not None:
        headers["X-Request-ID"] = request_id
    return httpx.post(f"{url}/v1/chat/completions", json={**CHAT, **extra}, headers=headers)


def test_a_valid_request_id_is_kept_forwarded_and_returned(
    gateway_url: str, backend: tuple[FakeOpenAI, str]
) -> None:
    fake, _ = backend
    answer = chat(gateway_url, "trace-7f3a/01:ab")
    assert answer.status_code == 200
    assert answer.headers["x-request-id"] == "trace-7f3a/01:ab"
    assert fake.requests[-1].header("x-request-id") == "trace-7f3a/01:ab"
    # The backend's own id is relayed too, under its own name.
    assert answer.headers["x-backend-request-id"].startswith("req_fake_")


def test_streams_and_errors_return_the_request_id_too(
    gateway_url: str, backend: tuple[FakeOpenAI, str]
) -> None:
    fake, _ = backend
    with httpx.stream(
        "POST",
        f"{gateway_url}/v1/chat/completions",
        json={**CHAT, "stream": True},
        headers={"Authorization": f"Bearer {ALICE}", "X-Request-ID": "stream-1"},
    ) as streamed:
        streamed.read()
    assert streamed.headers["x-request-id"] == "stream-1"
    assert fake.requests[-1].header("x-request-id") == "stream-1"
    refused = httpx.post(
        f"{gateway_url}/v1/chat/completions",
        json=CHAT,
        headers={"Authorization": "Bearer igw-unknown", "X-Request-ID": "refused-1"},
    )
    assert (refused.status_code, refused.headers["x-request-id"]) == (401, "refused-1")
    missing = httpx.get(f"{gateway_url}/no/such/route", headers={"X-Request-ID": "nf-1"})
    assert (missing.status_code, missing.headers["x-request-id"]) == (404, "nf-1")


@pytest.mark.parametrize(
    "given",
    [None, "", "x" * 129, b"caf\xc3\xa9", "tab\tinside"],
    ids=["missing", "empty", "too-long", "non-ascii", "control"],
)
def test_a_missing_or_invalid_request_id_is_replaced_by_a_generated_one(
    gateway_url: str, backend: tuple[FakeOpenAI, str], given: bytes | str | None
) -> None:
    fake, _ = backend
    answer = chat(gateway_url, given)
    assert answer.status_code == 200
    made = answer.headers["x-request-id"]
    assert GENERATED.fullmatch(made)
    assert fake.requests[-1].header("x-request-id") == made


def test_request_ids_made_for_two_requests_differ(gateway_url: str) -> None:
    assert chat(gateway_url).headers["x-request-id"] != chat(gateway_url).headers["x-request-id"]


def test_the_rule_for_a_clients_request_id() -> None:
    assert valid_request_id("abc-123_~!") == "abc-123_~!"
    assert valid_request_id(b"x" * 128) == "x" * 128
    for refused in ("", "x" * 129, "é", "a\x00b", "a\nb", " a", "a "):
        assert valid_request_id(refused) is None


def test_one_json_access_line_per_request_without_credentials_or_bodies(
    gateway_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="inference_gateway.access")
    arrived = LinesArrived(
        keep=lambda line: '"access-' in line or "/resource_server/health" in line
    )
    logging.getLogger("inference_gateway.access").addHandler(arrived)
    try:
        answer = chat(gateway_url, "access-1")
        arrived.wait_for(1)
        chat(gateway_url, "access-2")
        arrived.wait_for(2)
        httpx.get(f"{gateway_url}/resource_server/health?token={ALICE}")
        lines = arrived.wait_for(3)
    finally:
        logging.getLogger("inference_gateway.access").removeHandler(arrived)
    assert len(lines) == 3
    first = json.loads(lines[0])
    usage = answer.json()["usage"]
    assert {k: first[k] for k in ("request_id", "method", "path", "status", "user", "model")} == {
        "request_id": "access-1",
        "method": "POST",
        "path": "/v1/chat/completions",
        "status": 200,
        "user": "alice@example.org",
        "model": "gpt-test",
    }
    assert first["total_tokens"] == usage["total_tokens"]
    assert first["duration_ms"] >= 0 and first["time"].endswith("+00:00")
    assert json.loads(lines[1])["request_id"] == "access-2"
    health = json.loads(lines[2])
    assert (health["path"], health["status"], health["user"]) == (
        "/resource_server/health",
        200,
        None,
    )
    text = "\n".join(lines)
    for secret in (ALICE, "secret prompt text", "fake reply"):
        assert secret not in text


def test_an_access_line_is_json_whatever_the_path_and_names_hold() -> None:
    entry = LogEntry(
        request_id="log-1",
        route="chat/completions",
        status=200,
        username='al"ice\\',
        model="mod\u00e8le/\n1",
        usage=Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7),
        estimated=True,
    )
    line = access_line(1767322445.6789, 'id"1', "POST", "/v1/\u00e9\x00\t", 201, 0.01234, entry)
    assert "\n" not in line
    assert json.loads(line) == {
        "time": "2026-01-02T02:54:05.678+00:00",
        "request_id": 'id"1',
        "method": "POST",
        "path": "/v1/\u00e9\x00\t",
        "status": 201,
        "duration_ms": 12.3,
        "user": 'al"ice\\',
        "model": "mod\u00e8le/\n1",
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "total_tokens": 7,
        "tokens_estimated": True,
        "error_code": None,
    }
    bare = json.loads(access_line(0.0, "x", None, None, None, 0.0, None))
    assert bare["time"] == "1970-01-01T00:00:00.000+00:00"
    assert {k for k, v in bare.items() if v is not None} == {"time", "request_id", "duration_ms"}
