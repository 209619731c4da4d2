"""The seed system's batch routes end to end: a real gateway server, a real database,
the command-template adaptor running the fake scheduler script as real commands, and
the fake OpenAI backend for the built-in runner.

Waiting is on conditions with a deadline (a job appearing at the scheduler, a status in
the store), never a fixed sleep.  "The store saw it" is read from the database itself,
not through the routes, so a test can show that a job's change was recorded while no
client asked about the batch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai
import pytest

from adaptors.endpoints.endpoint import BatchStatusEnum
from tests.guide_adaptors.batch_endpoint import JOBS
from tests.support.delegated_gateway import (
    BATCH_MODEL,
    SEED_STYLE_MODEL,
    DelegatingGateway,
    running_delegating_gateway,
    seed_body,
)
from tests.support.fake_openai import FakeOpenAI, running_fake_openai
from tests.support.fake_scheduler import FakeScheduler
from tests.support.gateway_server import ALICE, BOB

pytestmark = pytest.mark.e2e

DEADLINE = 60.0
T = TypeVar("T")


def wait_until(what: str, probe: Callable[[], T | None]) -> T:
    """The first truthy answer of `probe`, asked again until the deadline."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        answer = probe()
        if answer:
            return answer
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def backend() -> Iterator[tuple[FakeOpenAI, str]]:
    with running_fake_openai(models=["gpt-test", "fail-500", "slow", "restricted"]) as running:
        yield running


@pytest.fixture
def scheduler(tmp_path: Path) -> FakeScheduler:
    return FakeScheduler(tmp_path / "scheduler")


def serve(
    tmp_path: Path, backend: tuple[FakeOpenAI, str], database_url: str, scheduler: FakeScheduler
) -> Any:
    return running_delegating_gateway(tmp_path, backend[1], database_url, scheduler)


@pytest.fixture
def gateway(
    tmp_path: Path, backend: tuple[FakeOpenAI, str], database_url: str, scheduler: FakeScheduler
) -> Iterator[DelegatingGateway]:
    """On each database in turn."""
    with serve(tmp_path, backend, database_url, scheduler) as running:
        yield running


@pytest.fixture
def sqlite_gateway(
    tmp_path: Path, backend: tuple[FakeOpenAI, str], sqlite_url: str, scheduler: FakeScheduler
) -> Iterator[DelegatingGateway]:
    """For the rules that do not depend on the database."""
    with serve(tmp_path, backend, sqlite_url, scheduler) as running:
        yield running


def http(gateway: DelegatingGateway, key: str = ALICE) -> httpx.Client:
    return httpx.Client(
        base_url=gateway.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


def lines(count: int, model: str = BATCH_MODEL) -> bytes:
    items = [
        {
            "custom_id": f"q-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": f"question {i}"}]},
        }
        for i in range(count)
    ]
    return "".join(json.dumps(item) + "\n" for item in items).encode()


def upload(client: httpx.Client, content: bytes) -> str:
    answer = client.post(
        "/v1/files", data={"purpose": "batch"}, files={"file": ("in.jsonl", content)}
    )
    assert answer.status_code == 200, answer.text
    file_id: str = answer.json()["id"]
    return file_id


def submit(client: httpx.Client, body: dict[str, Any], where: str = "hpc/vllm") -> httpx.Response:
    return client.post(f"/resource_server/{where}/v1/batches", json=body)


def stored_status(gateway: DelegatingGateway, batch_id: str) -> str:
    batch = gateway.store.get_batch(batch_id)
    assert batch is not None
    return batch.status


def new_job(scheduler: FakeScheduler) -> str:
    return wait_until("the job at the scheduler", lambda: next(iter(scheduler.jobs()), None))


