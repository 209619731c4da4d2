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
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import anyio
import attrs
import sqlalchemy as sa
from sqlalchemy.exc import DataError, IntegrityError

from frontends.store._engine import create_store_engine, dialect_insert, migrate, safe_url
from frontends.store._records import RequestRecord
from frontends.store._schema import UTCDateTime, request_log
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
    event loop needs.  Here the SQL text is made once, and so is the function that turns
    records into the driver's rows: one expression per row, written for this database
    from the columns' types (`_row_code`), handed to the driver's `executemany` as it is.

    The columns' own bind processors are the reference: a time stamp or flag that is not
    of the plain shape the fast expression knows (a UTC `datetime`, `True` or `False`)
    goes through its column's processor, so a row is always what `execute` would have
    bound (a test compares the two)."""

    def __init__(self, dialect: sa.Dialect) -> None:
        compiled = _insert_ignoring_duplicates(dialect.name).compile(dialect=dialect)
        self.sql = str(compiled)
        names = tuple(compiled.positiontup or ()) if compiled.positional else _FIELDS
        scope: dict[str, Any] = {"_datetime": datetime, "_UTC": UTC, "_D2": _TWO_DIGITS}
        parts: list[str] = []
        for index, name in enumerate(names):
            if not name.isidentifier():
                raise ValueError(f"the request log's column {name!r} is not a field name")
            kind = request_log.c[name].type.dialect_impl(dialect)
            process = kind.bind_processor(dialect)
            scope[f"_p{index}"] = process
            parts.append(_row_code(f"r.{name}", f"_p{index}", kind, process, dialect))
        if compiled.positional:
            row = "(" + "".join(f"{part}, " for part in parts) + ")"
        else:
            row = (
                "{"
                + ", ".join(f"{name!r}: {p}" for name, p in zip(names, parts, strict=True))
                + "}"
            )
        code = f"def rows(records):\n    return [{row} for r in records]\n"
        exec(code, scope)  # our own text, built from the table's column names
        self._rows: Callable[[Sequence[RequestRecord]], list[Any]] = scope["rows"]

    def rows(self, records: Sequence[RequestRecord]) -> list[Any]:
        """The records as the driver's parameters: tuples in the SQL's order for a
        positional driver (SQLite's), dicts by column name for a named one (psycopg's)."""
        return self._rows(records)


# "00" to "99": a time stamp's two-digit fields, looked up rather than formatted.
_TWO_DIGITS = tuple(f"{n:02d}" for n in range(100))

# SQLite's text of a UTC `datetime` `v`, `YYYY-MM-DD HH:MM:SS.ffffff`.  `isoformat` (and
# `%` formatting) cost about twice as much: C varargs formatting of each field, and
# `isoformat` writes an offset too, only to be cut off.
_SQLITE_TIME = (
    "f'{str(v.year + 10000)[1:]}-{_D2[v.month]}-{_D2[v.day]} "
    "{_D2[v.hour]}:{_D2[v.minute]}:{_D2[v.second]}.{str(v.microsecond + 1000000)[1:]}'"
)


def _row_code(value: str, processor: str, kind: Any, process: Any, dialect: sa.Dialect) -> str:
    """The expression binding one column's `value` as the driver takes it.

    SQLite keeps a time stamp as text, `YYYY-MM-DD HH:MM:SS.ffffff` in UTC (SQLAlchemy's
    format for its DATETIME, `_SQLITE_TIME`); PostgreSQL takes the UTC `datetime` itself.
    A flag is an integer on SQLite and itself on PostgreSQL.  Anything else goes through
    `processor`, the column's."""
    if process is None:
        return value
    if isinstance(kind, UTCDateTime):
        plain = _SQLITE_TIME if dialect.name == "sqlite" else "v"
        return (
            f"(None if (v := {value}) is None else {plain} "
            f"if v.__class__ is _datetime and v.tzinfo is _UTC else {processor}(v))"
        )
    if isinstance(kind, sa.Boolean):
        true, false = ("1", "0") if not dialect.supports_native_boolean else ("True", "False")
        return f"({true} if (v := {value}) is True else {false} if v is False else {processor}(v))"
    return f"{processor}({value})"


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
