"""The status page's one query over the request log, on SQLite and PostgreSQL: the
recent successful, finished requests, with durations taken, newest first and capped."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anyio
import pytest
import sqlalchemy as sa

from core import Sample
from frontends.store import RequestRecord, Store, fetch_samples, recent_samples, samples_query
from tests.store.factories import T0, record


def _finished(
    n: int, *, seconds: float, first_byte: float | None = None, **fields: Any
) -> RequestRecord:
    received = T0 + timedelta(seconds=n)
    fields.setdefault("endpoint_slug", "c-vllm-m")
    return record(
        n,
        received_at=received,
        done_at=received + timedelta(seconds=seconds),
        first_byte_at=None if first_byte is None else received + timedelta(seconds=first_byte),
        **fields,
    )


def _dataset() -> list[RequestRecord]:
    return [
        _finished(1, seconds=2.0),  # before the window
        _finished(10, seconds=1.5, completion_tokens=30),
        _finished(11, seconds=3.0, first_byte=0.5, streamed=True, completion_tokens=50),
        _finished(12, seconds=1.0, status=429),  # refused: not a figure
        _finished(13, seconds=1.0, cancelled=True),  # cut short: not a figure
        record(14, endpoint_slug="c-vllm-m"),  # not finished
        _finished(15, seconds=1.0, endpoint_slug=None),  # never reached an endpoint
    ]


def test_only_recent_successful_finished_requests_count(store: Store) -> None:
    store.write_batch(_dataset())
    samples = fetch_samples(store, T0 + timedelta(seconds=5))
    assert samples == [
        Sample(slug="c-vllm-m", latency=3.0, first_token=0.5, generating=2.5, output_tokens=50),
        Sample(slug="c-vllm-m", latency=1.5, generating=1.5, output_tokens=30),
    ]
    assert fetch_samples(store, T0 + timedelta(seconds=5), limit=1) == samples[:1]


def test_the_query_reads_by_the_received_at_index(store: Store) -> None:
    compiled = samples_query(T0).compile(store.engine)
    explain = "EXPLAIN QUERY PLAN " if store.dialect == "sqlite" else "EXPLAIN "
    with store.engine.connect() as connection:
        if store.dialect == "postgresql":  # an empty table: make the planner show its index
            connection.execute(sa.text("SET enable_seqscan = off"))
        params: Any = compiled.params
        if compiled.positional:  # SQLite's `?` placeholders take the values in order
            params = tuple(compiled.params[name] for name in compiled.positiontup or ())
        rows = connection.exec_driver_sql(explain + str(compiled), params)
        plan = " ".join(str(row[-1]) for row in rows)
    assert "ix_request_log_received_at" in plan, plan


def test_a_naive_moment_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        samples_query(T0.replace(tzinfo=None))


@pytest.mark.anyio
async def test_the_query_runs_off_the_loop_under_asyncio_and_trio(store: Store) -> None:
    await anyio.to_thread.run_sync(store.write_batch, _dataset())
    assert len(await recent_samples(store, T0 + timedelta(seconds=5))) == 2
