"""The store edge: one database (SQLite or PostgreSQL), its schema migrated at start.

`Store`'s plain methods block (they talk to the database): the log writer calls them on
its own worker thread, `usage()` on anyio's.  Its async methods are safe on the loop.

A process reads its own writes: the request log's writer batches records for a while
before it writes them, so the log's async readers (`usage()`, `recent_samples()`) first
await `caught_up()`, which waits for the writers attached to the store (the running
`RequestLog`'s) to write every record submitted before the read.
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
from frontends.store._writer import LogWriter

__all__ = ["Store"]

log = logging.getLogger("frontends.store")

_FIELDS = tuple(field.name for field in attrs.fields(RequestRecord))


def _insert_ignoring_duplicates(dialect: str) -> sa.Insert:
    """INSERT that skips a record whose id is already stored, so a batch retried after a
    commit whose answer was lost does not fail on its own first copy."""
    return dialect_insert(dialect)(request_log).on_conflict_do_nothing(index_elements=["id"])


class _Insert:
    """The request log's INSERT, compiled once for one database, and its rows.

    `Connection.execute` of the statement would compile (from its cache), then build and
    convert every row parameter by parameter in SQLAlchemy's general machinery: about
    three quarters of the writer's time per record, on a thread that holds the GIL the
    event loop needs.  Here the SQL text is made once and each row is one `attrgetter`
    call plus the column types' own bind processors (the time stamps' conversion to UTC,
    the booleans'), handed to the driver's `executemany` as they are."""

    def __init__(self, dialect: sa.Dialect) -> None:
        compiled = _insert_ignoring_duplicates(dialect.name).compile(dialect=dialect)
        self.sql = str(compiled)
        names = tuple(compiled.positiontup or ()) if compiled.positional else _FIELDS
        self._names = names
        self._values = operator.attrgetter(*names)  # a record's values in `names` order
        # Each column type as this database implements it (SQLite's time stamps are
        # text), the same conversion `execute` would have applied.
        types = (request_log.c[name].type.dialect_impl(dialect) for name in names)
        processors = ((i, kind.bind_processor(dialect)) for i, kind in enumerate(types))
        self._processors = tuple((i, p) for i, p in processors if p is not None)
        self._positional = compiled.positional

    def rows(self, records: Sequence[RequestRecord]) -> list[Any]:
        """The records as the driver's parameters: tuples in the SQL's order for a
        positional driver (SQLite's), dicts by column name for a named one (psycopg's)."""
        values, processors, names = self._values, self._processors, self._names
        rows: list[Any] = []
        for record in records:
            row = list(values(record))
            for i, process in processors:
                row[i] = process(row[i])
            rows.append(tuple(row) if self._positional else dict(zip(names, row, strict=True)))
        return rows


class Store:
    """The request log's database.  Build it with `Store.open(url)` (async, off the
    loop) or `Store.connect(url)` (blocking); either applies the migrations first."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._insert = _Insert(engine.dialect)
        self._writers: list[LogWriter] = []

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
                connection.exec_driver_sql(self._insert.sql, self._insert.rows(records))
            return len(records)
        except (IntegrityError, DataError):
            pass
        stored = 0
        for record in records:
            try:
                with self.engine.begin() as connection:
                    connection.exec_driver_sql(self._insert.sql, self._insert.rows([record]))
                stored += 1
            except (IntegrityError, DataError) as exc:
                log.error(
                    "request log: the database refused record %s (%s)",
                    record.id,
                    type(exc.orig).__name__,
                )
        return stored

    # -- reading one's own writes (on the loop) --------------------------------------------

    def attach(self, writer: LogWriter) -> None:
        """Reads wait for this writer's records (until `detach`)."""
        self._writers.append(writer)

    def detach(self, writer: LogWriter) -> None:
        if writer in self._writers:
            self._writers.remove(writer)

    async def caught_up(self) -> None:
        """Wait until the attached writers have written every record submitted before
        this call (bounded: a slow or failing database delays a read, never stops it)."""
        for writer in tuple(self._writers):
            await writer.flushed()

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
