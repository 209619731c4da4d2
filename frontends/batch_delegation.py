"""Delegated batches: those whose endpoint adaptor runs the whole file itself (the seed's
`has_batch_enabled` / `submit_batch` / `get_batch_status`), watched from the background.

Theory of operation.  `BatchDelegation.run()` claims unfinished delegated batches from
the store (the built-in runner's lease: one process watches a batch at a time, and a
batch whose process died is taken up by another once its lease expires) and drives each
one's `BatchMachine` in DELEGATED mode, carrying out its effects:

* `SubmitBatch`: the gateway copies the batch's input file (from /v1/files) into a
  directory of its own (`work_dir/<batch id>/input.jsonl`), names the output file beside
  it, and calls `submit_batch(batch_data, username)`.  `batch_data` is the seed's body
  (`input_file`, `model`, `output_folder_path`, exactly as the user sent them) plus the
  gateway's own `batch_id`, `input_path` and `output_path`: an adaptor that runs the
  job from files uses those, never a path a user named.  The submission is stored at
  once (`in_progress_at`, the adaptor's `task_ids`), so a restart polls the job it
  already has instead of submitting a second one.
* `PollStatus`: `get_batch_status(batch)` with the stored `BatchLog` (its `status` in
  the seed's words, as the seed's adaptors read it), every `poll_seconds` whether or
  not anyone asks, and each answer is written to the store with the renewed lease: the
  status the routes show is never older than one interval.
* `CancelDelegated`: the adaptor's `cancel_batch(batch)`, if it has one (an extension;
  the seed's contract has no cancel), then polls until the job has stopped.
* `Finalize` / the end: the job's output file, if it wrote one, becomes the batch's
  output file in the store (its `output_file_id`; the seed's `/result`), the batch's
  final status and time are stored, the lease let go, and the batch's directory removed.

An adaptor's failure to answer a poll changes nothing (the next poll asks again); its
messages pass through `redact` before they are kept.  `stop()` is graceful: each batch's
lease is let go at once, and the jobs keep running where they run.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import attrs

from adaptors.endpoints.endpoint import BaseEndpoint
from core import (
    BatchCancelRequested,
    BatchEffect,
    BatchEvent,
    BatchFinalized,
    BatchMachine,
    BatchMode,
    BatchSpec,
    BatchState,
    BatchSubmitFailed,
    BatchSubmitted,
    CancelDelegated,
    Expired,
    Finalize,
    PollDue,
    PollStatus,
    Started,
    StatusPolled,
    SubmitBatch,
    redact,
    seed_status_of,
)
from frontends.gateway import Gateway
from frontends.store import BatchLog, BatchStore, FileRecord

__all__ = ["BatchDelegation", "delegates_batches"]

log = logging.getLogger("inference_gateway.batches")

_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")
_REASON_LIMIT = 1000


def delegates_batches(adaptor: BaseEndpoint | None) -> bool:
    """Whether batches on this endpoint are delegated to its adaptor (the seed's
    `has_batch_enabled`); an adaptor that raises there does not delegate."""
    if adaptor is None:
        return False
    try:
        return bool(adaptor.has_batch_enabled())
    except Exception:
        log.warning("endpoint %s: has_batch_enabled raised", adaptor.endpoint_slug, exc_info=True)
        return False


def _reason(message: str | None, fallback: str) -> str:
    text = redact(message or "").strip() or fallback
    return text if len(text) <= _REASON_LIMIT else text[: _REASON_LIMIT - 3] + "..."


def _output_counts(content: bytes) -> tuple[int, int]:
    """Lines answered and lines failed in an output file shaped as OpenAI writes them
    (vLLM's batch runner does): a line counts as answered with `"error": null` and a 2xx
    response, as failed otherwise."""
    completed = failed = 0
    for raw in content.splitlines():
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except (ValueError, RecursionError):
            failed += 1
            continue
        response = item.get("response") if isinstance(item, dict) else None
        status = response.get("status_code") if isinstance(response, dict) else None
        answered = status is None or (isinstance(status, int) and 200 <= status < 300)
        if isinstance(item, dict) and item.get("error") is None and answered:
            completed += 1
        else:
            failed += 1
    return completed, failed


class BatchDelegation:
    """Watches the store's delegated batches from one process (see the module docstring)."""

    def __init__(
        self,
        gateway: Gateway,
        store: BatchStore,
        *,
        work_dir: Path,
        poll_seconds: float = 30.0,
        lease_seconds: float | None = None,
        max_batches: int = 1000,
        claim_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
        holder: str | None = None,
    ) -> None:
        if poll_seconds <= 0:
            raise ValueError(f"poll_seconds must be > 0, got {poll_seconds!r}")
        self._gateway = gateway
        self._store = store
        self.work_dir = Path(work_dir)
        self.poll_seconds = poll_seconds
        # A lease outlives a poll and its command's time, so a live watcher keeps it.
        seconds = lease_seconds if lease_seconds is not None else 3 * poll_seconds + 120
        self._lease = timedelta(seconds=max(seconds, 2 * poll_seconds))
        self._max_batches = max_batches
        self._claim_interval = min(claim_interval, poll_seconds)
        self._clock = clock
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._running: dict[str, anyio.Event] = {}  # batch id -> its wake-up
        self._cancels: set[str] = set()
        self._wake: anyio.Event | None = None
        self.stopping = False
        self.polls = 0  # status calls made (a figure for tests and health)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    @property
    def lease(self) -> timedelta:
        return self._lease

    def wake(self, cancelled: str | None = None) -> None:
        """A batch was created (look for work now) or `cancelled` (tell its watcher)."""
        if cancelled is not None:
            self._cancels.add(cancelled)
            event = self._running.get(cancelled)
            if event is not None:
                event.set()
        if self._wake is not None:
            self._wake.set()

    def stop(self) -> None:
        """Stop watching: every batch's lease is let go; the jobs run on."""
        self.stopping = True
        for event in self._running.values():
            event.set()
        if self._wake is not None:
            self._wake.set()

    def woken(self, batch_id: str) -> anyio.Event:
        return self._running[batch_id]

    def rearm(self, batch_id: str) -> None:
        if not self.stopping:
            self._running[batch_id] = anyio.Event()

    def cancel_asked(self, batch_id: str) -> bool:
        return batch_id in self._cancels

    async def run(self, *, stopping: Callable[[], Awaitable[Any]] | None = None) -> None:
        """Watch delegated batches until `stop()` (or until `stopping()` returns)."""
        self._wake = anyio.Event()
        async with anyio.create_task_group() as watcher:
            if stopping is not None:
                watcher.start_soon(self._stop_when, stopping)
            async with anyio.create_task_group() as group:
                while not self.stopping:
                    while len(self._running) < self._max_batches and not self.stopping:
                        batch = await self._claim()
                        if batch is None:
                            break
                        self._running[batch.id] = anyio.Event()
                        group.start_soon(self._watch, batch)
                    with anyio.move_on_after(self._claim_interval):
                        await self._wake.wait()
                    self._wake = anyio.Event()
            watcher.cancel_scope.cancel()

    async def _stop_when(self, stopping: Callable[[], Awaitable[Any]]) -> None:
        await stopping()
        self.stop()

    async def _claim(self) -> BatchLog | None:
        try:
            return await self._store.call(
                self._store.claim,
                self.holder,
                self.now(),
                self._lease,
                exclude=set(self._running),
                mode="delegated",
            )
        except Exception:
            log.warning("batches: cannot claim delegated work from the store", exc_info=True)
            return None

    async def _watch(self, batch: BatchLog) -> None:
        try:
            await DelegatedRun(self, batch).run()
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._store.call(self._store.release, batch.id, self.holder)
            raise
        except Exception:
            log.error(
                "batch %s: watching it failed; its lease will expire", batch.id, exc_info=True
            )
        finally:
            self._running.pop(batch.id, None)
            self._cancels.discard(batch.id)
            if self._wake is not None:
                self._wake.set()

    # -- what a run needs from its watcher -------------------------------------------------

    @property
    def gateway(self) -> Gateway:
        return self._gateway

    @property
    def store(self) -> BatchStore:
        return self._store

    def directory(self, batch_id: str) -> Path:
        """The batch's own directory under `work_dir` (its id is ours, never a user's)."""
        if not _SAFE_ID.fullmatch(batch_id):
            raise ValueError(f"batch id {batch_id!r} cannot name a directory")
        return self.work_dir / batch_id


class DelegatedRun:
    """One delegated batch, watched by one process, from its claim to its end (or the
    watcher's stop)."""

    def __init__(self, delegation: BatchDelegation, batch: BatchLog) -> None:
        self.delegation = delegation
        self.batch = batch
        self.store = delegation.store
        self.adaptor: BaseEndpoint | None = None
        self._result: str | None = None
        self._output: tuple[FileRecord, bytes] | None = None
        self._collected = False
        self._submission: dict[str, Any] | None = None  # to be stored before anything else

    async def run(self) -> None:
        batch, delegation = self.batch, self.delegation
        self.adaptor = delegation.gateway.endpoint_adaptor(batch.endpoint_slug)
        if not delegates_batches(self.adaptor):
            await self._fail("The batch's endpoint no longer runs batches.")
            return
        # No lines of its own: the adaptor runs the file, the output file tells the counts.
        machine = BatchMachine(BatchSpec(batch_id=batch.id, mode=BatchMode.DELEGATED, lines=0))
        submitted = batch.in_progress_at is not None
        first: BatchEvent = Started()
        if not submitted and batch.cancelling_at is not None:
            first = BatchCancelRequested()
        elif not submitted and delegation.now() >= batch.expires_at:
            first = Expired()
        pending: deque[BatchEffect] = deque(machine.receive(first))
        while True:
            while pending:
                event = await self._carry_out(pending.popleft())
                if event is None:
                    continue
                pending.extend(machine.receive(event))
                if self._submission is not None:
                    # Stored before the first poll: a restart must not submit it again.
                    stored = await self._write(machine, **self._submission)
                    self._submission = None
                    if stored is None:
                        log.warning("batch %s: lease lost after submitting it", batch.id)
                        return
                    self.batch = stored
            if machine.finished:
                await self._finish(machine)
                return
            stored = await self._write(machine)
            if stored is None:
                log.warning("batch %s: lease lost; another process watches it now", batch.id)
                return
            self.batch = stored
            if machine.state is BatchState.RUNNING:
                if stored.cancelling_at is not None or delegation.cancel_asked(batch.id):
                    pending.extend(machine.receive(BatchCancelRequested()))
                    continue
                if delegation.now() >= stored.expires_at:
                    pending.extend(machine.receive(Expired()))
                    continue
            if delegation.stopping:
                await self.store.call(self.store.release, batch.id, delegation.holder)
                return
            with anyio.move_on_after(delegation.poll_seconds):
                await delegation.woken(batch.id).wait()
            delegation.rearm(batch.id)
            if delegation.stopping:
                await self.store.call(self.store.release, batch.id, delegation.holder)
                return
            if delegation.cancel_asked(batch.id) and machine.state is BatchState.RUNNING:
                continue  # the write above's read-back turns it into the machine's cancel
            pending.extend(machine.receive(PollDue()))

    async def _write(self, machine: BatchMachine, **values: Any) -> BatchLog | None:
        """Record the machine's status (and `values`) and renew the lease."""
        now = self.delegation.now()
        record: dict[str, Any] = {
            "status": machine.openai_status,
            "lease_expires_at": now + self.delegation.lease,
            **values,
        }
        if self._result is not None:
            record["result"] = self._result
        if machine.state is BatchState.FINALIZING and self.batch.finalizing_at is None:
            record["finalizing_at"] = now
        return await self.store.call(
            self.store.progress, self.batch.id, self.delegation.holder, [], record
        )

    # -- effects --------------------------------------------------------------------------

    async def _carry_out(self, effect: BatchEffect) -> BatchEvent | None:
        if isinstance(effect, SubmitBatch):
            return await self._submit()
        if isinstance(effect, PollStatus):
            return await self._poll()
        if isinstance(effect, CancelDelegated):
            await self._cancel()
            return None
        if isinstance(effect, Finalize):
            await self._collect()
            output = self._output[0].id if self._output is not None else None
            return BatchFinalized(output_file_id=output)
        raise ValueError(f"a delegated batch has no {type(effect).__name__} effect")

    async def _submit(self) -> BatchEvent:
        batch, adaptor = self.batch, self.adaptor
        assert adaptor is not None
        if batch.in_progress_at is not None:  # submitted before this process took it up
            status = seed_status_of(batch.status).value
            return BatchSubmitted(
                task_ids=batch.task_ids,
                status=status if status in ("pending", "running") else None,
            )
        directory = self.delegation.directory(batch.id)
        data: dict[str, Any] = {
            "input_file": batch.input_file,
            "model": batch.model,
            "output_folder_path": batch.output_folder_path,
            "batch_id": batch.id,
            "output_path": str(directory / "output.jsonl"),
        }
        await anyio.to_thread.run_sync(_private_directory, directory)
        if batch.input_file_id:
            content = await self.store.call(
                self.store.file_content, batch.user_id, batch.input_file_id
            )
            if content is None:
                return BatchSubmitFailed(reason="The input file is gone.")
            input_path = directory / "input.jsonl"
            await anyio.to_thread.run_sync(_write_private, input_path, content)
            data["input_path"] = str(input_path)
        try:
            answer = await adaptor.submit_batch(data, batch.user_id)
        except Exception:
            log.warning("batch %s: submit_batch raised", batch.id, exc_info=True)
            return BatchSubmitFailed(reason="The batch could not be submitted.")
        if answer.error_message or answer.error_code:
            return BatchSubmitFailed(
                reason=_reason(answer.error_message, "The batch could not be submitted.")
            )
        self._submission = {
            "task_ids": answer.task_ids,
            "globus_batch_uuid": answer.batch_id,
            "in_progress_at": self.delegation.now(),
        }
        self.batch = attrs.evolve(batch, **self._submission)
        reported = answer.status.value if answer.status is not None else None
        return BatchSubmitted(task_ids=answer.task_ids, status=reported)

    async def _poll(self) -> BatchEvent | None:
        batch, adaptor = self.batch, self.adaptor
        assert adaptor is not None
        # The seed's adaptors read the seed's status words off the record.
        record = attrs.evolve(batch, status=seed_status_of(batch.status).value)
        self.delegation.polls += 1
        try:
            answer = await adaptor.get_batch_status(record)
        except Exception:
            log.warning("batch %s: get_batch_status raised", batch.id, exc_info=True)
            return None
        if answer.status is None:
            log.warning(
                "batch %s: no status from the adaptor: %s",
                batch.id,
                _reason(answer.error_message, "no reason given"),
            )
            return None
        if answer.result is not None:
            failed = answer.status.value == "failed"
            self._result = _reason(answer.result, "") if failed else answer.result
        return StatusPolled(status=answer.status.value, result=self._result)

    async def _cancel(self) -> None:
        cancel = getattr(self.adaptor, "cancel_batch", None)
        if cancel is None:
            log.info("batch %s: its adaptor cannot cancel; waiting for the job", self.batch.id)
            return
        try:
            await cancel(self.batch)
        except Exception:
            log.warning("batch %s: cancel_batch raised", self.batch.id, exc_info=True)

    # -- the end --------------------------------------------------------------------------

    async def _collect(self) -> None:
        """The job's output file, if it wrote one, as a file of the batch's owner."""
        if self._collected:
            return
        self._collected = True
        path = self.delegation.directory(self.batch.id) / "output.jsonl"
        content = await anyio.to_thread.run_sync(_read_if_there, path)
        if content is None:
            return
        record = FileRecord(
            id=f"file-{uuid.uuid4().hex}",
            owner=self.batch.user_id,
            purpose="batch_output",
            filename=f"{self.batch.id}_output.jsonl",
            bytes=len(content),
            created_at=self.delegation.now(),
        )
        self._output = (record, content)

    async def _finish(self, machine: BatchMachine) -> None:
        batch, now = self.batch, self.delegation.now()
        if machine.state is BatchState.COMPLETED:
            await self._collect()
        values: dict[str, Any] = {"status": machine.openai_status, machine.finished_at_field: now}
        if machine.state is BatchState.FAILED:
            values["result"] = _reason(machine.failure, "The batch job failed.")
        elif self._result is not None:
            values["result"] = self._result
        new_files = []
        if self._output is not None:
            record, content = self._output
            completed, failed = _output_counts(content)
            values.update(
                output_file_id=record.id,
                completed=completed,
                failed=failed,
                total=max(batch.total, completed + failed),
            )
            new_files.append(self._output)
        if batch.finalizing_at is None and machine.state is not BatchState.FAILED:
            values["finalizing_at"] = now
        finished = await self.store.call(
            self.store.finish, batch.id, self.delegation.holder, new_files, values
        )
        if not finished:
            log.warning("batch %s: lease lost while finishing", batch.id)
            return
        log.info("batch %s: %s", batch.id, machine.openai_status)
        await anyio.to_thread.run_sync(shutil.rmtree, self.delegation.directory(batch.id), True)

    async def _fail(self, reason: str) -> None:
        values = {"status": "failed", "failed_at": self.delegation.now(), "result": reason}
        await self.store.call(self.store.finish, self.batch.id, self.delegation.holder, [], values)


def _private_directory(directory: Path) -> None:
    """The batch's directory, and the work directory above it, only for the gateway's user."""
    directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.mkdir(mode=0o700, exist_ok=True)


def _write_private(path: Path, content: bytes) -> None:
    """Write the batch's input where only the gateway's user can read it."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(content)


def _read_if_there(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
