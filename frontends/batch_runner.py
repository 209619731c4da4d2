"""The built-in batch runner: a background task per process that takes batches from the
store and drives each one's `BatchMachine`.

Theory of operation.  `run()` claims unfinished built-in batches (`BatchStore.claim`:
a lease in the database, `FOR UPDATE SKIP LOCKED` on PostgreSQL) up to `max_batches` at
once, and is woken early when the API creates or cancels one (`wake()`).  For each
batch it rebuilds the machine from the line outcomes already stored
(`BatchMachine.resume`), so a batch left behind by a process that died or stopped
carries on without running a finished line again, and then carries out the machine's
effects:

* `RunLine`: the line's body goes through `Gateway.handle`, the path interactive
  traffic takes, as the batch's owner (`Gateway.acting_for`): selection,
  authorization and quotas apply to every line.  Its answer comes back as `LineDone`.
* `WriteResult`: gathered with any other outcomes that arrived meanwhile and written in
  one transaction, together with the counts, the status and a renewed lease.  That
  write also reads the batch back: a cancel the API recorded becomes
  `BatchCancelRequested`; the completion window running out on the runner's clock
  becomes `Expired`.
* `Finalize`: the output and error files are built from the stored outcomes (in input
  order, shaped as OpenAI writes them) and stored with the batch's final state, and the
  lease let go, in one transaction; then `BatchFinalized`.

Every write is conditional on still holding the lease; a runner that lost it (it was
too slow to renew, and another process took the batch) stops working on that batch.
`stop()` is graceful: no new line is started, the lines in flight finish and are
recorded, leases are let go; the lines not started run when the batch is next claimed.

At most once per line.  A process can die (SIGKILL, a lost machine) between sending a
line and recording its answer; the backend may then have run it, and nothing the
gateway keeps can tell.  Running it again would risk a second run (twice the cost, or
twice an effect), so the runner never does: the lines of a `RunLine` are recorded as
started in the same transaction as the progress before them, and only sent once that
is stored.  A line found started but unanswered when the batch is next taken up keeps
that record as its outcome: the error file says `request_interrupted`, and the user
can send it again knowingly.  Lines never started run when the batch resumes; finished
ones are never run again.  A graceful stop loses nothing: its lines in flight finish.

Delegated batches (run by their endpoint's adaptor) are watched by a `BatchDelegation`
handed in as `delegation`: it runs beside this loop, is woken and stopped with it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectSendStream

from core import (
    BatchCancelRequested,
    BatchEffect,
    BatchFinalized,
    BatchMachine,
    BatchMode,
    BatchSpec,
    BatchState,
    ClientError,
    Expired,
    Finalize,
    LineDone,
    RunLine,
    Started,
    WriteResult,
)
from frontends.batch_delegation import BatchDelegation
from frontends.batches import BATCH_URLS, BatchLine, identity_from_json, parse_batch_lines
from frontends.gateway import Gateway, GatewayRequest
from frontends.store import LINE_INTERRUPTED, BatchLog, BatchStore, FileRecord, LineOutcome

__all__ = ["BatchRunner", "output_lines"]

log = logging.getLogger("inference_gateway.batches")

_NO_ANSWER = {
    "batch_cancelled": "The batch was cancelled before this request ran.",
    "batch_expired": "The batch's completion window ended before this request ran.",
    LINE_INTERRUPTED: (
        "The gateway stopped while this request was in flight, so whether the backend ran it "
        "is unknown; it was not sent again, so that no request runs twice."
    ),
}


def _body_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return body.decode("utf-8", "replace")


def output_lines(batch_id: str, outcomes: list[LineOutcome]) -> tuple[bytes, bytes]:
    """The output file (lines answered 2xx) and the error file (the others), each line
    as OpenAI writes it: `{"id", "custom_id", "response", "error"}`."""
    output: list[str] = []
    errors: list[str] = []
    for outcome in outcomes:
        line_id = outcome.request_id or f"batch_req_{batch_id}_{outcome.index}"
        if outcome.code is not None:  # no answer: never ran, or interrupted
            item = {
                "id": line_id,
                "custom_id": outcome.custom_id,
                "response": None,
                "error": {"code": outcome.code, "message": _NO_ANSWER.get(outcome.code, "")},
            }
            errors.append(json.dumps(item))
            continue
        body = _body_json(outcome.body)
        response = {
            "status_code": outcome.status,
            "request_id": outcome.request_id,
            "body": body,
        }
        if outcome.ok:
            item = {"id": line_id, "custom_id": outcome.custom_id, "response": response}
            output.append(json.dumps({**item, "error": None}))
            continue
        detail = body.get("error") if isinstance(body, dict) else None
        detail = detail if isinstance(detail, dict) else {}
        error = {
            "code": detail.get("code") or detail.get("type") or f"http_{outcome.status}",
            "message": detail.get("message") or f"The request failed with HTTP {outcome.status}.",
        }
        errors.append(
            json.dumps(
                {
                    "id": line_id,
                    "custom_id": outcome.custom_id,
                    "response": response,
                    "error": error,
                }
            )
        )
    return (
        "".join(f"{line}\n" for line in output).encode(),
        "".join(f"{line}\n" for line in errors).encode(),
    )


class BatchRunner:
    """Runs the store's built-in batches through one gateway (see the module docstring)."""

    def __init__(
        self,
        gateway: Gateway,
        store: BatchStore,
        *,
        concurrency: int = 8,
        max_batches: int = 4,
        lease_seconds: float = 60.0,
        poll_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
        holder: str | None = None,
        delegation: BatchDelegation | None = None,
    ) -> None:
        self._gateway = gateway
        self.delegation = delegation
        self._store = store
        self._concurrency = concurrency
        self._max_batches = max_batches
        self._lease = timedelta(seconds=lease_seconds)
        self._poll = poll_interval
        self._clock = clock
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._running: set[str] = set()
        self._cancels: set[str] = set()
        self._wake: anyio.Event | None = None
        self._done: anyio.Event | None = None
        self._stopping = False
        self.lines_sent = 0

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def wake(self, cancelled: str | None = None) -> None:
        """Look for work now: a batch was created, or (`cancelled`) this one cancelled.
        A cancel reaches a batch this process runs at once, before any line it has yet to
        start; one run by another process learns of it from the store, at its next write."""
        if cancelled is not None:
            self._cancels.add(cancelled)
        if self._wake is not None:
            self._wake.set()
        if self.delegation is not None:
            self.delegation.wake(cancelled)

    def stop(self) -> None:
        """Stop gracefully: start no new line, finish and record those in flight."""
        self._stopping = True
        self.wake()
        if self.delegation is not None:
            self.delegation.stop()

    async def stop_and_wait(self, timeout: float) -> None:
        """`stop()`, then wait (at most `timeout` seconds) until `run()` has returned: its
        lines in flight answered and recorded, its leases let go."""
        self.stop()
        if self._done is not None:
            with anyio.move_on_after(timeout):
                await self._done.wait()

    async def run(self, *, stopping: Callable[[], Awaitable[Any]] | None = None) -> None:
        """Run batches until `stop()` (or until `stopping()` returns)."""
        self._wake = anyio.Event()
        self._done = anyio.Event()
        try:
            await self._run(stopping)
        finally:
            self._done.set()

    async def _run(self, stopping: Callable[[], Awaitable[Any]] | None) -> None:
        assert self._wake is not None
        async with anyio.create_task_group() as watcher:
            if stopping is not None:
                watcher.start_soon(self._stop_when, stopping)
            if self.delegation is not None:
                watcher.start_soon(self._watch_delegated, self.delegation)
            async with anyio.create_task_group() as group:
                while not self._stopping:
                    while len(self._running) < self._max_batches and not self._stopping:
                        batch = await self._claim()
                        if batch is None:
                            break
                        self._running.add(batch.id)
                        group.start_soon(self._run_batch, batch)
                    with anyio.move_on_after(self._poll):
                        await self._wake.wait()
                    self._wake = anyio.Event()
            watcher.cancel_scope.cancel()

    async def _stop_when(self, stopping: Callable[[], Awaitable[Any]]) -> None:
        await stopping()
        self.stop()

    async def _watch_delegated(self, delegation: BatchDelegation) -> None:
        try:
            await delegation.run()
        except Exception:  # never takes the built-in runner down with it
            log.error("batches: watching delegated batches failed", exc_info=True)

    async def _claim(self) -> BatchLog | None:
        try:
            return await self._store.call(
                self._store.claim, self.holder, self._now(), self._lease, exclude=set(self._running)
            )
        except Exception:
            log.warning("batches: cannot claim work from the store", exc_info=True)
            return None

    async def _run_batch(self, batch: BatchLog) -> None:
        try:
            await BatchRun(self, batch).run()
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._store.call(self._store.release, batch.id, self.holder)
            raise
        except Exception:
            log.error("batch %s: the runner failed; its lease will expire", batch.id, exc_info=True)
        finally:
            self._running.discard(batch.id)
            self._cancels.discard(batch.id)
            self.wake()


