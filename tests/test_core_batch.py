"""The batch machine: one batch from creation to its one terminal state.

As for the request machine: the table written out here (not read from the
implementation); stories for both ways a batch runs; and a hypothesis state machine
that throws every event at built-in batches and checks the promises — no transition out
of a terminal state, never more lines in flight than the concurrency, no line run twice,
and in every terminal state every line has exactly one outcome, in the output file or
the error file.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from core import (
    BATCH_TABLE,
    BatchCancelRequested,
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
    LineDone,
    LocalProtocolError,
    PollDue,
    PollStatus,
    RunLine,
    SeedStatus,
    Started,
    StatusPolled,
    SubmitBatch,
    WriteResult,
    seed_status_of,
)

B = BatchState
EXPECTED: dict[tuple[BatchState, type[Any]], frozenset[BatchState]] = {
    (B.PENDING, Started): frozenset({B.RUNNING, B.FINALIZING}),
    (B.PENDING, BatchCancelRequested): frozenset({B.FINALIZING}),
    (B.PENDING, Expired): frozenset({B.FINALIZING}),
    (B.RUNNING, LineDone): frozenset({B.RUNNING, B.FINALIZING}),
    (B.RUNNING, BatchSubmitted): frozenset({B.RUNNING}),
    (B.RUNNING, BatchSubmitFailed): frozenset({B.FAILED}),
    (B.RUNNING, PollDue): frozenset({B.RUNNING}),
    (B.RUNNING, StatusPolled): frozenset({B.RUNNING, B.COMPLETED, B.FAILED}),
    (B.RUNNING, BatchCancelRequested): frozenset({B.CANCELLING, B.FINALIZING}),
    (B.RUNNING, Expired): frozenset({B.CANCELLING, B.FINALIZING}),
    (B.CANCELLING, LineDone): frozenset({B.CANCELLING, B.FINALIZING}),
    (B.CANCELLING, StatusPolled): frozenset({B.CANCELLING, B.FINALIZING}),
    (B.CANCELLING, PollDue): frozenset({B.CANCELLING}),
    (B.CANCELLING, BatchCancelRequested): frozenset({B.CANCELLING}),
    (B.CANCELLING, Expired): frozenset({B.CANCELLING}),
    (B.FINALIZING, BatchCancelRequested): frozenset({B.FINALIZING}),
    (B.FINALIZING, Expired): frozenset({B.FINALIZING}),
    (B.FINALIZING, BatchFinalized): frozenset({B.COMPLETED, B.FAILED, B.EXPIRED, B.CANCELLED}),
}
TERMINAL = {B.COMPLETED, B.FAILED, B.EXPIRED, B.CANCELLED}


def builtin(lines: int = 3, concurrency: int = 2) -> BatchMachine:
    spec = BatchSpec(batch_id="b", mode=BatchMode.BUILTIN, lines=lines, concurrency=concurrency)
    return BatchMachine(spec)


def delegated() -> BatchMachine:
    return BatchMachine(BatchSpec(batch_id="b", mode=BatchMode.DELEGATED, lines=0))


def ok(index: int) -> LineDone:
    return LineDone(index=index, ok=True, body=b'{"id": "r"}')


def test_the_table_is_the_expected_one() -> None:
    assert {key: cell.next_states for key, cell in BATCH_TABLE.items()} == EXPECTED
    assert all(state not in TERMINAL for state, _ in BATCH_TABLE)


def test_a_builtin_batch_runs_its_lines_within_its_concurrency_and_finishes() -> None:
    machine = builtin(lines=3, concurrency=2)
    assert (machine.openai_status, machine.seed_status) == ("validating", SeedStatus.pending)
    assert machine.receive(Started()) == (RunLine(index=0), RunLine(index=1))
    assert machine.openai_status == "in_progress"
    assert machine.receive(ok(1)) == (
        WriteResult(index=1, ok=True, status=200, body=b'{"id": "r"}'),
        RunLine(index=2),
    )
    machine.receive(LineDone(index=0, ok=False, status=500, body=b'{"error": {}}'))
    effects = machine.receive(ok(2))
    assert effects[-1] == Finalize(completed=2, failed=1)
    assert machine.openai_status == "finalizing" and machine.seed_status is SeedStatus.running
    machine.receive(BatchFinalized(output_file_id="file-o", error_file_id="file-e"))
    assert machine.state is B.COMPLETED and machine.finished
    assert machine.request_counts == {"total": 3, "completed": 2, "failed": 1}
    assert machine.seed_status is SeedStatus.completed


def test_cancelling_writes_off_what_never_ran_and_waits_for_what_is_running() -> None:
    machine = builtin(lines=5, concurrency=2)
    machine.receive(Started())
    effects = machine.receive(BatchCancelRequested())
    assert [e.index for e in effects if isinstance(e, WriteResult)] == [2, 3, 4]
    assert all(e.code == "batch_cancelled" for e in effects if isinstance(e, WriteResult))
    assert machine.openai_status == "cancelling"
    machine.receive(ok(0))
    assert machine.state is B.CANCELLING
    assert isinstance(machine.receive(ok(1))[-1], Finalize)
    machine.receive(BatchFinalized())
    assert machine.state is B.CANCELLED
    assert machine.request_counts == {"total": 5, "completed": 2, "failed": 3}


def test_an_expired_batch_is_expired_with_its_unrun_lines_in_the_error_file() -> None:
    machine = builtin(lines=2, concurrency=1)
    machine.receive(Started())
    effects = machine.receive(Expired())
    assert effects == (WriteResult(index=1, ok=False, status=0, code="batch_expired"),)
    machine.receive(ok(0))
    machine.receive(BatchFinalized())
    assert (machine.state, machine.openai_status) == (B.EXPIRED, "expired")


def test_a_batch_cancelled_before_it_starts_runs_nothing() -> None:
    machine = builtin(lines=2)
    effects = machine.receive(BatchCancelRequested())
    assert not any(isinstance(e, RunLine) for e in effects)
    assert effects[-1] == Finalize(completed=0, failed=2)


def test_a_resumed_batch_runs_only_the_lines_without_an_outcome() -> None:
    spec = BatchSpec(batch_id="b", mode=BatchMode.BUILTIN, lines=4, concurrency=4)
    machine = BatchMachine.resume(spec, {0: True, 2: False})
    assert machine.receive(Started()) == (RunLine(index=1), RunLine(index=3))
    with pytest.raises(ValueError, match="outside"):
        BatchMachine.resume(spec, {9: True})


def test_a_resumed_batch_with_every_line_done_only_finalises() -> None:
    spec = BatchSpec(batch_id="b", mode=BatchMode.BUILTIN, lines=2)
    machine = BatchMachine.resume(spec, {0: True, 1: True})
    assert machine.receive(Started()) == (Finalize(completed=2, failed=0),)


def test_a_delegated_batch_is_submitted_then_polled_until_the_adaptor_says_it_ended() -> None:
    machine = delegated()
    assert machine.receive(Started()) == (SubmitBatch(),)
    assert machine.receive(BatchSubmitted(task_ids="job-1")) == (PollStatus(),)
    assert machine.receive(StatusPolled(status="running")) == ()
    assert machine.receive(PollDue()) == (PollStatus(),)
    machine.receive(StatusPolled(status="completed", result="/out"))
    assert machine.state is B.COMPLETED and machine.seed_status is SeedStatus.completed


def test_a_delegated_job_reads_pending_while_queued_and_running_once_it_runs() -> None:
    machine = delegated()
    machine.receive(Started())
    machine.receive(BatchSubmitted(task_ids="job-1"))  # no status given: not yet seen running
    assert (machine.openai_status, machine.seed_status) == ("validating", SeedStatus.pending)
    machine.receive(StatusPolled(status="running"))
    assert (machine.openai_status, machine.seed_status) == ("in_progress", SeedStatus.running)
    machine.receive(StatusPolled(status="pending"))  # requeued by its scheduler
    assert machine.seed_status is SeedStatus.pending
    machine.receive(StatusPolled(status="completed"))
    assert (machine.openai_status, machine.seed_status) == ("completed", SeedStatus.completed)


def test_a_submission_that_says_running_reads_running() -> None:
    machine = delegated()
    machine.receive(Started())
    machine.receive(BatchSubmitted(task_ids="job-1", status="running"))
    assert machine.seed_status is SeedStatus.running


@pytest.mark.parametrize(
    ("openai_status", "seed"),
    [
        ("validating", SeedStatus.pending),
        ("in_progress", SeedStatus.running),
        ("finalizing", SeedStatus.running),
        ("cancelling", SeedStatus.running),
        ("completed", SeedStatus.completed),
        ("failed", SeedStatus.failed),
        ("expired", SeedStatus.failed),
        ("cancelled", SeedStatus.failed),
    ],
)
def test_each_stored_openai_status_is_one_seed_status(openai_status: str, seed: SeedStatus) -> None:
    assert seed_status_of(openai_status) is seed


def test_an_unknown_stored_status_is_refused() -> None:
    with pytest.raises(ValueError, match="not an OpenAI batch status"):
        seed_status_of("running")


def test_a_delegated_job_that_fails_fails_the_batch_with_its_reason() -> None:
    machine = delegated()
    machine.receive(Started())
    machine.receive(BatchSubmitted())
    machine.receive(StatusPolled(status="failed", result="node crashed"))
    assert (machine.state, machine.failure) == (B.FAILED, "node crashed")


def test_a_delegated_cancel_asks_the_adaptor_and_waits_for_the_job_to_stop() -> None:
    machine = delegated()
    machine.receive(Started())
    machine.receive(BatchSubmitted())
    assert machine.receive(BatchCancelRequested()) == (CancelDelegated(), PollStatus())
    assert machine.receive(StatusPolled(status="running")) == ()
    assert machine.receive(StatusPolled(status="failed"))[-1] == Finalize(completed=0, failed=0)
    machine.receive(BatchFinalized())
    assert machine.state is B.CANCELLED


@pytest.mark.parametrize(
    "event",
    [ok(0), BatchSubmitted(), PollDue(), StatusPolled(status="running")],
    ids=["line-never-run", "submitted-builtin", "poll-builtin", "status-builtin"],
)
def test_an_event_that_does_not_fit_the_batch_poisons_it(event: Any) -> None:
    machine = builtin(lines=3, concurrency=1)
    machine.receive(Started())
    machine.receive(ok(0))  # line 0 done; line 1 in flight
    with pytest.raises(LocalProtocolError):
        machine.receive(event if not isinstance(event, LineDone) else ok(0))
    assert machine.state is B.ERROR
    with pytest.raises(LocalProtocolError):
        machine.receive(BatchCancelRequested())


# -- every event, any order --------------------------------------------------------------


class BuiltinBatch(RuleBasedStateMachine):
    @initialize(lines=st.integers(0, 6), concurrency=st.integers(1, 3))
    def create(self, lines: int, concurrency: int) -> None:
        self.begin(lines, concurrency)

    def begin(self, lines: int, concurrency: int) -> None:
        self.machine = builtin(lines=lines, concurrency=concurrency)
        self.concurrency = concurrency
        self.handed_out: list[int] = []
        self.written: dict[int, int] = {}
        self.finalize_seen = False

    def feed(self, event: Any) -> None:
        before = self.machine.state
        allowed = EXPECTED.get((before, type(event)))
        try:
            effects = self.machine.receive(event)
        except LocalProtocolError:
            assert allowed is None, f"{type(event).__name__} refused in {before}"
            assert self.machine.state is B.ERROR
            self.begin(self.machine.spec.lines, self.concurrency)  # a new batch goes on
            return
        assert allowed is not None, f"{type(event).__name__} accepted in {before}"
        assert self.machine.state in allowed
        for effect in effects:
            if isinstance(effect, RunLine):
                assert effect.index not in self.handed_out, "a line ran twice"
                self.handed_out.append(effect.index)
            elif isinstance(effect, WriteResult):
                self.written[effect.index] = self.written.get(effect.index, 0) + 1
            elif isinstance(effect, Finalize):
                assert not self.finalize_seen
                self.finalize_seen = True

    @rule()
    def start(self) -> None:
        self.feed(Started())

    @precondition(lambda self: self.machine.in_flight)
    @rule(data=st.data(), success=st.booleans())
    def a_line_finishes(self, data: st.DataObject, success: bool) -> None:
        index = data.draw(st.sampled_from(sorted(self.machine.in_flight)))
        self.feed(LineDone(index=index, ok=success, status=200 if success else 500))

    @rule()
    def cancel(self) -> None:
        self.feed(BatchCancelRequested())

    @rule()
    def expire(self) -> None:
        self.feed(Expired())

    @rule()
    def files_closed(self) -> None:
        self.feed(BatchFinalized())

    @invariant()
    def promises_hold(self) -> None:
        machine = self.machine
        assert len(machine.in_flight) <= self.concurrency
        assert all(count == 1 for count in self.written.values()), "a line written twice"
        assert set(self.written) == set(machine.outcomes)
        if machine.state is B.FINALIZING or machine.finished:
            assert set(self.written) == set(range(machine.spec.lines)), "a line without outcome"
            assert not machine.in_flight
        if machine.finished:
            assert machine.state in TERMINAL and self.finalize_seen
            counts = machine.request_counts
            assert counts["completed"] + counts["failed"] == counts["total"]
        assert seed_status_of(machine.openai_status) is machine.seed_status


TestBuiltinBatch = BuiltinBatch.TestCase


class DelegatedBatch(RuleBasedStateMachine):
    """Every event, any order, at a delegated batch: once terminal it stays so, and the
    seed's status can always be read back from the OpenAI status the store keeps."""

    def __init__(self) -> None:
        super().__init__()
        self.machine = delegated()
        self.ended: BatchState | None = None

    def feed(self, event: Any) -> None:
        before = self.machine.state
        allowed = EXPECTED.get((before, type(event)))
        try:
            self.machine.receive(event)
        except LocalProtocolError:
            assert allowed is None, f"{type(event).__name__} refused in {before}"
            self.machine = delegated()  # a new batch goes on
            self.ended = None
            return
        assert allowed is not None and self.machine.state in allowed
        if self.ended is not None:
            raise AssertionError(f"left terminal state {self.ended}")
        if self.machine.finished:
            self.ended = self.machine.state

    @rule()
    def start(self) -> None:
        self.feed(Started())

    @rule(status=st.none() | st.sampled_from(SeedStatus))
    def submitted(self, status: SeedStatus | None) -> None:
        self.feed(BatchSubmitted(task_ids="job", status=status))

    @rule()
    def submit_failed(self) -> None:
        self.feed(BatchSubmitFailed(reason="refused"))

    @rule()
    def poll_due(self) -> None:
        self.feed(PollDue())

    @rule(status=st.sampled_from(SeedStatus))
    def polled(self, status: SeedStatus) -> None:
        self.feed(StatusPolled(status=status))

    @rule()
    def cancel(self) -> None:
        self.feed(BatchCancelRequested())

    @rule()
    def expire(self) -> None:
        self.feed(Expired())

    @rule()
    def files_closed(self) -> None:
        self.feed(BatchFinalized())

    @invariant()
    def both_vocabularies_agree(self) -> None:
        assert seed_status_of(self.machine.openai_status) is self.machine.seed_status


TestDelegatedBatch = DelegatedBatch.TestCase
