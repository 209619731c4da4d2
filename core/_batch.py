"""The batch machine: one batch, from creation to its one terminal state.

Theory of operation
-------------------
A batch runs one of two ways, fixed when it is created:

* **built-in**: the gateway runs each input line through the same adaptor and transport
  as interactive traffic.  The machine hands out lines (`RunLine`) up to the batch's
  concurrency, records each outcome (`WriteResult`, exactly once per line: to the output
  file or the error file), and when every line has one asks for the files to be closed
  (`Finalize`).
* **delegated**: the endpoint adaptor runs the whole file itself (the seed's
  `submit_batch` / `get_batch_status`).  The machine asks for the submission
  (`SubmitBatch`), then for status polls (`PollStatus`) until the adaptor reports a
  terminal status.

Cancellation and expiry (the `completion_window`) stop a batch from either way: lines not
yet run are written to the error file (`batch_cancelled` / `batch_expired`), lines in
flight are waited for (their outcome is still recorded), then the files are finalised.
So in every terminal state every line has exactly one outcome, as OpenAI's batches do.

Time enters only as events (`Expired`, `PollDue`): the machine reads no clock.  Its state
is small data (which lines are done) that the store keeps, so after a crash any process
that holds the batch's lease rebuilds the machine with `BatchMachine.resume` and goes on
without running a finished line again.

OpenAI's statuses and the seed's `BatchStatusEnum` are both read off the state
(`openai_status`, `seed_status`): one machine, two vocabularies.  A delegated job that
its adaptor last reported `pending` (accepted but queued by a scheduler) reads as the
seed's `pending` and OpenAI's `validating`, so the one stored OpenAI status still says
which of the seed's statuses the batch is in (`seed_status_of`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from core._machine import Cell, Kernel, MachineState

__all__ = [
    "BATCH_TABLE",
    "BatchCancelRequested",
    "BatchEffect",
    "BatchEvent",
    "BatchFinalized",
    "BatchMachine",
    "BatchMode",
    "BatchSpec",
    "BatchState",
    "BatchSubmitFailed",
    "BatchSubmitted",
    "CancelDelegated",
    "Expired",
    "Finalize",
    "LineDone",
    "PollDue",
    "PollStatus",
    "RunLine",
    "SeedStatus",
    "Started",
    "StatusPolled",
    "SubmitBatch",
    "WriteResult",
    "seed_status_of",
]


class BatchMode(enum.Enum):
    BUILTIN = "builtin"
    DELEGATED = "delegated"


class BatchState(MachineState):
    PENDING = "pending"
    RUNNING = "running"
    CANCELLING = "cancelling"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    ERROR = "error"


class SeedStatus(str, enum.Enum):  # noqa: UP042 (the seed's BatchStatusEnum values)
    pending = "pending"
    running = "running"
    failed = "failed"
    completed = "completed"


def _positive(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{attribute.name} must be a positive integer, got {value!r}")


def _non_negative(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{attribute.name} must be an integer >= 0, got {value!r}")


_text = attrs.validators.instance_of(str)


@attrs.frozen(kw_only=True)
class BatchSpec:
    """What a batch is, fixed at creation: how it runs, how many lines, how many at once."""

    batch_id: str = attrs.field(validator=_text)
    mode: BatchMode = attrs.field(validator=attrs.validators.instance_of(BatchMode))
    lines: int = attrs.field(validator=_non_negative)  # 0 for a delegated batch
    concurrency: int = attrs.field(default=8, validator=_positive)


# -- events ------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Started:
    """The batch may begin (it was validated and accepted, or a process took its lease)."""


@attrs.frozen(kw_only=True)
class LineDone:
    """A line's request finished: `ok` with the backend's answer, or an error."""

    index: int = attrs.field(validator=_non_negative)
    ok: bool = attrs.field(validator=attrs.validators.instance_of(bool))
    status: int = attrs.field(default=200, validator=_positive)
    body: bytes = attrs.field(default=b"", validator=attrs.validators.instance_of(bytes))


@attrs.frozen(kw_only=True)
class BatchSubmitted:
    """The delegating adaptor accepted the batch (`submit_batch` answered), with the
    status it gave, if any (none reads as pending: not yet seen running)."""

    task_ids: str | None = None
    status: SeedStatus | None = attrs.field(
        default=None, converter=attrs.converters.optional(SeedStatus)
    )


@attrs.frozen(kw_only=True)
class BatchSubmitFailed:
    reason: str = attrs.field(validator=_text)


@attrs.frozen(kw_only=True)
class PollDue:
    """The edge's clock says it is time to ask the adaptor again."""


