"""A process reads its own writes: the request log's writer lets records gather before
it writes them, yet a usage query or the status page's figures asked for right after a
request count it, on SQLite and PostgreSQL, under asyncio and trio."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from core import LogEntry
from frontends.log_sink import Timing
from frontends.request_log import RequestLog
from frontends.store import Store, recent_samples, usage
from tests.support.log_entries import log_entry

pytestmark = pytest.mark.anyio

HOUR = 3600.0  # a linger no test would outwait


def entry(n: int) -> LogEntry:
    return log_entry(request_id=f"log-{n}")


def timing() -> Timing:
    now = time.time()
    return Timing(received_at=now, first_byte_at=None, done_at=now, request_id=None)


async def test_a_usage_query_right_after_a_request_counts_it_however_long_the_linger(
    store: Store,
) -> None:
    log = RequestLog(store, linger=HOUR)
    async with log.running():
        log.write(entry(1), timing())
        first = await usage(store, user="ada@example.org")
        log.write(entry(2), timing())
        log.write(entry(3), timing())
        second = await usage(store, user="ada@example.org")
    assert [(row.key, row.requests, row.total_tokens) for row in first] == [
        ("ada@example.org", 1, 7)
    ]
    assert [(row.key, row.requests, row.total_tokens) for row in second] == [
        ("ada@example.org", 3, 21)
    ]


async def test_the_status_pages_samples_right_after_a_request_include_it(store: Store) -> None:
    log = RequestLog(store, linger=HOUR)
    since = datetime.now(UTC) - timedelta(minutes=1)
    async with log.running():
        log.write(entry(1), timing())
        samples = await recent_samples(store, since)
    assert [sample.slug for sample in samples] == ["lab-vllm-m"]


async def test_a_store_with_no_running_log_reads_at_once(store: Store) -> None:
    log = RequestLog(store, linger=HOUR)
    async with log.running():
        pass
    log.write(entry(1), timing())  # not running: dropped, nothing to wait for
    assert await usage(store) == []
