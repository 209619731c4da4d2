"""`GET /v1/files` pages as OpenAI's does (`after`, `limit`, `order`, `purpose`; a list
with `first_id`, `last_id`, `has_more`), so the official client's auto-pagination walks
every file once; on SQLite and PostgreSQL."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.batch_gateway import BatchGateway, running_batch_gateway
from tests.support.fake_openai import running_fake_openai
from tests.support.gateway_server import ALICE, BOB

pytestmark = pytest.mark.e2e

FILES = 7
LINE = (
    b'{"custom_id": "r", "method": "POST", "url": "/v1/chat/completions", '
    b'"body": {"model": "gpt-test", "messages": []}}\n'
)


@pytest.fixture
def gateway(database_url: str, tmp_path: Path) -> Iterator[BatchGateway]:
    with (
        running_fake_openai(models=["gpt-test"]) as (_, backend_url),
        running_batch_gateway(tmp_path, backend_url, database_url, with_runner=False) as running,
    ):
        yield running


def client(gateway: BatchGateway, key: str = ALICE) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)


def upload(c: openai.OpenAI, name: str) -> str:
    return c.files.create(file=(name, io.BytesIO(LINE)), purpose="batch").id


def test_the_openai_client_pages_through_every_file_once(gateway: BatchGateway) -> None:
    with client(gateway) as alice, client(gateway, BOB) as bob:
        oldest_first = [upload(alice, f"in-{i}.jsonl") for i in range(FILES)]
        bobs = upload(bob, "bob.jsonl")
        newest_first = oldest_first[::-1]

        assert [f.id for f in alice.files.list(limit=3)] == newest_first
        assert [f.id for f in alice.files.list(limit=2, order="asc")] == oldest_first
        assert [f.id for f in alice.files.list()] == newest_first  # one page of all
        assert [f.id for f in alice.files.list(purpose="batch", limit=4)] == newest_first
        assert [f.id for f in alice.files.list(purpose="batch_output")] == []
        # A page by hand: from the file after the fourth newest on.
        page = alice.files.list(after=newest_first[3], limit=2)
        assert [f.id for f in page.data] == newest_first[4:6]
        assert page.has_more is True
        last = alice.files.list(after=newest_first[3], limit=10)
        assert [f.id for f in last.data] == newest_first[4:]
        assert last.has_more is False
        # Only the owner's own files.
        assert [f.id for f in bob.files.list(limit=1)] == [bobs]


def test_a_page_names_its_first_and_last_file_and_whether_more_follow(
    gateway: BatchGateway,
) -> None:
    with client(gateway) as alice:
        oldest_first = [upload(alice, f"in-{i}.jsonl") for i in range(3)]
    headers = {"Authorization": f"Bearer {ALICE}"}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as http:
        first = http.get("/v1/files", params={"limit": 2}).json()
        rest = http.get("/v1/files", params={"limit": 2, "after": first["last_id"]}).json()
        empty = http.get("/v1/files", params={"after": "file-nobody-has"}).json()
        bad = [
            http.get("/v1/files", params=params)
            for params in ({"limit": 0}, {"limit": 10_001}, {"limit": "many"}, {"order": "up"})
        ]
    assert first["object"] == "list"
    assert [f["id"] for f in first["data"]] == oldest_first[:0:-1]
    assert (first["first_id"], first["last_id"], first["has_more"]) == (
        oldest_first[2],
        oldest_first[1],
        True,
    )
    assert [f["id"] for f in rest["data"]] == [oldest_first[0]]
    assert (rest["first_id"], rest["last_id"], rest["has_more"]) == (
        oldest_first[0],
        oldest_first[0],
        False,
    )
    assert empty == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }
    assert [r.status_code for r in bad] == [400] * 4
    assert [r.json()["error"]["param"] for r in bad] == ["limit", "limit", "limit", "order"]