@attrs.frozen(kw_only=True)
class StatusPolled:
    """The delegating adaptor's answer to `get_batch_status`."""

    status: SeedStatus = attrs.field(converter=SeedStatus)
    result: str | None = None


@attrs.frozen(kw_only=True)
class BatchCancelRequested:
    pass


@attrs.frozen(kw_only=True)
class Expired:
    """The completion window ran out (the edge's clock decided)."""


@attrs.frozen(kw_only=True)
class BatchFinalized:
    """The output and error files are complete."""

    output_file_id: str | None = None
    error_file_id: str | None = None


BatchEvent = (
    Started
    | LineDone
    | BatchSubmitted
    | BatchSubmitFailed
    | PollDue
    | StatusPolled
    | BatchCancelRequested
    | Expired
    | BatchFinalized
)


# -- effects -----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class RunLine:
    """Send input line `index` through the endpoint's adaptor; answer with LineDone."""

    index: int = attrs.field(validator=_non_negative)


@attrs.frozen(kw_only=True)
class WriteResult:
    """Record line `index`'s one outcome: in the output file (`ok`) or the error file.

    `code` names why a line that never ran has none (`batch_cancelled`, `batch_expired`).
    """

    index: int = attrs.field(validator=_non_negative)
    ok: bool
    status: int
    body: bytes = b""
    code: str | None = None


@attrs.frozen(kw_only=True)
class Finalize:
    """Close the output and error files; answer with BatchFinalized."""

    completed: int
    failed: int


@attrs.frozen(kw_only=True)
class SubmitBatch:
    """Hand the whole input to the delegating adaptor (`submit_batch`)."""


@attrs.frozen(kw_only=True)
class PollStatus:
    """Ask the delegating adaptor for the batch's status (`get_batch_status`)."""


@attrs.frozen(kw_only=True)
class CancelDelegated:
    """Tell the delegating adaptor's job to stop (best effort)."""


BatchEffect = RunLine | WriteResult | Finalize | SubmitBatch | PollStatus | CancelDelegated


# -- the table ---------------------------------------------------------------------------

B = BatchState
BATCH_TABLE: Mapping[tuple[BatchState, type[Any]], Cell[BatchState]] = {
    (B.PENDING, Started): Cell("_on_started", B.RUNNING, B.FINALIZING),
    (B.PENDING, BatchCancelRequested): Cell("_on_cancel_before_start", B.FINALIZING),
    (B.PENDING, Expired): Cell("_on_expired_before_start", B.FINALIZING),
    (B.RUNNING, LineDone): Cell("_on_line_done", B.RUNNING, B.FINALIZING),
    (B.RUNNING, BatchSubmitted): Cell("_on_submitted", B.RUNNING),
    (B.RUNNING, BatchSubmitFailed): Cell("_on_submit_failed", B.FAILED),
    (B.RUNNING, PollDue): Cell("_on_poll_due", B.RUNNING),
    (B.RUNNING, StatusPolled): Cell("_on_status", B.RUNNING, B.COMPLETED, B.FAILED),
    (B.RUNNING, BatchCancelRequested): Cell("_on_cancel", B.CANCELLING, B.FINALIZING),
    (B.RUNNING, Expired): Cell("_on_expired", B.CANCELLING, B.FINALIZING),
    (B.CANCELLING, LineDone): Cell("_on_line_done_while_stopping", B.CANCELLING, B.FINALIZING),
    (B.CANCELLING, StatusPolled): Cell("_on_status_while_stopping", B.CANCELLING, B.FINALIZING),
    (B.CANCELLING, PollDue): Cell("_on_poll_due", B.CANCELLING),
    (B.CANCELLING, BatchCancelRequested): Cell("_already_stopping", B.CANCELLING),
    (B.CANCELLING, Expired): Cell("_already_stopping", B.CANCELLING),
    (B.FINALIZING, BatchCancelRequested): Cell("_already_stopping", B.FINALIZING),
    (B.FINALIZING, Expired): Cell("_already_stopping", B.FINALIZING),
    (B.FINALIZING, BatchFinalized): Cell(
        "_on_finalized", B.COMPLETED, B.FAILED, B.EXPIRED, B.CANCELLED
    ),
}
TERMINAL = frozenset({B.COMPLETED, B.FAILED, B.EXPIRED, B.CANCELLED})

