"""The delegated batches' watcher on its own, under asyncio and trio, on SQLite: batches
put in the store as the routes put them, the fake scheduler run as real commands, the
store read for what was recorded."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from frontends.assembly import build_gateway
from frontends.batch_delegation import BatchDelegation
from frontends.identity import StaticKeys
from frontends.store import BatchLog, BatchStore, FileRecord, Store
from tests.support.delegated_gateway import BATCH_MODEL, delegating_fixtures
from tests.support.fake_scheduler import FakeScheduler
from tests.support.gateway_server import write_tokens
from transports.httpx_transport import HttpxTransport

pytestmark = pytest.mark.anyio

DEADLINE = 60.0
OWNER = "alice@example.org"
INPUT = b'{"custom_id": "q-0", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "batch-model", "messages": [{"role": "user", "content": "hi"}]}}\n'  # noqa: E501


async def until(what: str, condition: Callable[[], Any]) -> Any:
    """Poll the real outside world (the database, the scheduler's files) until true."""
    with anyio.fail_after(DEADLINE):
        while not (answer := condition()):
            await anyio.sleep(0.01)
    return answer


class World:
    def __init__(self, tmp_path: Path, sqlite_url: str) -> None:
        self.scheduler = FakeScheduler(tmp_path / "scheduler")
        fixtures = delegating_fixtures(tmp_path, "http://127.0.0.1:9", self.scheduler)
        self.gateway = build_gateway(
            fixtures,
            identity=StaticKeys.from_file(write_tokens(tmp_path)),
            transport=HttpxTransport(),
            environ={"IGW_TEST_BATCH_BACKEND_KEY": "unused"},
        )
        self.opened = Store.connect(sqlite_url)
        self.store = BatchStore(self.opened.engine)
        self.work_dir = tmp_path / "work"
        self.now = datetime.now(UTC)

    def delegation(self, **options: Any) -> BatchDelegation:
        return BatchDelegation(
            self.gateway, self.store, work_dir=self.work_dir, poll_seconds=0.05, **options
        )

    def add(self, batch_id: str, *, slug: str = f"hpc-vllm-{BATCH_MODEL}", **fields: Any) -> None:
        file_id = f"file-{batch_id}"
        record = FileRecord(
            id=file_id,
            owner=OWNER,
            purpose="batch",
            filename="in.jsonl",
            bytes=len(INPUT),
            created_at=self.now,
        )
        self.store.add_file(record, INPUT)
        values: dict[str, Any] = {
            "id": batch_id,
            "user_id": OWNER,
            "input_file": file_id,
            "input_file_id": file_id,
            "cluster": "hpc",
            "framework": "vllm",
            "model": BATCH_MODEL,
            "status": "validating",
            "endpoint": "/v1/chat/completions",
            "endpoint_slug": slug,
            "completion_window": "24h",
            "identity": {"username": OWNER, "groups": ["g-physics"]},
            "created_at": self.now,
            "expires_at": self.now + timedelta(hours=24),
            "total": 1,
            "mode": "delegated",
            **fields,
        }
        assert self.store.add_batch(BatchLog(**values), max_active=100)

    def batch(self, batch_id: str) -> BatchLog:
        found = self.store.get_batch(batch_id)
        assert found is not None
        return found


@asynccontextmanager
async def watching(delegation: BatchDelegation) -> AsyncIterator[BatchDelegation]:
    async with anyio.create_task_group() as group:
        group.start_soon(delegation.run)
        try:
            yield delegation
        finally:
            delegation.stop()


@pytest.fixture
def world(tmp_path: Path, sqlite_url: str) -> Any:
    made = World(tmp_path, sqlite_url)
    try:
        yield made
    finally:
        made.opened.close()


async def test_each_transition_of_the_job_is_recorded_as_it_happens(world: World) -> None:
    world.add("batch_a")
    async with watching(world.delegation()):
        job_id = await until("a job", lambda: next(iter(world.scheduler.jobs()), None))
        submitted = await until("the submission", lambda: world.batch("batch_a").task_ids)
        assert submitted == job_id
        assert world.batch("batch_a").status == "validating"  # queued: the seed's pending
        world.scheduler.set_state(job_id, "RUNNING")
        await until("running", lambda: world.batch("batch_a").status == "in_progress")
        world.scheduler.finish(job_id)
        await until("completed", lambda: world.batch("batch_a").status == "completed")
    batch = world.batch("batch_a")
    assert batch.completed_at is not None and batch.output_file_id is not None
    assert (batch.total, batch.completed, batch.failed) == (1, 1, 0)
    assert batch.lease_holder is None
    output = world.store.file_content(OWNER, batch.output_file_id)
    assert output is not None and json.loads(output)["custom_id"] == "q-0"


async def test_an_answer_the_gateway_cannot_read_changes_nothing(world: World) -> None:
    world.add("batch_b")
    delegation = world.delegation()
    async with watching(delegation):
        job_id = await until("a job", lambda: next(iter(world.scheduler.jobs()), None))
        world.scheduler.set_state(job_id, "RUNNING")
        await until("running", lambda: world.batch("batch_b").status == "in_progress")
        world.scheduler.set_state(job_id, "SOMETHING_ODD")
        polls = world.scheduler.polls(job_id)
        await until("more polls", lambda: world.scheduler.polls(job_id) >= polls + 3)
        assert world.batch("batch_b").status == "in_progress"
        world.scheduler.fail(job_id, "TIMEOUT")
        await until("failed", lambda: world.batch("batch_b").status == "failed")
    assert world.batch("batch_b").result == "The batch job ended as FAILED TIMEOUT."


async def test_a_batch_cancelled_or_expired_before_submission_never_reaches_the_scheduler(
    world: World,
) -> None:
    world.add("batch_c", status="cancelling", cancelling_at=world.now)
    world.add("batch_d", expires_at=world.now - timedelta(seconds=1))
    async with watching(world.delegation()):
        await until("cancelled", lambda: world.batch("batch_c").status == "cancelled")
        await until("expired", lambda: world.batch("batch_d").status == "expired")
    assert world.scheduler.jobs() == []


async def test_a_batch_whose_endpoint_no_longer_delegates_fails_saying_so(world: World) -> None:
    world.add("batch_e", slug="fake-api-gpt-test")  # the built-in runner's kind of endpoint
    async with watching(world.delegation()):
        await until("failed", lambda: world.batch("batch_e").status == "failed")
    assert world.batch("batch_e").result == "The batch's endpoint no longer runs batches."


async def test_a_stopped_watcher_lets_its_batches_go_for_another_to_take(world: World) -> None:
    world.add("batch_f")
    async with watching(world.delegation()):
        job_id = await until("a job", lambda: next(iter(world.scheduler.jobs()), None))
        await until("the submission", lambda: world.batch("batch_f").task_ids)
    assert world.batch("batch_f").lease_holder is None
    world.scheduler.finish(job_id)
    async with watching(world.delegation()):
        await until("completed", lambda: world.batch("batch_f").status == "completed")
    assert world.scheduler.jobs() == [job_id]
