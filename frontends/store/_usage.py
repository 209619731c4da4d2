"""Usage: requests and tokens from the request log, grouped by user, model or day.

One SQLAlchemy Core query for both databases; only the day bucket differs (SQLite's
`date()` on the UTC text it keeps, PostgreSQL's `timestamptz` moved to UTC and cast to a
date), chosen by the engine's dialect.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any, Literal

import anyio
import attrs
import sqlalchemy as sa

from frontends.store._schema import request_log
from frontends.store._store import Store

__all__ = ["GroupBy", "UsageRow", "usage", "usage_query"]

GroupBy = Literal["user", "model", "day"]


@attrs.frozen(kw_only=True)
class UsageRow:
    """One group's usage.  `key` is the username, the model, or the UTC day (a `date`);
    None gathers requests with no user or model (refused before one was known).

    `estimated_share` is the part of `total_tokens` the gateway estimated because the
    backend reported no usage (0.0 to 1.0; 0.0 when there are no tokens).
    """

    key: str | date | None
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    estimated_tokens: int

    @property
    def estimated_share(self) -> float:
        return self.estimated_tokens / self.total_tokens if self.total_tokens else 0.0


def _utc_day(dialect: str) -> sa.ColumnElement[date]:
    received = request_log.c.received_at
    if dialect == "sqlite":
        # Kept as UTC text ("2026-11-24 20:26:34.000000"); date() takes its first part.
        return sa.func.date(received, type_=sa.Date)
    if dialect == "postgresql":
        return sa.cast(sa.func.timezone("UTC", received), sa.Date)
    raise ValueError(f"no usage query for database {dialect!r}")


def _since(since: datetime | date) -> datetime:
    if isinstance(since, datetime):
        if since.utcoffset() is None:
            raise ValueError("since must be timezone-aware (or a date, meaning midnight UTC)")
        return since
    return datetime.combine(since, time(), tzinfo=UTC)


def _total(column: sa.ColumnElement[Any]) -> sa.ColumnElement[int]:
    return sa.func.coalesce(sa.func.sum(column), 0)


def usage_query(
    dialect: str,
    *,
    user: str | None = None,
    model: str | None = None,
    since: datetime | date | None = None,
    by: GroupBy = "user",
) -> sa.Select[Any]:
    """The usage query for a database dialect ("sqlite" or "postgresql")."""
    keys: dict[str, sa.ColumnElement[Any]] = {
        "user": request_log.c.username,
        "model": request_log.c.model,
        "day": _utc_day(dialect),
    }
    if by not in keys:
        raise ValueError(f"by must be one of {sorted(keys)}, got {by!r}")
    key = keys[by].label("key")
    estimated = sa.case((request_log.c.tokens_estimated, request_log.c.total_tokens), else_=0)
    query = sa.select(
        key,
        sa.func.count().label("requests"),
        _total(request_log.c.prompt_tokens).label("prompt_tokens"),
        _total(request_log.c.completion_tokens).label("completion_tokens"),
        _total(request_log.c.total_tokens).label("total_tokens"),
        _total(estimated).label("estimated_tokens"),
    )
    if user is not None:
        query = query.where(request_log.c.username == user)
    if model is not None:
        query = query.where(request_log.c.model == model)
    if since is not None:
        query = query.where(request_log.c.received_at >= _since(since))
    return query.group_by(key).order_by(key.asc().nulls_first())


def fetch_usage(
    store: Store,
    *,
    user: str | None = None,
    model: str | None = None,
    since: datetime | date | None = None,
    by: GroupBy = "user",
) -> list[UsageRow]:
    """`usage`, blocking (for the command line, or a worker thread)."""
    query = usage_query(store.dialect, user=user, model=model, since=since, by=by)
    with store.engine.connect() as connection:
        rows = connection.execute(query).mappings().all()
    return [
        UsageRow(
            key=row["key"],
            requests=int(row["requests"]),
            prompt_tokens=int(row["prompt_tokens"]),
            completion_tokens=int(row["completion_tokens"]),
            total_tokens=int(row["total_tokens"]),
            estimated_tokens=int(row["estimated_tokens"]),
        )
        for row in rows
    ]


async def usage(
    store: Store,
    *,
    user: str | None = None,
    model: str | None = None,
    since: datetime | date | None = None,
    by: GroupBy = "user",
) -> list[UsageRow]:
    """Requests and tokens per user, model or UTC day, optionally for one user or model
    and from `since` on (a date means midnight UTC), sorted by key.  The query runs on a
    worker thread; the event loop keeps running.  Every record this process submitted
    before the call is counted (`Store.caught_up`)."""
    await store.caught_up()
    return await anyio.to_thread.run_sync(
        lambda: fetch_usage(store, user=user, model=model, since=since, by=by)
    )