def error_of(answer: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = answer.json()["error"]
    return error


# -- delegated: the command adaptor and the fake scheduler --------------------------------


def test_a_delegated_batch_runs_as_a_scheduler_job_from_submission_to_result(
    gateway: DelegatingGateway, scheduler: FakeScheduler
) -> None:
    client = http(gateway)
    content = lines(3)
    file_id = upload(client, content)
    answer = submit(client, seed_body(file_id, output_folder_path="/somewhere/of/mine"))
    assert answer.status_code == 200, answer.text
    created = answer.json()
    assert created == {"batch_id": created["batch_id"], "input_file": file_id, "status": "pending"}
    batch_id = created["batch_id"]

    job_id = new_job(scheduler)
    job = scheduler.job(job_id)
    # The job reads the gateway's copy of the upload, in the gateway's own directory,
    # and writes beside it: never a path the user named.
    assert Path(job["input"]).read_bytes() == content
    assert Path(job["input"]).parent == gateway.work_dir / batch_id
    assert Path(job["output"]).parent == gateway.work_dir / batch_id
    assert job["model"] == BATCH_MODEL
    assert client.get(f"/resource_server/v1/batches/{batch_id}").json() == "pending"

    scheduler.set_state(job_id, "RUNNING")
    wait_until("running", lambda: stored_status(gateway, batch_id) == "in_progress")
    assert client.get(f"/resource_server/v1/batches/{batch_id}").json() == "running"
    not_yet = client.get(f"/resource_server/v1/batches/{batch_id}/result")
    assert not_yet.status_code == 400
    assert error_of(not_yet)["code"] == "batch_not_completed"

    answers = scheduler.finish(job_id)
    wait_until("completed", lambda: stored_status(gateway, batch_id) == "completed")
    assert client.get(f"/resource_server/v1/batches/{batch_id}").json() == "completed"
    result = client.get(f"/resource_server/v1/batches/{batch_id}/result")
    assert result.status_code == 200
    assert [json.loads(text) for text in result.json().splitlines()] == answers

    [listed] = client.get("/resource_server/v1/batches").json()
    assert listed["batch_id"] == batch_id
    assert (listed["cluster"], listed["framework"], listed["input_file"]) == (
        "hpc",
        "vllm",
        file_id,
    )
    assert listed["status"] == "completed"
    assert listed["in_progress_at"] is not None and listed["completed_at"] is not None
    assert listed["failed_at"] is None

    # The same batch through OpenAI's API: its output file is the job's output.
    c = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=ALICE, max_retries=0)
    batch = c.batches.retrieve(batch_id)
    assert batch.status == "completed"
    assert batch.request_counts is not None and batch.request_counts.completed == 3
    assert batch.output_file_id is not None
    assert c.files.content(batch.output_file_id).text == result.json()
    assert not (gateway.work_dir / batch_id).exists()  # the job's files are cleaned up


def test_the_status_is_recorded_as_the_job_changes_while_nobody_asks(
    gateway: DelegatingGateway, scheduler: FakeScheduler
) -> None:
    client = http(gateway)
    batch_id = submit(client, seed_body(upload(client, lines(1)))).json()["batch_id"]
    job_id = new_job(scheduler)
    wait_until("a first poll", lambda: scheduler.polls(job_id) >= 1)
    # From here on the client asks nothing; the store alone is watched.
    for state, stored in (("RUNNING", "in_progress"), ("PENDING", "validating")):
        polls = scheduler.polls(job_id)
        scheduler.set_state(job_id, state)
        wait_until(stored, lambda stored=stored: stored_status(gateway, batch_id) == stored)
        assert scheduler.polls(job_id) > polls  # the gateway asked the scheduler itself
    scheduler.finish(job_id)
    wait_until("completed", lambda: stored_status(gateway, batch_id) == "completed")
    # The first time the client asks, the answer is already the job's.
    assert client.get(f"/resource_server/v1/batches/{batch_id}").json() == "completed"
    [listed] = client.get("/resource_server/v1/batches", params={"status": "completed"}).json()
    assert listed["batch_id"] == batch_id


