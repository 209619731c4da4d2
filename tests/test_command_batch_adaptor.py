"""`CommandBatchEndpoint`: the seed's batch contract over configured commands, run for
real (the fake scheduler script and small Python one-liners) under asyncio and trio.

What it promises: a template is split once and filled per argument, so no value becomes
a second argument or a command; the job id is read off the submit command's output; the
job's state word maps onto the seed's statuses; commands time out, and run without the
gateway's environment; a bad config is refused at start, naming the field.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
from pydantic import ValidationError

from adaptors.endpoints.command_batch import CommandBatchConfig, CommandBatchEndpoint
from adaptors.endpoints.endpoint import BatchStatusEnum
from core import ConfigurationError
from frontends.assembly import build_gateway
from frontends.identity import StaticKeys
from tests.support.fake_scheduler import FakeScheduler
from tests.support.gateway_server import write_fixtures, write_tokens
from transports.httpx_transport import HttpxTransport


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@attrs.frozen
class Job:
    """What `get_batch_status` reads: the gateway's BatchLog, reduced to the field used."""

    task_ids: str | None


def endpoint(config: dict[str, Any]) -> CommandBatchEndpoint:
    return CommandBatchEndpoint(
        id="1",
        endpoint_slug="hpc-vllm-m",
        cluster="hpc",
        framework="vllm",
        model="m",
        endpoint_adapter="adaptors.endpoints.command_batch.CommandBatchEndpoint",
        config=config,
    )


def python(code: str, *more: str) -> str:
    return shlex.join([sys.executable, "-c", code, *more])


