"""The store edge: one database (SQLite or PostgreSQL), its schema migrated at start.

`Store`'s plain methods block (they talk to the database): the log writer calls them on
its own worker thread, `usage()` on anyio's.  Its async methods are safe on the loop.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Sequence
from typing import Any

import anyio
import attrs
import sqlalchemy as sa
from sqlalchemy.exc import DataError, IntegrityError

from frontends.store._engine import create_store_engine, dialect_insert, migrate, safe_url
from frontends.store._records import RequestRecord
from frontends.store._schema import request_log

__all__ = ["Store"]

log = logging.getLogger("frontends.store")

_FIELDS = tuple(field.name for field in attrs.fields(RequestRecord))
_values = operator.attrgetter(*_FIELDS)  # a record's values in _FIELDS order, fast


def _insert_ignoring_duplicates(dialect: str) -> sa.Insert:
    """INSERT that skips a record whose id is already stored, so a batch retried after a
    commit whose answer was lost does not fail on its own first copy."""
    return dialect_insert(dialect)(request_log).on_conflict_do_nothing(index_elements=["id"])


class Store:
    """The request log's database.  Build it with `Store.open(url)` (async, off the
    loop) or `Store.connect(url)` (blocking); either applies the migrations first."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._insert = _insert_ignoring_duplicates(engine.dialect.name)

    @classmethod
    def connect(cls, url: str, *, apply_migrations: bool = True) -> Store:
        """Open the database at `url` and bring its schema to the newest (blocking)."""
        engine = create_store_engine(url)
        try:
            if apply_migrations:
                migrate(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    @classmethod
    async def open(cls, url: str, *, apply_migrations: bool = True) -> Store:
        """`connect`, on a worker thread so the event loop keeps running."""
        return await anyio.to_thread.run_sync(
            lambda: cls.connect(url, apply_migrations=apply_migrations)
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def __repr__(self) -> str:
        return f"Store({safe_url(self.engine.url)!r})"

    # -- the request log (blocking) -------------------------------------------------------

    def write_batch(self, records: Sequence[RequestRecord]) -> int:
        """Store the records in one transaction and return how many were stored.

        A record already stored (same id) is skipped and counts as stored.  If the
        database refuses the batch for a record's content, the records are written one
        by one so the refused record costs only itself: it is logged by id (never by
        content) and left out of the count.  Any other error (connection lost, database
        down) propagates, for the caller to retry.
        """
        if not records:
            return 0
        try:
            with self.engine.begin() as connection:
                connection.execute(self._insert, [_row(record) for record in records])
            return len(records)
        except (IntegrityError, DataError):
            pass
        stored = 0
        for record in records:
            try:
                with self.engine.begin() as connection:
                    connection.execute(self._insert, [_row(record)])
                stored += 1
            except (IntegrityError, DataError) as exc:
                log.error(
                    "request log: the database refused record %s (%s)",
                    record.id,
                    type(exc.orig).__name__,
                )
        return stored

    def get(self, request_log_id: str) -> RequestRecord | None:
        """The stored record with this id, or None."""
        query = sa.select(request_log).where(request_log.c.id == request_log_id)
        with self.engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        return None if row is None else RequestRecord(**{name: row[name] for name in _FIELDS})

    def count(self) -> int:
        """How many records the log holds."""
        with self.engine.connect() as connection:
            total = connection.execute(sa.select(sa.func.count()).select_from(request_log))
            return int(total.scalar_one())

    def close(self) -> None:
        """Close the pooled connections (blocking)."""
        self.engine.dispose()

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self.close)


def _row(record: RequestRecord) -> dict[str, Any]:
    return dict(zip(_FIELDS, _values(record), strict=True))