def test_a_job_that_fails_fails_the_batch_with_the_schedulers_reason(
    gateway: DelegatingGateway, scheduler: FakeScheduler
) -> None:
    client = http(gateway)
    batch_id = submit(client, seed_body(upload(client, lines(2)))).json()["batch_id"]
    job_id = new_job(scheduler)
    scheduler.set_state(job_id, "RUNNING")
    wait_until("running", lambda: stored_status(gateway, batch_id) == "in_progress")
    scheduler.fail(job_id, "OUT_OF_MEMORY on node x3")
    wait_until("failed", lambda: stored_status(gateway, batch_id) == "failed")

    assert client.get(f"/resource_server/v1/batches/{batch_id}").json() == "failed"
    result = client.get(f"/resource_server/v1/batches/{batch_id}/result")
    assert result.status_code == 400
    assert error_of(result)["code"] == "batch_failed"
    assert "FAILED OUT_OF_MEMORY on node x3" in error_of(result)["message"]
    [listed] = client.get("/resource_server/v1/batches", params={"status": "failed"}).json()
    assert listed["failed_at"] is not None and listed["completed_at"] is None
    assert client.get("/resource_server/v1/batches", params={"status": "running"}).json() == []
    # A failed batch no longer counts against the limit of one active batch.
    assert submit(client, seed_body(upload(client, lines(1)))).status_code == 200


def test_a_submission_the_scheduler_refuses_fails_the_batch(
    gateway: DelegatingGateway, scheduler: FakeScheduler
) -> None:
    scheduler.refuse_submissions()
    client = http(gateway)
    batch_id = submit(client, seed_body(upload(client, lines(1)))).json()["batch_id"]
    wait_until("failed", lambda: stored_status(gateway, batch_id) == "failed")
    message = error_of(client.get(f"/resource_server/v1/batches/{batch_id}/result"))["message"]
    assert "could not be submitted" in message
    assert str(gateway.work_dir) not in message  # the scheduler's words stay in the log
    assert scheduler.jobs() == []


def test_cancelling_a_delegated_batch_cancels_its_job(
    gateway: DelegatingGateway, scheduler: FakeScheduler
) -> None:
    client = http(gateway)
    batch_id = submit(client, seed_body(upload(client, lines(2)))).json()["batch_id"]
    job_id = new_job(scheduler)
    scheduler.set_state(job_id, "RUNNING")
    wait_until("running", lambda: stored_status(gateway, batch_id) == "in_progress")
    c = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=ALICE, max_retries=0)
    assert c.batches.cancel(batch_id).status == "cancelling"
    wait_until("cancelled", lambda: stored_status(gateway, batch_id) == "cancelled")
    assert scheduler.job(job_id)["cancel_asked"]
    assert c.batches.retrieve(batch_id).cancelled_at is not None
    assert client.get(f"/resource_server/v1/batches/{batch_id}").json() == "failed"


def test_an_openai_client_batch_on_a_delegating_endpoint_runs_as_one_job(
    gateway: DelegatingGateway, scheduler: FakeScheduler
) -> None:
    c = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=ALICE, max_retries=0)
    file_id = c.files.create(file=("in.jsonl", lines(2)), purpose="batch").id
    batch = c.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    job_id = new_job(scheduler)
    answers = scheduler.finish(job_id)
    done = wait_until(
        "completed", lambda: (b := c.batches.retrieve(batch.id)).status == "completed" and b
    )
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (2, 2)
    assert done.output_file_id is not None
    output = c.files.content(done.output_file_id).text.splitlines()
    assert [json.loads(text) for text in output] == answers


def test_a_restarted_gateway_watches_the_job_it_had_without_submitting_again(
    tmp_path: Path,
    backend: tuple[FakeOpenAI, str],
    database_url: str,
    scheduler: FakeScheduler,
) -> None:
    with serve(tmp_path, backend, database_url, scheduler) as first:
        client = http(first)
        batch_id = submit(client, seed_body(upload(client, lines(2)))).json()["batch_id"]
        job_id = new_job(scheduler)
        wait_until("the submission stored", lambda: first.store.get_batch(batch_id).in_progress_at)
    # The gateway is gone (stopped: it let its lease go); the job runs on meanwhile.
    scheduler.set_state(job_id, "RUNNING")
    with serve(tmp_path, backend, database_url, scheduler) as second:
        wait_until("running", lambda: stored_status(second, batch_id) == "in_progress")
        scheduler.finish(job_id)
        wait_until("completed", lambda: stored_status(second, batch_id) == "completed")
        result = http(second).get(f"/resource_server/v1/batches/{batch_id}/result")
        assert len(result.json().splitlines()) == 2
    assert scheduler.jobs() == [job_id]  # submitted once