def batch_data(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    source = tmp_path / "in put.jsonl"
    line = {"custom_id": "a", "body": {"messages": [{"role": "user", "content": "hi"}]}}
    source.write_text(json.dumps(line) + "\n")
    return {
        "input_file": "file-abc",
        "model": "m",
        "output_folder_path": None,
        "batch_id": "batch_1",
        "input_path": str(source),
        "output_path": str(tmp_path / "out.jsonl"),
        **extra,
    }


@pytest.mark.anyio
async def test_a_job_goes_from_submitted_to_completed_through_the_scheduler(
    tmp_path: Path,
) -> None:
    scheduler = FakeScheduler(tmp_path / "scheduler")
    adaptor = endpoint(scheduler.config())
    assert adaptor.has_batch_enabled()
    submitted = await adaptor.submit_batch(batch_data(tmp_path), "alice@example.org")
    assert (submitted.error_message, submitted.status) == (None, BatchStatusEnum.pending)
    [job_id] = scheduler.jobs()
    assert submitted.task_ids == submitted.batch_id == job_id
    job = scheduler.job(job_id)
    assert (job["input"], job["model"]) == (str(tmp_path / "in put.jsonl"), "m")

    for line, status in (("PENDING", "pending"), ("RUNNING", "running")):
        scheduler.set_state(job_id, line)
        answer = await adaptor.get_batch_status(Job(task_ids=job_id))
        assert answer.status == BatchStatusEnum(status)
    scheduler.finish(job_id)
    answer = await adaptor.get_batch_status(Job(task_ids=job_id))
    assert (answer.status, answer.result) == (BatchStatusEnum.completed, None)
    assert scheduler.polls(job_id) == 3


@pytest.mark.anyio
async def test_a_failed_job_says_how_it_ended_and_a_cancel_reaches_the_scheduler(
    tmp_path: Path,
) -> None:
    scheduler = FakeScheduler(tmp_path / "scheduler")
    adaptor = endpoint(scheduler.config())
    job_id = (await adaptor.submit_batch(batch_data(tmp_path), "alice")).task_ids
    scheduler.fail(str(job_id), "NODE_FAIL")
    answer = await adaptor.get_batch_status(Job(task_ids=job_id))
    assert answer.status is BatchStatusEnum.failed
    assert answer.result == "The batch job ended as FAILED NODE_FAIL."

    other = (await adaptor.submit_batch(batch_data(tmp_path), "alice")).task_ids
    assert await adaptor.cancel_batch(Job(task_ids=other))
    assert scheduler.job(str(other))["cancel_asked"]
    answer = await adaptor.get_batch_status(Job(task_ids=other))
    assert answer.status is BatchStatusEnum.failed  # Slurm's CANCELLED


@pytest.mark.anyio
async def test_each_placeholder_fills_its_own_argument_and_nothing_else(tmp_path: Path) -> None:
    seen = tmp_path / "argv.json"
    record = (
        "import json, sys; "
        f"open({str(seen)!r}, 'w').write(json.dumps(sys.argv[1:])); "
        "print('Submitted batch job 42')"
    )
    adaptor = endpoint(
        {
            "submit_command": python(record) + " --in={input} {output} {model} {batch_id}",
            "status_command": python("print('RUNNING')") + " {job_id}",
        }
    )
    data = batch_data(tmp_path, output_path="; rm -rf / $(id) `x` *")
    answer = await adaptor.submit_batch(data, "alice")
    assert answer.task_ids == "42"
    assert json.loads(seen.read_text()) == [
        f"--in={tmp_path / 'in put.jsonl'}",
        "; rm -rf / $(id) `x` *",
        "m",
        "batch_1",
    ]


@pytest.mark.anyio
async def test_a_command_runs_without_the_gateways_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IGW_TEST_BACKEND_KEY", "sk-very-secret")
    monkeypatch.setenv("SCHEDULER_CONF", "/etc/scheduler.conf")
    # The "job" fails with what the command saw as its reason.
    check = (
        "import os; "
        "print('FAILED', 'leaked' if 'IGW_TEST_BACKEND_KEY' in os.environ "
        "else os.environ.get('SCHEDULER_CONF', 'unset'))"
    )
    for passed, seen in ((None, "unset"), (["PATH", "SCHEDULER_CONF"], "/etc/scheduler.conf")):
        config: dict[str, Any] = {
            "submit_command": "true {input}",
            "status_command": python(check, "{job_id}"),
        }
        if passed is not None:
            config["pass_environment"] = passed
        answer = await endpoint(config).get_batch_status(Job(task_ids="7"))
        assert answer.result == f"The batch job ended as FAILED {seen}."


@pytest.mark.anyio
async def test_what_goes_wrong_is_an_error_answer_not_a_status(tmp_path: Path) -> None:
    slow = endpoint(
        {
            "submit_command": "true {input}",
            "status_command": python("import time; time.sleep(60)", "{job_id}"),
            "command_timeout": 0.5,
        }
    )
    answer = await slow.get_batch_status(Job(task_ids="7"))
    assert answer.status is None and answer.error_code == 502
    assert "took longer than 0.5s" in str(answer.error_message)

    odd = endpoint(
        {"submit_command": "true {input}", "status_command": python("print('WEIRD')", "{job_id}")}
    )
    answer = await odd.get_batch_status(Job(task_ids="7"))
    assert answer.status is None and "WEIRD" in str(answer.error_message)

    missing = endpoint(
        {"submit_command": "/no/such/sbatch {input}", "status_command": "/no/such/squeue {job_id}"}
    )
    refused = await missing.submit_batch(batch_data(tmp_path), "alice")
    assert refused.error_code == 502 and "could not be started" in str(refused.error_message)

    scheduler = FakeScheduler(tmp_path / "scheduler")
    adaptor = endpoint(scheduler.config())
    unknown = await adaptor.get_batch_status(Job(task_ids="999"))
    assert unknown.status is None and "exited with 1" in str(unknown.error_message)
    assert "Invalid job id" not in str(unknown.error_message)  # stderr goes to the log only
    no_job = await adaptor.get_batch_status(Job(task_ids="-rf"))  # never an option
    assert no_job.status is None


@pytest.mark.anyio
async def test_a_batch_without_the_gateways_copy_of_a_file_is_refused(tmp_path: Path) -> None:
    scheduler = FakeScheduler(tmp_path / "scheduler")
    adaptor = endpoint(scheduler.config())
    answer = await adaptor.submit_batch({"input_file": "/data/me/in.jsonl", "model": "m"}, "me")
    assert answer.error_code == 400 and "/v1/files" in str(answer.error_message)
    assert scheduler.jobs() == []
    printed_nothing = endpoint(
        {"submit_command": "true {input}", "status_command": "true {job_id}"}
    )
    answer = await printed_nothing.submit_batch(batch_data(tmp_path), "me")
    assert answer.error_code == 502 and "job id" in str(answer.error_message)


@pytest.mark.anyio
async def test_interactive_requests_are_answered_with_where_batches_go() -> None:
    adaptor = endpoint({"submit_command": "true {input}", "status_command": "true {job_id}"})
    answer = await adaptor.submit_task({"model_params": {"model": "m"}})
    assert answer.error_code == 400
    assert "/resource_server/hpc/vllm/v1/batches" in str(answer.error_message)


@pytest.mark.parametrize(
    ("config", "field", "words"),
    [
        ({"submit_command": "sbatch {inptu}"}, "submit_command", "unknown placeholder {inptu}"),
        ({"submit_command": "sbatch run.sh"}, "submit_command", "must use the placeholder {input}"),
        ({"submit_command": "{input} x"}, "submit_command", "command itself"),
        ({"submit_command": "sbatch 'open"}, "submit_command", "cannot be split"),
        ({"status_command": "squeue"}, "status_command", "{job_id}"),
        ({"cancel_command": "scancel {input}"}, "cancel_command", "unknown placeholder"),
        ({"job_id_pattern": "no group"}, "job_id_pattern", "exactly one group"),
        ({"command_timeout": 0}, "command_timeout", "greater than 0"),
        ({"states": {"DONE": "finished"}}, "states", "pending"),
        ({"submit_commmand": "x {input}"}, "submit_commmand", "Extra inputs"),
    ],
)
def test_a_bad_config_is_refused_naming_its_field(
    config: dict[str, Any], field: str, words: str
) -> None:
    good = {"submit_command": "sbatch {input}", "status_command": "squeue {job_id}"}
    with pytest.raises(ValidationError) as refused:
        CommandBatchConfig.model_validate({**good, **config})
    assert refused.value.errors()[0]["loc"][0] == field
    assert words in str(refused.value)


def test_a_bad_config_stops_the_gateway_at_start_naming_file_entry_and_field(
    tmp_path: Path,
) -> None:
    cluster = {
        "cluster_name": "hpc",
        "frameworks": ["vllm"],
        "openai_endpoints": ["chat/completions"],
        "cluster_adapter": "adaptors.clusters.openai_compatible.OpenAICompatibleCluster",
        "config": {"api_url": "http://127.0.0.1:9/v1"},
    }
    entry = {
        "endpoint_slug": "hpc-vllm-m",
        "cluster": "hpc",
        "framework": "vllm",
        "model": "m",
        "endpoint_adapter": "adaptors.endpoints.command_batch.CommandBatchEndpoint",
        "config": {"submit_command": "sbatch job.sh", "status_command": "squeue {job_id}"},
    }
    fixtures = write_fixtures(tmp_path / "fixtures", [cluster], [entry])
    with pytest.raises(ConfigurationError) as refused:
        build_gateway(
            fixtures,
            identity=StaticKeys.from_file(write_tokens(tmp_path)),
            transport=HttpxTransport(),
        )
    message = str(refused.value)
    assert "endpoints.json" in message and "config.submit_command" in message
