"""The status page's figures: the request log's recent finished requests, one query.

Every worker and replica writes to the one request log, so figures read from it are the
same wherever the page is asked.  The query takes the recent successful requests (by the
`received_at` index, newest first, at most `limit` of them) with only the columns the
figures need; the core (`core.endpoint_figures`) turns them into medians and throughput.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import anyio
import sqlalchemy as sa

from core import Sample
from frontends.store._schema import request_log
from frontends.store._store import Store

__all__ = ["fetch_samples", "recent_samples", "samples_query"]

# Enough for steady medians, few enough to read in milliseconds.
DEFAULT_LIMIT = 5000


def samples_query(since: datetime, limit: int = DEFAULT_LIMIT) -> sa.Select[Any]:
    """The successful, finished requests received at `since` or later, newest first."""
    if since.utcoffset() is None:
        raise ValueError("since must be timezone-aware")
    log = request_log.c
    return (
        sa.select(
            log.endpoint_slug,
            log.received_at,
            log.first_byte_at,
            log.done_at,
            log.completion_tokens,
            log.streamed,
        )
        .where(
            log.received_at >= since,
            log.status < 400,
            log.done_at.is_not(None),
            log.endpoint_slug.is_not(None),
            sa.not_(log.cancelled),
        )
        .order_by(log.received_at.desc())
        .limit(limit)
    )


def fetch_samples(store: Store, since: datetime, limit: int = DEFAULT_LIMIT) -> list[Sample]:
    """`recent_samples`, blocking."""
    with store.engine.connect() as connection:
        rows = connection.execute(samples_query(since, limit)).all()
    samples = []
    for row in rows:
        slug, received, first_byte, done, tokens, streamed = tuple(row)
        latency = max(0.0, (done - received).total_seconds())
        first_token = None
        generating = latency
        if streamed and first_byte is not None:
            first_token = max(0.0, (first_byte - received).total_seconds())
            generating = max(0.0, (done - first_byte).total_seconds())
        samples.append(
            Sample(
                slug=slug,
                latency=latency,
                first_token=first_token,
                generating=generating,
                output_tokens=tokens,
            )
        )
    return samples


async def recent_samples(store: Store, since: datetime, limit: int = DEFAULT_LIMIT) -> list[Sample]:
    """The request log's recent successful requests as the core's `Sample`s; the query
    runs on a worker thread, the event loop keeps running; records this process
    submitted before the call are among them (`Store.caught_up`)."""
    await store.caught_up()
    return await anyio.to_thread.run_sync(lambda: fetch_samples(store, since, limit))