def test_a_seed_style_adaptor_gets_input_file_as_the_user_sent_it(
    gateway: DelegatingGateway,
) -> None:
    client = http(gateway)
    body = seed_body(
        "/eagle/project/prompts.jsonl",
        model=SEED_STYLE_MODEL,
        output_folder_path="/eagle/project/out",
    )
    answer = submit(client, body)
    assert answer.status_code == 200, answer.text
    batch_id = answer.json()["batch_id"]
    task_id = wait_until("the submission", lambda: gateway.store.get_batch(batch_id).task_ids)
    job = JOBS[task_id]
    assert job["username"] == "alice@example.org"
    sent = job["batch_data"]
    assert {k: sent[k] for k in ("input_file", "model", "output_folder_path")} == body
    assert "input_path" not in sent  # not a file of /v1/files: the gateway copies nothing

    job["status"] = BatchStatusEnum.running
    wait_until("running", lambda: stored_status(gateway, batch_id) == "in_progress")
    job["result"] = "/eagle/project/out/results.jsonl"
    job["status"] = BatchStatusEnum.completed
    wait_until("completed", lambda: stored_status(gateway, batch_id) == "completed")
    result = client.get(f"/resource_server/v1/batches/{batch_id}/result")
    assert result.json() == "/eagle/project/out/results.jsonl"
    assert set(job["seen"]) <= {"pending", "running"}  # the seed's words, as it reads them
    assert "running" in job["seen"]


# -- the built-in runner through the seed route -------------------------------------------


def test_the_builtin_runner_runs_a_seed_route_batch_from_a_file_id(
    gateway: DelegatingGateway, backend: tuple[FakeOpenAI, str]
) -> None:
    fake, _ = backend
    client = http(gateway)
    file_id = upload(client, lines(4, model="gpt-test"))
    answer = submit(client, seed_body(file_id, model="gpt-test"), where="fake/api")
    assert answer.status_code == 200, answer.text
    batch_id = answer.json()["batch_id"]
    wait_until("completed", lambda: stored_status(gateway, batch_id) == "completed")
    assert client.get(f"/resource_server/v1/batches/{batch_id}").json() == "completed"
    output = [
        json.loads(t)
        for t in client.get(f"/resource_server/v1/batches/{batch_id}/result").json().splitlines()
    ]
    assert sorted(item["custom_id"] for item in output) == ["q-0", "q-1", "q-2", "q-3"]
    assert all(item["response"]["status_code"] == 200 for item in output)
    asked = [
        r.json()["messages"][0]["content"]
        for r in fake.requests
        if r.path.endswith("/chat/completions")
    ]
    assert sorted(asked) == [f"question {i}" for i in range(4)]


def test_the_builtin_route_takes_only_a_file_id_of_the_callers(
    sqlite_gateway: DelegatingGateway,
) -> None:
    alice, bob = http(sqlite_gateway), http(sqlite_gateway, BOB)
    alices_file = upload(alice, lines(1, model="gpt-test"))
    for input_file in ("/etc/passwd", "file-does-not-exist", alices_file):
        answer = submit(bob, seed_body(input_file, model="gpt-test"), where="fake/api")
        assert answer.status_code == 400, input_file
        assert error_of(answer)["param"] == "input_file"
    assert sqlite_gateway.store.batches_of("bob@elsewhere.net") == []


