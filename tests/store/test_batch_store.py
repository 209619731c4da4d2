"""The batch store's lease and per-line progress, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import attrs

from frontends.store import LINE_INTERRUPTED, BatchLog, BatchStore, FileRecord, LineOutcome, Store

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)


def _batch(ident: str, owner: str = "ada@example.org", minutes: int = 0) -> BatchLog:
    return BatchLog(
        id=ident,
        user_id=owner,
        input_file="file-1",
        cluster="c",
        framework="api",
        model="m",
        status="validating",
        endpoint="/v1/chat/completions",
        endpoint_slug="c-api-m",
        completion_window="24h",
        identity={"username": owner, "groups": []},
        input_file_id="file-1",
        created_at=NOW + timedelta(minutes=minutes),
        expires_at=NOW + timedelta(hours=24),
        total=3,
    )


def test_one_holder_at_a_time_until_the_lease_expires(store: Store) -> None:
    batches = BatchStore(store.engine)
    assert batches.add_batch(_batch("b1"), max_active=1)
    assert not batches.add_batch(_batch("b2", minutes=1), max_active=1)  # one active per user
    assert batches.add_batch(_batch("b3", owner="bob@example.org", minutes=2), max_active=1)

    first = batches.claim("p1", NOW, LEASE)
    assert first is not None and first.id == "b1" and first.lease_holder == "p1"
    second = batches.claim("p2", NOW, LEASE)
    assert second is not None and second.id == "b3"  # b1 is held
    assert batches.claim("p3", NOW, LEASE) is None
    # p1 dies; once its lease has expired another process takes the batch over.
    later = NOW + LEASE + timedelta(seconds=1)
    taken = batches.claim("p3", later, LEASE, exclude=())
    assert taken is not None and taken.id == "b1" and taken.lease_holder == "p3"
    # The old holder's writes no longer land.
    outcome = LineOutcome(index=0, custom_id="a", ok=True, status=200, body=b"{}")
    assert batches.progress("b1", "p1", [outcome], {"completed": 1}) is None
    assert batches.outcomes("b1") == {}
    stored = batches.progress("b1", "p3", [outcome], {"completed": 1, "status": "in_progress"})
    assert stored is not None and stored.completed == 1 and stored.status == "in_progress"
    # Recording the same line twice keeps the first outcome (a retried write).
    again = attrs.evolve(outcome, ok=False, status=500)
    assert batches.progress("b1", "p3", [again], {}) is not None
    assert batches.outcomes("b1") == {0: True}


def test_a_line_started_counts_as_interrupted_until_its_answer_replaces_it(
    store: Store,
) -> None:
    batches = BatchStore(store.engine)
    batches.add_batch(_batch("b1"), max_active=1)
    assert batches.claim("p1", NOW, LEASE) is not None
    # Lines 0 and 1 are recorded as started, in the transaction before they are sent.
    started = [(0, "a", "batch_req_0"), (1, "b", "batch_req_1")]
    assert batches.progress("b1", "p1", [], {}, starting=started) is not None
    # Were p1 to die now, whoever resumes finds both failed, and sends neither again.
    assert batches.outcomes("b1") == {0: False, 1: False}
    assert [(o.code, o.request_id) for o in batches.lines("b1")] == [
        (LINE_INTERRUPTED, "batch_req_0"),
        (LINE_INTERRUPTED, "batch_req_1"),
    ]
    # Line 0's answer arrives: it replaces the record of the start.
    answer = LineOutcome(
        index=0, custom_id="a", ok=True, status=200, body=b"{}", request_id="batch_req_0"
    )
    assert batches.progress("b1", "p1", [answer], {}) is not None
    assert batches.outcomes("b1") == {0: True, 1: False}
    first = batches.lines("b1")[0]
    assert (first.ok, first.status, first.code, first.body) == (True, 200, None, b"{}")
    # An answer is never replaced, not even by a start recorded again.
    assert batches.progress("b1", "p1", [], {}, starting=[(0, "a", "batch_req_x")]) is not None
    assert batches.outcomes("b1") == {0: True, 1: False}
    # A process that lost the lease records no start (and so sends nothing).
    assert batches.progress("b1", "p2", [], {}, starting=[(2, "c", "batch_req_2")]) is None
    assert 2 not in batches.outcomes("b1")


def test_a_cancel_stays_visible_while_the_runner_writes_progress(store: Store) -> None:
    batches = BatchStore(store.engine)
    batches.add_batch(_batch("b1"), max_active=1)
    assert batches.claim("p1", NOW, LEASE) is not None
    batches.progress("b1", "p1", [], {"status": "in_progress"})
    cancelled = batches.request_cancel("ada@example.org", "b1", NOW)
    assert cancelled is not None and cancelled.status == "cancelling"
    stored = batches.progress("b1", "p1", [], {"status": "in_progress"})
    assert stored is not None and stored.status == "cancelling"
    assert stored.cancelling_at == NOW
    assert batches.request_cancel("bob@example.org", "b1", NOW) is None  # not bob's


def test_files_are_their_owners(store: Store) -> None:
    batches = BatchStore(store.engine)
    record = FileRecord(
        id="file-1",
        owner="ada@example.org",
        purpose="batch",
        filename="in.jsonl",
        bytes=3,
        created_at=NOW,
    )
    batches.add_file(record, b"{}\n")
    assert batches.get_file("ada@example.org", "file-1") == record
    assert batches.file_content("ada@example.org", "file-1") == b"{}\n"
    assert batches.get_file("bob@example.org", "file-1") is None
    assert batches.file_content("bob@example.org", "file-1") is None
    assert not batches.delete_file("bob@example.org", "file-1")
    assert batches.list_files("ada@example.org", purpose="batch") == [record]
    assert batches.delete_file("ada@example.org", "file-1")
    assert batches.list_files("ada@example.org") == []
