"""`CommandBatchEndpoint`: a model whose batches run as one job of a scheduler, started
and watched through commands the operator configures (an `sbatch` wrapper, say).

The seed's optional batch contract, for a cluster reached by commands rather than HTTP:

* `submit_batch` runs `submit_command` with `{input}`, `{output}`, `{model}` (and
  `{batch_id}`) put in; the job id is read off what it prints (`job_id_pattern`).
* `get_batch_status` runs `status_command` with `{job_id}`; the first word it prints is
  the job's state, mapped to the seed's `BatchStatusEnum` (Slurm's state names and the
  seed's own four words are known; `states` adds or overrides words).
* `cancel_batch` (an extension the gateway calls when a batch is cancelled) runs
  `cancel_command`, if there is one.

A command is a template split once, at start, like a shell would (`shlex`), but never
run by a shell: each placeholder is replaced inside its own argument, so a value can
never become a second argument, an option or a command of its own.  Commands run with
a timeout, without the gateway's environment (only the variables `pass_environment`
names, so keys the gateway holds never reach a job), and without blocking the event
loop (`anyio.run_process`, under asyncio and trio alike).

The paths are the gateway's, never a user's: the gateway copies the batch's input (a
file from `/v1/files`) into a directory it owns and names the output file beside it
(`batch_data["input_path"]`, `["output_path"]`); the job's output file becomes the
batch's result.  A batch whose `input_file` is not such a file is refused, which is what
`batch_input_from_files` tells the gateway before it stores the batch.

Interactive requests are not served: this endpoint runs batches only.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from adaptors.endpoints.endpoint import (
    BaseEndpoint,
    BatchStatusEnum,
    GetBatchStatusResponse,
    SubmitBatchResponse,
    SubmitStreamingTaskResponse,
    SubmitTaskResponse,
)

__all__ = ["CommandBatchConfig", "CommandBatchEndpoint", "CommandTemplate"]

log = logging.getLogger("inference_gateway.batches")

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# A job id goes into other commands' arguments: it may not look like an option.
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:;+@-]{0,127}")
_OUTPUT_LIMIT = 300  # characters of a command's output a message may quote

S = BatchStatusEnum
# Slurm's job state names (squeue/sacct), and the seed's own words.
DEFAULT_STATES: Mapping[str, BatchStatusEnum] = {
    **{word: S.pending for word in ("PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD")},
    **{
        word: S.running
        for word in ("RUNNING", "COMPLETING", "SUSPENDED", "STAGE_OUT", "RESIZING", "SIGNALING")
    },
    "COMPLETED": S.completed,
    **{
        word: S.failed
        for word in (
            "FAILED",
            "CANCELLED",
            "TIMEOUT",
            "NODE_FAIL",
            "OUT_OF_MEMORY",
            "PREEMPTED",
            "BOOT_FAIL",
            "DEADLINE",
            "REVOKED",
        )
    },
    **{status.value.upper(): status for status in S},
}
DEFAULT_ENVIRONMENT = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TMPDIR")


class CommandTemplate:
    """A command line split into arguments once; placeholders filled per argument."""

    def __init__(self, template: str, allowed: Iterable[str], required: Iterable[str]) -> None:
        try:
            self.arguments = tuple(shlex.split(template))
        except ValueError as exc:
            raise ValueError(f"cannot be split into arguments ({exc})") from None
        if not self.arguments:
            raise ValueError("names no command")
        allowed = frozenset(allowed)
        used = {name for argument in self.arguments for name in _PLACEHOLDER.findall(argument)}
        unknown = sorted(used - allowed)
        if unknown:
            known = ", ".join(f"{{{name}}}" for name in sorted(allowed))
            raise ValueError(f"has an unknown placeholder {{{unknown[0]}}}; it may use {known}")
        missing = sorted(set(required) - used)
        if missing:
            raise ValueError(f"must use the placeholder {{{missing[0]}}}")
        if _PLACEHOLDER.search(self.arguments[0]):
            raise ValueError("may not take the command itself from a placeholder")

    def render(self, **values: str) -> list[str]:
        """The arguments with each placeholder replaced by its value, in place."""
        return [
            _PLACEHOLDER.sub(lambda match: values[match.group(1)], argument)
            for argument in self.arguments
        ]


class CommandBatchConfig(BaseModel):
    """The `config` of a command-batch entry in `endpoints.json`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    submit_command: str
    status_command: str
    cancel_command: str | None = None
    command_timeout: float = Field(default=60, gt=0)
    job_id_pattern: str = r"(\S+)\s*$"
    states: dict[str, BatchStatusEnum] = Field(default_factory=dict)
    pass_environment: list[str] = Field(default_factory=lambda: list(DEFAULT_ENVIRONMENT))

    @field_validator("submit_command")
    @classmethod
    def _submit(cls, value: str) -> str:
        CommandTemplate(value, ("input", "output", "model", "batch_id"), ("input",))
        return value

    @field_validator("status_command", "cancel_command")
    @classmethod
    def _by_job(cls, value: str | None) -> str | None:
        if value is not None:
            CommandTemplate(value, ("job_id",), ("job_id",))
        return value

    @field_validator("job_id_pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        try:
            compiled = re.compile(value, re.MULTILINE)
        except re.error as exc:
            raise ValueError(f"is not a regular expression ({exc})") from None
        if compiled.groups != 1:
            raise ValueError("must have exactly one group: the job id")
        return value

    @model_validator(mode="after")
    def _words(self) -> CommandBatchConfig:
        for word in self.states:
            if not word.strip() or len(word.split()) != 1:
                raise ValueError(f"states: {word!r} is not one word")
        return self


class _Ran:
    """What a command did: its exit status and output, or why it did not run."""

    def __init__(self, returncode: int | None, stdout: str = "", problem: str = "") -> None:
        self.returncode = returncode
        self.stdout = stdout
        self.problem = problem

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def _quote(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _OUTPUT_LIMIT else text[: _OUTPUT_LIMIT - 3] + "..."


class CommandBatchEndpoint(BaseEndpoint):
    """Runs each batch as one scheduler job through configured commands."""

    # The gateway copies the input from /v1/files; any other `input_file` is refused.
    batch_input_from_files = True

    def __init__(
        self,
        id: str,
        endpoint_slug: str,
        cluster: str,
        framework: str,
        model: str,
        endpoint_adapter: str,
        allowed_globus_groups: str | Iterable[str] | None = None,
        allowed_domains: str | Iterable[str] | None = None,
        config: Mapping[str, Any] | CommandBatchConfig | None = None,
    ) -> None:
        super().__init__(
            id,
            endpoint_slug,
            cluster,
            framework,
            model,
            endpoint_adapter,
            allowed_globus_groups,
            allowed_domains,
        )
        self._config = (
            config
            if isinstance(config, CommandBatchConfig)
            else CommandBatchConfig.model_validate(dict(config or {}))
        )
        c = self._config
        self._submit = CommandTemplate(
            c.submit_command, ("input", "output", "model", "batch_id"), ()
        )
        self._status = CommandTemplate(c.status_command, ("job_id",), ())
        self._cancel = (
            None if c.cancel_command is None else CommandTemplate(c.cancel_command, ("job_id",), ())
        )
        self._job_id = re.compile(c.job_id_pattern, re.MULTILINE)
        self._states = {**DEFAULT_STATES, **{k.upper(): v for k, v in c.states.items()}}

    @property
    def config(self) -> CommandBatchConfig:
        return self._config

    # -- interactive: not served ----------------------------------------------------------

    def _batch_only(self) -> str:
        return (
            f"The model {self.model} on {self.cluster}/{self.framework} runs batches only: "
            f"POST /resource_server/{self.cluster}/{self.framework}/v1/batches."
        )

    async def submit_task(self, data: dict[str, Any]) -> SubmitTaskResponse:
        return SubmitTaskResponse(error_message=self._batch_only(), error_code=400)

    async def submit_streaming_task(
        self, data: dict[str, Any], request_log_id: str
    ) -> SubmitStreamingTaskResponse:
        return SubmitStreamingTaskResponse(error_message=self._batch_only(), error_code=400)

    # -- batches --------------------------------------------------------------------------

    def has_batch_enabled(self) -> bool:
        return True

    async def submit_batch(self, batch_data: dict[str, Any], username: str) -> SubmitBatchResponse:
        input_path = batch_data.get("input_path")
        output_path = batch_data.get("output_path")
        if not isinstance(input_path, str) or not isinstance(output_path, str):
            return SubmitBatchResponse(
                error_message="'input_file' must be the id of a file uploaded to /v1/files "
                'with purpose "batch".',
                error_code=400,
            )
        batch_id = str(batch_data.get("batch_id") or "")
        arguments = self._submit.render(
            input=input_path, output=output_path, model=self.model, batch_id=batch_id
        )
        ran = await self._run(arguments, "submit")
        if not ran.ok:
            return SubmitBatchResponse(
                error_message=f"The batch job could not be submitted: {ran.problem}",
                error_code=502,
            )
        found = self._job_id.search(ran.stdout)
        job_id = found.group(1) if found else None
        if job_id is None or not _JOB_ID.fullmatch(job_id):
            return SubmitBatchResponse(
                error_message="The submit command did not print a job id the gateway can use.",
                error_code=502,
            )
        log.info("endpoint %s: batch %s is job %s", self.endpoint_slug, batch_id, job_id)
        return SubmitBatchResponse(batch_id=job_id, task_ids=job_id, status=S.pending)

    async def get_batch_status(self, batch: Any) -> GetBatchStatusResponse:
        job_id = _job_of(batch)
        if job_id is None:
            return GetBatchStatusResponse(error_message="The batch has no job id.", error_code=500)
        ran = await self._run(self._status.render(job_id=job_id), "status")
        if not ran.ok:
            return GetBatchStatusResponse(
                error_message=f"The job's status could not be read: {ran.problem}",
                error_code=502,
            )
        line = next((text.strip() for text in ran.stdout.splitlines() if text.strip()), "")
        word = line.split()[0].rstrip("+").upper() if line else ""
        status = self._states.get(word)
        if status is None:
            return GetBatchStatusResponse(
                error_message=f"The status command printed a state the gateway does not know: "
                f"{_quote(line) or '(nothing)'}",
                error_code=502,
            )
        result = f"The batch job ended as {_quote(line)}." if status is S.failed else None
        return GetBatchStatusResponse(status=status, result=result)

    async def cancel_batch(self, batch: Any) -> bool:
        """Ask the scheduler to stop the batch's job; False if that cannot be done."""
        job_id = _job_of(batch)
        if self._cancel is None or job_id is None:
            return False
        ran = await self._run(self._cancel.render(job_id=job_id), "cancel")
        if not ran.ok:
            log.warning(
                "endpoint %s: cancel of job %s: %s", self.endpoint_slug, job_id, ran.problem
            )
        return ran.ok

    # -- running a command ----------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        """Only the variables the config lets through: never the gateway's secrets."""
        return {n: os.environ[n] for n in self._config.pass_environment if n in os.environ}

    async def _run(self, arguments: Sequence[str], what: str) -> _Ran:
        seconds = self._config.command_timeout
        try:
            with anyio.fail_after(seconds):
                done = await anyio.run_process(
                    list(arguments),
                    check=False,
                    env=self._environment(),
                    stdin=subprocess.DEVNULL,
                )
        except TimeoutError:
            return _Ran(None, problem=f"the {what} command took longer than {seconds:g}s")
        except OSError as exc:
            return _Ran(None, problem=f"the {what} command could not be started ({exc.strerror})")
        stdout = done.stdout.decode("utf-8", "replace")
        if done.returncode != 0:
            # What it said goes to the operator's log only: it may name the gateway's paths.
            log.warning(
                "endpoint %s: the %s command exited with %d: %s",
                self.endpoint_slug,
                what,
                done.returncode,
                _quote(done.stderr.decode("utf-8", "replace")),
            )
            return _Ran(
                done.returncode, stdout, f"the {what} command exited with {done.returncode}"
            )
        return _Ran(0, stdout)


def _job_of(batch: Any) -> str | None:
    """The job id `submit_batch` gave, as the gateway stored it in the batch's task_ids."""
    job_id = getattr(batch, "task_ids", None)
    if isinstance(job_id, str) and _JOB_ID.fullmatch(job_id):
        return job_id
    return None
