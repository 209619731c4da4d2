"""OpenAI's files and batches API end to end: the official `openai` client, a real
gateway server with its built-in runner, the fake OpenAI backend, on SQLite and on
PostgreSQL.  Waiting is polling the gateway (a real server) with a deadline."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from frontends.batches import BatchLimits
from tests.support.batch_gateway import BatchGateway, running_batch_gateway
from tests.support.fake_openai import FakeOpenAI, running_fake_openai
from tests.support.gateway_server import ALICE, BOB

pytestmark = pytest.mark.e2e

DEADLINE = 120.0


@pytest.fixture
def backend() -> Iterator[tuple[FakeOpenAI, str]]:
    with running_fake_openai(models=["gpt-test", "fail-500", "slow", "restricted"]) as running:
        yield running


@pytest.fixture
def gateway(
    backend: tuple[FakeOpenAI, str], database_url: str, tmp_path: Path
) -> Iterator[BatchGateway]:
    limits = BatchLimits(max_file_bytes=2_000_000, max_lines=2_000, max_active=1, concurrency=16)
    with running_batch_gateway(tmp_path, backend[1], database_url, limits=limits) as running:
        yield running


def client(gateway: BatchGateway, key: str = ALICE) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)


def line(index: int, model: str = "gpt-test", **body: Any) -> dict[str, Any]:
    return {
        "custom_id": f"req-{index}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": model,
            "messages": [{"role": "user", "content": f"line {index}"}],
            **body,
        },
    }


def jsonl(items: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(item) + "\n" for item in items).encode()


def upload(c: openai.OpenAI, items: list[dict[str, Any]] | bytes) -> str:
    content = items if isinstance(items, bytes) else jsonl(items)
    return c.files.create(file=("input.jsonl", io.BytesIO(content)), purpose="batch").id


def wait_for(
    c: openai.OpenAI,
    batch_id: str,
    done: Callable[[Any], bool] = lambda b: (
        b.status in {"completed", "failed", "expired", "cancelled"}
    ),
) -> Any:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        batch = c.batches.retrieve(batch_id)
        if done(batch):
            return batch
        time.sleep(0.05)
    raise AssertionError(f"batch {batch_id} did not get there: {batch.status}")


def read_lines(c: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    return [json.loads(text) for text in c.files.content(file_id).text.splitlines()]


def chat_requests(fake: FakeOpenAI) -> list[str]:
    """The user text of every chat request the backend received."""
    return [
        r.json()["messages"][0]["content"]
        for r in fake.requests
        if r.path == "/v1/chat/completions"
    ]


def test_a_thousand_lines_upload_run_and_download(
    gateway: BatchGateway, backend: tuple[FakeOpenAI, str]
) -> None:
    fake, _ = backend
    c = client(gateway)
    file_id = upload(c, [line(i) for i in range(1000)])
    assert c.files.retrieve(file_id).purpose == "batch"
    started = time.monotonic()
    batch = c.batches.create(
        input_file_id=file_id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"run": "thousand"},
    )
    assert batch.status == "validating"
    assert batch.metadata == {"run": "thousand"}
    done = wait_for(c, batch.id)
    seconds = time.monotonic() - started
    print(f"\nbuilt-in runner: 1000 lines in {seconds:.2f} s = {1000 / seconds:.0f} lines/s")
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (1000, 1000)
    assert done.request_counts.failed == 0
    assert done.error_file_id is None
    assert done.in_progress_at and done.finalizing_at and done.completed_at
    output = read_lines(c, done.output_file_id)
    assert [item["custom_id"] for item in output] == [f"req-{i}" for i in range(1000)]
    for i, item in enumerate(output):
        assert item["error"] is None
        assert item["response"]["status_code"] == 200
        assert item["response"]["request_id"] == item["id"]
        reply = item["response"]["body"]["choices"][0]["message"]["content"]
        assert reply == f"fake reply to: line {i}"
    assert sorted(chat_requests(fake)) == sorted(f"line {i}" for i in range(1000))
    listed = c.batches.list()
    assert [b.id for b in listed.data] == [batch.id]


def test_failing_lines_go_to_the_error_file(
    gateway: BatchGateway, backend: tuple[FakeOpenAI, str]
) -> None:
    c = client(gateway)
    items = [line(i) for i in range(6)]
    items[2]["body"]["messages"] = "not a list"  # the gateway's own validation refuses it
    items[4]["body"]["messages"] = []
    batch = c.batches.create(
        input_file_id=upload(c, items), endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = wait_for(c, batch.id)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (4, 2)
    output = read_lines(c, done.output_file_id)
    errors = read_lines(c, done.error_file_id)
    assert [o["custom_id"] for o in output] == ["req-0", "req-1", "req-3", "req-5"]
    assert [e["custom_id"] for e in errors] == ["req-2", "req-4"]
    for error in errors:
        assert error["response"]["status_code"] == 400
        assert error["error"]["code"] and error["error"]["message"]

    # A backend that fails every line: all of them in the error file, no output file.
    failing = c.batches.create(
        input_file_id=upload(c, [line(i, "fail-500") for i in range(3)]),
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    done = wait_for(c, failing.id)
    assert done.status == "completed"
    assert done.output_file_id is None
    errors = read_lines(c, done.error_file_id)
    assert [e["custom_id"] for e in errors] == ["req-0", "req-1", "req-2"]
    assert {e["response"]["status_code"] for e in errors} == {502}
    assert all("internal secret detail" not in json.dumps(e) for e in errors)


def test_cancel_mid_way_waits_for_the_lines_in_flight(
    backend: tuple[FakeOpenAI, str], database_url: str, tmp_path: Path
) -> None:
    fake, backend_url = backend
    limits = BatchLimits(concurrency=3)
    with running_batch_gateway(tmp_path, backend_url, database_url, limits=limits) as gateway:
        c = client(gateway)
        batch = c.batches.create(
            input_file_id=upload(c, [line(i, "slow") for i in range(20)]),
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
        deadline = time.monotonic() + DEADLINE
        while len(chat_requests(fake)) < 3:  # three lines hang at the backend
            assert time.monotonic() < deadline, "the runner never sent its first lines"
            time.sleep(0.02)
        cancelling = c.batches.cancel(batch.id)
        assert cancelling.status == "cancelling"
        assert cancelling.cancelling_at is not None
        assert c.batches.retrieve(batch.id).status == "cancelling"
        fake.release()  # the three lines in flight answer now
        done = wait_for(c, batch.id)
        assert done.status == "cancelled"
        assert done.cancelled_at is not None
        assert done.request_counts is not None
        counts = done.request_counts
        assert (counts.total, counts.completed, counts.failed) == (20, 3, 17)
        assert len(read_lines(c, done.output_file_id)) == 3
        errors = read_lines(c, done.error_file_id)
        assert len(errors) == 17
        assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
        assert all(e["response"] is None for e in errors)
        assert len(chat_requests(fake)) == 3  # nothing was sent after the cancel
        # Cancelling a finished batch changes nothing.
        assert c.batches.cancel(batch.id).status == "cancelled"


def test_only_the_owner_sees_a_file_or_a_batch(gateway: BatchGateway) -> None:
    alice, bob = client(gateway), client(gateway, BOB)
    file_id = upload(alice, [line(0)])
    batch = alice.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    for attempt in (
        lambda: bob.files.retrieve(file_id),
        lambda: bob.files.content(file_id),
        lambda: bob.files.delete(file_id),
        lambda: bob.batches.retrieve(batch.id),
        lambda: bob.batches.cancel(batch.id),
        lambda: bob.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        ),
    ):
        with pytest.raises(openai.NotFoundError):
            attempt()
    assert bob.files.list().data == []
    assert bob.batches.list().data == []
    assert [f.id for f in alice.files.list(purpose="batch").data] == [file_id]
    done = wait_for(alice, batch.id)
    assert done.output_file_id is not None
    with pytest.raises(openai.NotFoundError):
        bob.files.content(done.output_file_id)
    assert alice.files.delete(file_id).deleted is True
    with pytest.raises(openai.NotFoundError):
        alice.files.retrieve(file_id)
    with pytest.raises(openai.AuthenticationError):
        client(gateway, "not-a-key").files.list()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"custom_id": "a"\n', "Line 1 is not valid JSON"),
        (jsonl([line(0), {"method": "POST"}]), "Line 2: 'custom_id'"),
        (jsonl([line(0), line(1), line(0)]), "Line 3: custom_id 'req-0' is already used by line 1"),
        (jsonl([line(0), {**line(1), "method": "GET"}]), "Line 2: 'method'"),
        (jsonl([{**line(0), "url": "/v1/images"}]), "Line 1: 'url' must be one of"),
        (jsonl([line(0), {**line(1), "body": {"messages": []}}]), "Line 2: 'body.model'"),
        (jsonl([line(0, stream=True)]), "Line 1: streaming"),
        (b"[1, 2]\n", "Line 1 is not a JSON object"),
        (b"", "no lines"),
    ],
)
def test_bad_files_are_refused_naming_the_line(
    gateway: BatchGateway, content: bytes, expected: str
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        upload(client(gateway), content)
    assert refused.value.status_code == 400
    assert expected in refused.value.message


def test_bad_batches_are_refused(gateway: BatchGateway) -> None:
    alice, bob = client(gateway), client(gateway, BOB)
    mixed = upload(alice, [line(0), line(1, "fail-500")])

    def create(c: openai.OpenAI, file_id: str, **fields: Any) -> Any:
        arguments = {"endpoint": "/v1/chat/completions", "completion_window": "24h", **fields}
        return c.batches.create(input_file_id=file_id, **arguments)

    with pytest.raises(openai.BadRequestError, match="Line 2: model 'fail-500' differs"):
        create(alice, mixed)
    with pytest.raises(openai.BadRequestError, match="Line 1: 'url' is /v1/chat/completions"):
        create(alice, upload(alice, [line(0)]), endpoint="/v1/embeddings")
    with pytest.raises(openai.BadRequestError, match="completion_window"):
        create(alice, upload(alice, [line(0)]), completion_window="1h")
    # Authorization for the batch's model, as the request path decides it.
    with pytest.raises(openai.PermissionDeniedError, match="restricted by group membership"):
        create(bob, upload(bob, [line(0, "restricted")]))
    with pytest.raises(openai.NotFoundError, match="no-such-model"):
        create(alice, upload(alice, [line(0, "no-such-model")]))
    # One unfinished batch per user (the seed system's default).
    first = create(alice, upload(alice, [line(i, "slow") for i in range(2)]))
    with pytest.raises(openai.RateLimitError, match="unfinished"):
        create(alice, upload(alice, [line(0)]))
    assert create(bob, upload(bob, [line(0)])).status == "validating"
    assert alice.batches.cancel(first.id).status == "cancelling"


def test_uploads_have_their_own_size_limit_and_other_bodies_keep_theirs(
    backend: tuple[FakeOpenAI, str], database_url: str, tmp_path: Path
) -> None:
    limits = BatchLimits(max_file_bytes=4_000)
    with running_batch_gateway(
        tmp_path, backend[1], database_url, limits=limits, max_body_bytes=2_000
    ) as gateway:
        c = client(gateway)
        items = [line(i) for i in range(20)]
        content = jsonl(items)
        assert 2_000 < len(content) < 4_000
        assert c.files.retrieve(upload(c, content)).bytes == len(content)
        with pytest.raises(openai.BadRequestError, match="at most 4000 are allowed"):
            upload(c, jsonl([line(i) for i in range(40)]))
        big = "x" * 3_000
        with pytest.raises(openai.APIStatusError) as refused:
            c.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": big}])
        assert refused.value.status_code == 413


def test_lines_naming_an_alias_run_on_the_model_under_its_real_name(
    backend: tuple[FakeOpenAI, str], database_url: str, tmp_path: Path
) -> None:
    fake, url = backend
    aliases = {"gpt-test": ["gpt-fast"]}
    with running_batch_gateway(tmp_path, url, database_url, aliases=aliases) as gateway:
        c = client(gateway)
        file_id = upload(c, [line(i, model="gpt-fast") for i in range(5)])
        batch = c.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        assert batch.model_dump()["model"] == "gpt-test"  # the real name, recorded
        done = wait_for(c, batch.id)
        assert done.status == "completed"
        assert done.request_counts is not None and done.request_counts.completed == 5
        sent = [r.json()["model"] for r in fake.requests if r.path == "/v1/chat/completions"]
        assert sent == ["gpt-test"] * 5
        # One model under several of its names is still one model.
        mixed = [line(i, model=name) for i, name in enumerate(["gpt-fast", "gpt-test", "GPT-Fast"])]
        batch = c.batches.create(
            input_file_id=upload(c, mixed),
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
        assert wait_for(c, batch.id).status == "completed"
        other = [line(0, model="gpt-fast"), line(1, model="no-such-model")]
        with pytest.raises(openai.BadRequestError, match="Line 2: model 'no-such-model'"):
            c.batches.create(
                input_file_id=upload(c, other),
                endpoint="/v1/chat/completions",
                completion_window="24h",
            )
