"""SIGKILL in the middle of a built-in batch, then a new `serve` on the same database,
on SQLite and on PostgreSQL.

"Mid-way" is a state the test sets up, not a moment it guesses: the backend answers
only the lines its gate lets through, so at the kill some lines are answered and
recorded, and exactly `CONCURRENCY` more have reached the backend and wait for an answer
that will never be read.  What the runner promises for those (see
`frontends.batch_runner`): at most once per line.  They end in the error file as
`request_interrupted`, with the request id the backend saw, and are not sent again;
every other line runs exactly once.  Counted at the backend.

A graceful stop (SIGTERM), by contrast, loses nothing: the lines in flight finish and
are recorded, so after the restart every line is answered, none interrupted.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.support.batch_processes import (
    TERMINAL,
    backend_counts,
    client,
    create_batch,
    read_lines,
    start_batch_serve,
    wait_until,
)
from tests.support.fake_openai import running_fake_openai

LINES = 200
ANSWERED_BEFORE_THE_KILL = 60
CONCURRENCY = 8


def test_a_killed_gateways_batch_completes_after_a_restart_and_no_line_runs_twice(
    tmp_path: Path, database_url: str
) -> None:
    with running_fake_openai(models=["gated"]) as (fake, backend_url):
        settings = {"batch_concurrency": str(CONCURRENCY), "batch_lease_seconds": "2"}
        first = start_batch_serve(tmp_path / "first", backend_url, database_url, **settings)
        try:
            fake.allow(ANSWERED_BEFORE_THE_KILL)
            with client(first) as c:
                batch_id = create_batch(c, "crash", LINES)

                def mid_way() -> bool:
                    counts = c.batches.retrieve(batch_id).request_counts
                    assert counts is not None
                    return (
                        counts.completed == ANSWERED_BEFORE_THE_KILL
                        and len(fake.held) == CONCURRENCY
                    )

                wait_until(mid_way, "answered lines recorded, the next ones held")
            in_flight = {r.header("x-request-id") for r in fake.held}
            first.kill()
            killed_at = time.monotonic()
        finally:
            if first.running:
                first.kill()
        reached = backend_counts(fake)
        assert sum(reached.values()) == ANSWERED_BEFORE_THE_KILL + CONCURRENCY

        fake.allow(None)  # from now on the backend answers every line at once
        second = start_batch_serve(tmp_path / "second", backend_url, database_url, **settings)
        started_in = time.monotonic() - killed_at
        try:
            with client(second) as c:
                resumed_in = None

                def finished() -> bool:
                    nonlocal resumed_in
                    if resumed_in is None and len(fake.requests) > sum(reached.values()):
                        resumed_in = time.monotonic() - killed_at
                    return c.batches.retrieve(batch_id).status in TERMINAL

                wait_until(finished, "the batch finished after the restart")
                done = c.batches.retrieve(batch_id)
                completed_in = time.monotonic() - killed_at
                output = read_lines(c, done.output_file_id)
                errors = read_lines(c, done.error_file_id)
        finally:
            assert second.stop() == 0, second.log()

    assert done.status == "completed"
    # No line reached the backend twice, and none was lost on the way.
    counts = backend_counts(fake)
    assert [line for line, n in counts.items() if n > 1] == []
    assert sorted(counts) == sorted(f"crash line {i}" for i in range(LINES))
    # Each line has exactly one outcome: the output file or the error file.
    custom_ids = [item["custom_id"] for item in output + errors]
    assert sorted(custom_ids) == sorted(f"crash-{i}" for i in range(LINES))
    # The lines in flight at the kill are the error file, named by the request id the
    # backend saw; every other line was answered.
    assert {item["id"] for item in errors} == in_flight
    assert {item["error"]["code"] for item in errors} == {"request_interrupted"}
    assert all(item["response"] is None for item in errors)
    assert len(output) == LINES - CONCURRENCY
    assert all(item["response"]["status_code"] == 200 for item in output)
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (
        LINES - CONCURRENCY,
        CONCURRENCY,
    )
    print(
        f"\nSIGKILL with {ANSWERED_BEFORE_THE_KILL} of {LINES} lines done and {CONCURRENCY} in "
        f"flight: restarted serve answered in {started_in:.1f} s, first remaining line sent after "
        f"{resumed_in or 0:.1f} s (lease 2 s), batch completed {completed_in:.1f} s after the "
        f"kill; duplicates at the backend: {sum(counts.values()) - len(counts)}"
    )


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_a_gateway_stopped_gracefully_mid_batch_finishes_its_lines_in_flight(
    tmp_path: Path, sqlite_url: str, loop: str
) -> None:
    with running_fake_openai(models=["gated"]) as (fake, backend_url):
        settings = {"batch_concurrency": str(CONCURRENCY), "batch_lease_seconds": "2"}
        first = start_batch_serve(
            tmp_path / "first", backend_url, sqlite_url, loop=loop, **settings
        )
        try:
            fake.allow(ANSWERED_BEFORE_THE_KILL)
            with client(first) as c:
                batch_id = create_batch(c, "stop", LINES)
                wait_until(
                    lambda: len(fake.held) == CONCURRENCY, "the first lines answered, more held"
                )
            fake.allow(None)  # the lines in flight can finish...
            assert first.stop(signal.SIGTERM) == 0, first.log()  # ...and are waited for
        finally:
            if first.running:
                first.kill()
        sent_before_the_restart = sum(backend_counts(fake).values())

        second = start_batch_serve(
            tmp_path / "second", backend_url, sqlite_url, loop=loop, **settings
        )
        try:
            with client(second) as c:
                wait_until(
                    lambda: c.batches.retrieve(batch_id).status in TERMINAL,
                    "the batch finished after the restart",
                )
                done = c.batches.retrieve(batch_id)
                output = read_lines(c, done.output_file_id)
        finally:
            assert second.stop() == 0, second.log()

    assert done.status == "completed"
    assert done.error_file_id is None  # nothing interrupted
    assert sorted(item["custom_id"] for item in output) == sorted(f"stop-{i}" for i in range(LINES))
    counts = backend_counts(fake)
    assert sorted(counts) == sorted(f"stop line {i}" for i in range(LINES))
    assert [line for line, n in counts.items() if n > 1] == []
    assert ANSWERED_BEFORE_THE_KILL + CONCURRENCY <= sent_before_the_restart < LINES