_OPENAI_STATUS = {
    B.PENDING: "validating",
    B.RUNNING: "in_progress",
    B.CANCELLING: "cancelling",
    B.FINALIZING: "finalizing",
    B.COMPLETED: "completed",
    B.FAILED: "failed",
    B.EXPIRED: "expired",
    B.CANCELLED: "cancelled",
    B.ERROR: "failed",
}
_SEED_STATUS = {
    B.PENDING: SeedStatus.pending,
    B.RUNNING: SeedStatus.running,
    B.CANCELLING: SeedStatus.running,
    B.FINALIZING: SeedStatus.running,
    B.COMPLETED: SeedStatus.completed,
    B.FAILED: SeedStatus.failed,
    B.EXPIRED: SeedStatus.failed,
    B.CANCELLED: SeedStatus.failed,
    B.ERROR: SeedStatus.failed,
}
_FINISHED_AT_FIELD = {
    B.COMPLETED: "completed_at",
    B.FAILED: "failed_at",
    B.EXPIRED: "expired_at",
    B.CANCELLED: "cancelled_at",
}

# Each OpenAI status belongs to exactly one seed status (checked at import), so the
# stored OpenAI status is enough to answer the seed's routes.
_SEED_BY_OPENAI = {_OPENAI_STATUS[state]: _SEED_STATUS[state] for state in B}
if any(_SEED_BY_OPENAI[_OPENAI_STATUS[state]] is not _SEED_STATUS[state] for state in B):
    raise AssertionError("an OpenAI batch status maps to two seed statuses")


def seed_status_of(openai_status: str) -> SeedStatus:
    """The seed's `BatchStatusEnum` value for a stored OpenAI batch status."""
    try:
        return _SEED_BY_OPENAI[openai_status]
    except KeyError:
        raise ValueError(f"{openai_status!r} is not an OpenAI batch status") from None


Outcome = tuple[BatchState, tuple[BatchEffect, ...]]


