"""The built-in runner on its own, under asyncio and trio, on SQLite and PostgreSQL:
stopped in the middle of a batch and replaced by a new runner on the same database, the
batch completes and the backend saw each line exactly once (counted at the backend)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from frontends.assembly import build_gateway
from frontends.batch_runner import BatchRunner
from frontends.batches import Batches, BatchLimits
from frontends.identity import StaticKeys
from frontends.store import BatchStore, Store
from tests.support.batch_gateway import KEY_ENV, batch_fixtures
from tests.support.fake_openai import FakeOpenAI, running_fake_openai
from tests.support.gateway_server import ALICE, write_tokens
from transports.httpx_transport import HttpxTransport

pytestmark = pytest.mark.anyio

LINES = 200
DEADLINE = 60.0


@pytest.fixture
def backend() -> Iterator[tuple[FakeOpenAI, str]]:
    with running_fake_openai(models=["gpt-test"]) as running:
        yield running


def _input() -> bytes:
    items = [
        {
            "custom_id": f"req-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "gpt-test", "messages": [{"role": "user", "content": f"line {i}"}]},
        }
        for i in range(LINES)
    ]
    return "".join(json.dumps(item) + "\n" for item in items).encode()


def _sent(fake: FakeOpenAI) -> list[str]:
    return [r.json()["messages"][0]["content"] for r in fake.requests]


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Poll a real outside process (the backend, the database) until `condition()`."""
    with anyio.fail_after(DEADLINE):
        while not condition():
            await anyio.sleep(0.01)


async def test_a_new_runner_finishes_a_stopped_ones_batch_without_repeating_a_line(
    backend: tuple[FakeOpenAI, str], database_url: str, tmp_path: Path
) -> None:
    fake, backend_url = backend
    gateway = build_gateway(
        batch_fixtures(tmp_path, backend_url, models=["gpt-test"]),
        identity=StaticKeys.from_file(write_tokens(tmp_path)),
        transport=HttpxTransport(),
        environ={KEY_ENV: "unused"},
    )
    store = await Store.open(database_url)
    try:
        batch_store = BatchStore(store.engine)
        api = Batches(gateway, batch_store, limits=BatchLimits(concurrency=4))
        auth = f"Bearer {ALICE}"
        uploaded = await api.upload(auth, purpose="batch", filename="in.jsonl", content=_input())
        assert uploaded.status == 200, uploaded.body
        request = {
            "input_file_id": uploaded.json()["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        }
        created = await api.create(auth, json.dumps(request).encode())
        assert created.status == 200, created.body
        batch_id = created.json()["id"]

        first = BatchRunner(gateway, batch_store, concurrency=4, poll_interval=0.05)
        async with anyio.create_task_group() as group:
            group.start_soon(first.run)
            await _until(lambda: len(fake.requests) >= LINES // 4, "a quarter of the lines sent")
            first.stop()  # graceful: the lines in flight finish and are recorded
        stopped = batch_store.get_batch(batch_id)
        assert stopped is not None
        assert stopped.status == "in_progress"
        assert stopped.lease_holder is None  # let go, for the next process to take at once
        assert 0 < stopped.completed < LINES
        assert len(batch_store.outcomes(batch_id)) == stopped.completed == len(fake.requests)

        second = BatchRunner(gateway, batch_store, concurrency=4, poll_interval=0.05)
        async with anyio.create_task_group() as group:
            group.start_soon(second.run)

            def finished() -> bool:
                batch = batch_store.get_batch(batch_id)
                return batch is not None and batch.status == "completed"

            await _until(finished, "the batch completed")
            second.stop()
        assert second.lines_sent == LINES - stopped.completed
        counts = Counter(_sent(fake))
        assert counts == Counter(f"line {i}" for i in range(LINES))  # each exactly once
        done = batch_store.get_batch(batch_id)
        assert done is not None
        assert (done.total, done.completed, done.failed) == (LINES, LINES, 0)
        output = batch_store.file_content("alice@example.org", done.output_file_id or "")
        assert output is not None
        assert len(output.splitlines()) == LINES
    finally:
        await gateway.aclose()
        await store.aclose()


async def test_a_batch_whose_window_ended_before_it_ran_expires_without_a_line_sent(
    backend: tuple[FakeOpenAI, str], database_url: str, tmp_path: Path
) -> None:
    fake, backend_url = backend
    gateway = build_gateway(
        batch_fixtures(tmp_path, backend_url, models=["gpt-test"]),
        identity=StaticKeys.from_file(write_tokens(tmp_path)),
        transport=HttpxTransport(),
        environ={KEY_ENV: "unused"},
    )
    store = await Store.open(database_url)
    try:
        batch_store = BatchStore(store.engine)
        api = Batches(gateway, batch_store, clock=lambda: 1_800_000_000.0)
        auth = f"Bearer {ALICE}"
        uploaded = await api.upload(auth, purpose="batch", filename="in.jsonl", content=_input())
        request = {
            "input_file_id": uploaded.json()["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        }
        batch_id = (await api.create(auth, json.dumps(request).encode())).json()["id"]
        # The runner's clock says the 24 hours are over.
        runner = BatchRunner(
            gateway, batch_store, poll_interval=0.05, clock=lambda: 1_800_000_000.0 + 86_401
        )
        async with anyio.create_task_group() as group:
            group.start_soon(runner.run)

            def ended() -> bool:
                batch = batch_store.get_batch(batch_id)
                return batch is not None and batch.status == "expired"

            await _until(ended, "the batch expired")
            runner.stop()
        done = batch_store.get_batch(batch_id)
        assert done is not None
        assert (done.completed, done.failed, done.output_file_id) == (0, LINES, None)
        assert done.expired_at is not None
        errors = batch_store.file_content("alice@example.org", done.error_file_id or "")
        assert errors is not None
        codes = {json.loads(text)["error"]["code"] for text in errors.splitlines()}
        assert codes == {"batch_expired"}
        assert fake.requests == []
    finally:
        await gateway.aclose()
        await store.aclose()