class BatchRun:
    """One batch, driven by one runner, from its claim to its end (or the runner's stop)."""

    def __init__(self, runner: BatchRunner, batch: BatchLog) -> None:
        self.runner = runner
        self.batch = batch
        self.store = runner._store
        self._request_ids: dict[int, str] = {}
        self._started: set[int] = set()

    async def run(self) -> None:
        batch, store = self.batch, self.store
        content = await store.call(store.file_content, batch.user_id, batch.input_file_id)
        lines = None if content is None else parse_batch_lines(content, max_lines=batch.total)
        if lines is None or isinstance(lines, ClientError) or len(lines) != batch.total:
            await self._fail("The input file is gone or no longer readable.")
            return
        done = await store.call(store.outcomes, batch.id)
        spec = BatchSpec(
            batch_id=batch.id,
            mode=BatchMode.BUILTIN,
            lines=batch.total,
            concurrency=self.runner._concurrency,
        )
        machine = BatchMachine.resume(spec, done)
        gateway = self.runner._gateway.acting_for(identity_from_json(batch.identity))
        send, receive = anyio.create_memory_object_stream[tuple[LineDone, str]](batch.total + 1)
        # A batch cancelled or expired before it ever ran (or before this process took it
        # up again) starts no line: the machine writes off the lines that have no outcome.
        if batch.cancelling_at is not None:
            first: BatchCancelRequested | Expired | Started = BatchCancelRequested()
        elif self.runner._now() >= batch.expires_at:
            first = Expired()
        else:
            first = Started()
        effects: list[BatchEffect] = list(machine.receive(first))
        values: dict[str, Any] = {}
        if batch.in_progress_at is None:
            values["in_progress_at"] = self.runner._now()
        async with anyio.create_task_group() as group:
            while True:
                outcomes: list[LineOutcome] = []
                starting: dict[int, str] = {}  # index -> its request id
                finalize: Finalize | None = None
                for effect in effects:
                    if isinstance(effect, RunLine):
                        if not self.runner._stopping:
                            starting[effect.index] = f"batch_req_{uuid.uuid4().hex}"
                    elif isinstance(effect, WriteResult):
                        outcomes.append(self._outcome(effect, lines))
                    elif isinstance(effect, Finalize):
                        finalize = effect
                effects = []
                stored = await store.call(
                    store.progress,
                    batch.id,
                    self.runner.holder,
                    outcomes,
                    self._values(machine, values),
                    starting=[(i, lines[i].custom_id, rid) for i, rid in starting.items()],
                )
                values = {}
                if stored is None:
                    log.warning("batch %s: lease lost; another process runs it now", batch.id)
                    group.cancel_scope.cancel()
                    return
                # Recorded as started (at most once per line): only now are they sent.
                for index, request_id in starting.items():
                    self._started.add(index)
                    group.start_soon(self._line, gateway, index, request_id, lines, send)
                if finalize is not None:
                    await self._finalize(machine)
                    return
                if self.runner._stopping and not self._started:
                    await store.call(store.release, batch.id, self.runner.holder)
                    return
                if machine.state is BatchState.RUNNING:
                    if stored.cancelling_at is not None or batch.id in self.runner._cancels:
                        effects = list(machine.receive(BatchCancelRequested()))
                        continue
                    if self.runner._now() >= stored.expires_at:
                        effects = list(machine.receive(Expired()))
                        continue
                with anyio.move_on_after(self.runner._poll):
                    arrived = [await receive.receive()]
                    while True:
                        try:
                            arrived.append(receive.receive_nowait())
                        except anyio.WouldBlock:
                            break
                    if (
                        batch.id in self.runner._cancels and machine.state is BatchState.RUNNING
                    ):  # before the lines' outcomes, so that no further line is handed out
                        effects.extend(machine.receive(BatchCancelRequested()))
                    for event, request_id in arrived:
                        self._started.discard(event.index)
                        self._request_ids[event.index] = request_id
                        effects.extend(machine.receive(event))

    def _values(self, machine: BatchMachine, extra: dict[str, Any]) -> dict[str, Any]:
        counts = machine.request_counts
        values = {
            "status": machine.openai_status,
            "completed": counts["completed"],
            "failed": counts["failed"],
            "lease_expires_at": self.runner._now() + self.runner._lease,
            **extra,
        }
        if machine.state is BatchState.FINALIZING:
            values["finalizing_at"] = self.runner._now()
        return values

    def _outcome(self, effect: WriteResult, lines: list[BatchLine]) -> LineOutcome:
        return LineOutcome(
            index=effect.index,
            custom_id=lines[effect.index].custom_id,
            ok=effect.ok,
            status=effect.status,
            body=effect.body,
            code=effect.code,
            request_id=self._request_ids.get(effect.index),
        )

    async def _line(
        self,
        gateway: Gateway,
        index: int,
        request_id: str,
        lines: list[BatchLine],
        send: MemoryObjectSendStream[tuple[LineDone, str]],
    ) -> None:
        line = lines[index]
        try:
            response = await gateway.handle(
                GatewayRequest(
                    route=BATCH_URLS[line.url],
                    body=json.dumps(line.body).encode(),
                    # On the cluster chosen when the batch was made (the seed's route names it).
                    cluster=self.batch.cluster,
                    framework=self.batch.framework,
                    content_type="application/json",
                    authorization="Bearer batch-owner",
                    request_id=request_id,
                )
            )
            if response.stream is not None:  # refused at upload; never left open
                await response.stream.aclose()
            status, body = response.status, response.body
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:
            log.warning("batch %s line %d: %s", self.batch.id, index, type(exc).__name__)
            status = 500
            body = json.dumps(
                {
                    "error": {
                        "message": "The gateway failed to run this request.",
                        "code": "internal_error",
                    }
                }
            ).encode()
        self.runner.lines_sent += 1
        ok = 200 <= status < 300
        await send.send((LineDone(index=index, ok=ok, status=status, body=body), request_id))

    async def _finalize(self, machine: BatchMachine) -> None:
        batch, store, now = self.batch, self.store, self.runner._now()
        outcomes = await store.call(store.lines, batch.id)
        output, errors = output_lines(batch.id, outcomes)
        new_files: list[tuple[FileRecord, bytes]] = []
        ids: dict[str, str | None] = {"output": None, "error": None}
        for kind, content in (("output", output), ("error", errors)):
            if not content:
                continue
            record = FileRecord(
                id=f"file-{uuid.uuid4().hex}",
                owner=batch.user_id,
                purpose="batch_output",
                filename=f"{batch.id}_{kind}.jsonl",
                bytes=len(content),
                created_at=now,
            )
            ids[kind] = record.id
            new_files.append((record, content))
        machine.receive(BatchFinalized(output_file_id=ids["output"], error_file_id=ids["error"]))
        counts = machine.request_counts
        values: dict[str, Any] = {
            "status": machine.openai_status,
            "completed": counts["completed"],
            "failed": counts["failed"],
            "output_file_id": ids["output"],
            "error_file_id": ids["error"],
            machine.finished_at_field: now,
        }
        if batch.finalizing_at is None:
            values.setdefault("finalizing_at", now)
        if not await store.call(store.finish, batch.id, self.runner.holder, new_files, values):
            log.warning("batch %s: lease lost while finalising", batch.id)

    async def _fail(self, reason: str) -> None:
        now = self.runner._now()
        values = {"status": "failed", "failed_at": now, "result": reason}
        await self.store.call(self.store.finish, self.batch.id, self.runner.holder, [], values)