def test_the_command_adaptor_takes_only_a_file_id_too(
    sqlite_gateway: DelegatingGateway, scheduler: FakeScheduler
) -> None:
    answer = submit(http(sqlite_gateway), seed_body("/data/alice/prompts.jsonl"))
    assert answer.status_code == 400
    assert "/v1/files" in error_of(answer)["message"]
    assert scheduler.jobs() == []


def test_every_line_must_name_the_routes_model(sqlite_gateway: DelegatingGateway) -> None:
    client = http(sqlite_gateway)
    answer = submit(client, seed_body(upload(client, lines(2, model="gpt-test"))))
    assert answer.status_code == 400
    assert (
        "Line 1: model 'gpt-test' is not the batch's model 'batch-model'"
        in (error_of(answer)["message"])
    )


# -- the rules ----------------------------------------------------------------------------


def test_a_field_the_seed_does_not_know_is_refused(sqlite_gateway: DelegatingGateway) -> None:
    client = http(sqlite_gateway)
    file_id = upload(client, lines(1))
    answer = submit(client, {**seed_body(file_id), "priority": "high"})
    assert answer.status_code == 400
    assert (error_of(answer)["param"], error_of(answer)["code"]) == (
        "priority",
        "unknown_parameter",
    )
    missing = submit(client, {"input_file": file_id})
    assert (missing.status_code, error_of(missing)["param"]) == (400, "model")
    assert sqlite_gateway.store.batches_of("alice@example.org") == []


def test_only_the_owner_sees_a_batch(
    sqlite_gateway: DelegatingGateway, scheduler: FakeScheduler
) -> None:
    alice, bob = http(sqlite_gateway), http(sqlite_gateway, BOB)
    batch_id = submit(alice, seed_body(upload(alice, lines(1)))).json()["batch_id"]
    for path in (
        f"/resource_server/v1/batches/{batch_id}",
        f"/resource_server/v1/batches/{batch_id}/result",
    ):
        assert bob.get(path).status_code == 404
        assert alice.get(path).status_code in (200, 400)
    assert bob.get("/resource_server/v1/batches").json() == []
    assert [b["batch_id"] for b in alice.get("/resource_server/v1/batches").json()] == [batch_id]
    assert httpx.get(f"{sqlite_gateway.url}/resource_server/v1/batches").status_code == 401


def test_authorization_is_checked_at_cluster_and_endpoint_level(
    sqlite_gateway: DelegatingGateway, scheduler: FakeScheduler
) -> None:
    bob = http(sqlite_gateway, BOB)
    file_id = upload(bob, lines(1, model="batch-restricted"))
    refused = submit(bob, seed_body(file_id, model="batch-restricted"))
    assert refused.status_code == 403  # the endpoint is for g-physics
    file_id = upload(bob, lines(1))
    refused = submit(bob, seed_body(file_id), where="hpc-private/vllm")
    assert refused.status_code == 403  # the cluster is for g-physics
    unknown = submit(bob, seed_body(file_id), where="hpc/nope")
    assert unknown.status_code == 400
    assert scheduler.jobs() == []
    alice = http(sqlite_gateway)
    allowed = submit(
        alice,
        seed_body(
            upload(alice, lines(1)),
        ),
        where="hpc-private/vllm",
    )
    assert allowed.status_code == 200, allowed.text


def test_one_active_batch_per_user_and_one_batch_per_input(
    sqlite_gateway: DelegatingGateway, scheduler: FakeScheduler
) -> None:
    client = http(sqlite_gateway)
    file_id = upload(client, lines(1))
    assert submit(client, seed_body(file_id)).status_code == 200
    again = submit(client, seed_body(file_id))
    assert (again.status_code, error_of(again)["code"]) == (400, "batch_ongoing")
    another = submit(client, seed_body(upload(client, lines(1))))
    assert (another.status_code, error_of(another)["code"]) == (429, "too_many_active_batches")
    bad_filter = client.get("/resource_server/v1/batches", params={"status": "in_progress"})
    assert (bad_filter.status_code, error_of(bad_filter)["param"]) == (400, "status")