class BatchMachine(Kernel[BatchState, BatchEffect]):
    TABLE = BATCH_TABLE
    INITIAL = B.PENDING
    ERROR = B.ERROR
    TERMINAL = TERMINAL

    def __init__(self, spec: BatchSpec) -> None:
        super().__init__()
        self.spec = spec
        self._next = 0  # the lowest line index not yet handed out
        self._in_flight: set[int] = set()
        self._outcomes: dict[int, bool] = {}  # index -> ok
        self._ending: BatchState = B.COMPLETED  # the terminal state finalising leads to
        self._reported: SeedStatus | None = None  # a delegated job's last known status
        self.failure: str | None = None

    @classmethod
    def resume(cls, spec: BatchSpec, done: Mapping[int, bool]) -> BatchMachine:
        """A built-in batch rebuilt from the outcomes the store kept: still PENDING, so a
        `Started` hands out only the lines that have none.  (The runner gives a line a
        failed outcome before sending it, replaced by its answer, so a line that was in
        flight when its process died counts as failed here and is not run twice.)"""
        machine = cls(spec)
        for index, ok in done.items():
            if not 0 <= index < spec.lines:
                raise ValueError(f"line {index} is outside a batch of {spec.lines} lines")
            machine._outcomes[index] = bool(ok)
        return machine

    # -- what the edges read --------------------------------------------------------------

    def _queued(self) -> bool:
        """A delegated job accepted by its adaptor but not yet seen running."""
        return self.state is B.RUNNING and self._reported is SeedStatus.pending

    @property
    def openai_status(self) -> str:
        return "validating" if self._queued() else _OPENAI_STATUS[self.state]

    @property
    def finished_at_field(self) -> str:
        """The OpenAI batch object's time field this terminal state sets (`completed_at`,
        `failed_at`, `expired_at`, `cancelled_at`); a KeyError before the machine ends."""
        return _FINISHED_AT_FIELD[self.state]

    @property
    def seed_status(self) -> SeedStatus:
        return SeedStatus.pending if self._queued() else _SEED_STATUS[self.state]

    @property
    def request_counts(self) -> dict[str, int]:
        """OpenAI's `request_counts`: total, completed, failed."""
        completed = sum(1 for ok in self._outcomes.values() if ok)
        return {
            "total": self.spec.lines,
            "completed": completed,
            "failed": len(self._outcomes) - completed,
        }

    @property
    def outcomes(self) -> Mapping[int, bool]:
        return dict(self._outcomes)

    @property
    def in_flight(self) -> frozenset[int]:
        return frozenset(self._in_flight)

    # -- handlers, one per cell -----------------------------------------------------------

    def _on_started(self, event: Started) -> Outcome:
        if self.spec.mode is BatchMode.DELEGATED:
            return B.RUNNING, (SubmitBatch(),)
        runs = self._hand_out()
        if not runs and self._all_done():
            return self._finalizing(B.COMPLETED)
        return B.RUNNING, runs

    def _on_cancel_before_start(self, event: BatchCancelRequested) -> Outcome:
        return self._finalizing(B.CANCELLED, self._unrun("batch_cancelled"))

    def _on_expired_before_start(self, event: Expired) -> Outcome:
        return self._finalizing(B.EXPIRED, self._unrun("batch_expired"))

    def _on_line_done(self, event: LineDone) -> Outcome:
        write = self._record(event)
        runs = self._hand_out()
        if self._all_done():
            return self._finalizing(B.COMPLETED, (write,))
        return B.RUNNING, (write, *runs)

    def _on_line_done_while_stopping(self, event: LineDone) -> Outcome:
        write = self._record(event)
        if self._in_flight:
            return B.CANCELLING, (write,)
        return self._finalizing(self._ending, (write,))

    def _on_submitted(self, event: BatchSubmitted) -> Outcome:
        self._require(BatchMode.DELEGATED)
        self._reported = event.status or SeedStatus.pending
        return B.RUNNING, (PollStatus(),)

    def _on_submit_failed(self, event: BatchSubmitFailed) -> Outcome:
        self._require(BatchMode.DELEGATED)
        self.failure = event.reason
        return B.FAILED, ()

    def _on_poll_due(self, event: PollDue) -> Outcome:
        self._require(BatchMode.DELEGATED)
        return self.state, (PollStatus(),)

    def _on_status(self, event: StatusPolled) -> Outcome:
        self._require(BatchMode.DELEGATED)
        self._reported = event.status
        if event.status is SeedStatus.completed:
            return B.COMPLETED, ()
        if event.status is SeedStatus.failed:
            self.failure = event.result or "the batch job failed"
            return B.FAILED, ()
        return B.RUNNING, ()

    def _on_status_while_stopping(self, event: StatusPolled) -> Outcome:
        self._require(BatchMode.DELEGATED)
        if event.status in (SeedStatus.pending, SeedStatus.running):
            return B.CANCELLING, ()
        return self._finalizing(self._ending)

    def _on_cancel(self, event: BatchCancelRequested) -> Outcome:
        return self._stop(B.CANCELLED, "batch_cancelled")

    def _on_expired(self, event: Expired) -> Outcome:
        return self._stop(B.EXPIRED, "batch_expired")

    def _already_stopping(self, event: BatchCancelRequested | Expired) -> Outcome:
        """Asked to stop once more, or the window closed while it was stopping or
        finishing anyway: nothing changes (a cancel is not an error to repeat)."""
        return self.state, ()

    def _on_finalized(self, event: BatchFinalized) -> Outcome:
        return self._ending, ()

    # -- helpers --------------------------------------------------------------------------

    def _require(self, mode: BatchMode) -> None:
        if self.spec.mode is not mode:
            raise ValueError(f"a {self.spec.mode.value} batch has no {mode.value} events")

    def _hand_out(self) -> tuple[BatchEffect, ...]:
        runs: list[BatchEffect] = []
        while len(self._in_flight) < self.spec.concurrency and self._next < self.spec.lines:
            index = self._next
            self._next += 1
            if index in self._outcomes:  # resumed: this line finished before
                continue
            self._in_flight.add(index)
            runs.append(RunLine(index=index))
        return tuple(runs)

    def _record(self, event: LineDone) -> WriteResult:
        if event.index not in self._in_flight:
            raise ValueError(f"line {event.index} finished but was not in flight")
        self._in_flight.discard(event.index)
        self._outcomes[event.index] = event.ok
        return WriteResult(index=event.index, ok=event.ok, status=event.status, body=event.body)

    def _all_done(self) -> bool:
        return len(self._outcomes) == self.spec.lines

    def _unrun(self, code: str) -> tuple[BatchEffect, ...]:
        """Write off every line not yet handed out (none for a delegated batch)."""
        writes: list[BatchEffect] = []
        for index in range(self._next, self.spec.lines):
            if index not in self._outcomes:
                self._outcomes[index] = False
                writes.append(WriteResult(index=index, ok=False, status=0, code=code))
        self._next = self.spec.lines
        return tuple(writes)

    def _stop(self, ending: BatchState, code: str) -> Outcome:
        self._ending = ending
        writes = self._unrun(code)
        if self.spec.mode is BatchMode.DELEGATED:
            return B.CANCELLING, (*writes, CancelDelegated(), PollStatus())
        if self._in_flight:
            return B.CANCELLING, writes
        return self._finalizing(ending, writes)

    def _finalizing(self, ending: BatchState, before: Iterable[BatchEffect] = ()) -> Outcome:
        self._ending = ending
        counts = self.request_counts
        finalize = Finalize(completed=counts["completed"], failed=counts["failed"])
        return B.FINALIZING, (*before, finalize)
