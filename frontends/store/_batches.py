"""Files and batches in the store: OpenAI's files (content in the database), batches
(`BatchLog`, with the seed system's field names) and each line's outcome.

Every method of `BatchStore` blocks (it talks to the database); `BatchStore.call` runs
one on a worker thread so the event loop keeps running.  Progress is kept per line,
written as it happens, so a batch picked up again after a restart rebuilds its machine
from what is stored (`outcomes`) and runs only the lines that have none.

One process runs a batch at a time: `claim` takes a batch whose lease is free or expired
and writes its own name and a new expiry; on PostgreSQL the row is read with
`SELECT ... FOR UPDATE SKIP LOCKED`, so two processes claiming together never take the
same batch.  SQLite has no row locks: one gateway process per SQLite file is assumed.
Every write of a running batch is conditional on still holding its lease.

At most once per line: a line is recorded as started (`progress(..., starting=...)`)
before it is sent, as a row holding the outcome it keeps if its answer is never recorded
(`LINE_INTERRUPTED`, a failure); its answer replaces that row.  So a line that was in
flight when its process died (it may or may not have reached the backend) has an
outcome, the error file's, and no process sends it again.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar

import anyio
import attrs
import sqlalchemy as sa

from frontends.store._engine import dialect_insert
from frontends.store._schema import batch_lines, batches, files

__all__ = [
    "ACTIVE_STATUSES",
    "LINE_INTERRUPTED",
    "BatchLog",
    "BatchStore",
    "FileRecord",
    "LineOutcome",
]

P = ParamSpec("P")
T = TypeVar("T")

# OpenAI's statuses of a batch that is not yet finished.
ACTIVE_STATUSES = ("validating", "in_progress", "finalizing", "cancelling")
# The code of a line started but never answered as far as the store knows.
LINE_INTERRUPTED = "request_interrupted"


@attrs.frozen(kw_only=True)
class FileRecord:
    """A stored file, without its content (read that with `BatchStore.file_content`)."""

    id: str
    owner: str
    purpose: str
    filename: str
    bytes: int
    created_at: datetime
    status: str = "processed"


@attrs.frozen(kw_only=True)
class BatchLog:
    """One batch: the seed system's `BatchLog` fields (what its `get_batch_status`
    receives), then what OpenAI's batch object needs, then the runner's lease."""

    id: str
    access_log_id: str | None = None
    user_id: str
    input_file: str
    output_folder_path: str | None = None
    cluster: str
    framework: str
    model: str
    globus_batch_uuid: str | None = None
    task_ids: str | None = None
    result: str | None = None
    status: str
    in_progress_at: datetime | None = None
    completed_at: datetime | None = None
    failed_at: datetime | None = None
    endpoint: str
    endpoint_slug: str
    completion_window: str
    metadata: Mapping[str, str] | None = None
    identity: Mapping[str, Any]
    input_file_id: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: datetime
    expires_at: datetime
    cancelling_at: datetime | None = None
    cancelled_at: datetime | None = None
    finalizing_at: datetime | None = None
    expired_at: datetime | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    mode: str = "builtin"
    lease_holder: str | None = None
    lease_expires_at: datetime | None = None


@attrs.frozen(kw_only=True)
class LineOutcome:
    """One line's one outcome: the backend's answer (`ok` or not), or why it never ran."""

    index: int
    custom_id: str
    ok: bool
    status: int
    body: bytes = b""
    code: str | None = None
    request_id: str | None = None


_FILE_FIELDS = tuple(f.name for f in attrs.fields(FileRecord))
_BATCH_FIELDS = tuple(f.name for f in attrs.fields(BatchLog))
_FILE_COLUMNS = [files.c[name] for name in _FILE_FIELDS]


def _file(row: Mapping[Any, Any]) -> FileRecord:
    return FileRecord(**{name: row[name] for name in _FILE_FIELDS})


def _batch(row: Mapping[Any, Any]) -> BatchLog:
    return BatchLog(**{name: row[name] for name in _BATCH_FIELDS})


class BatchStore:
    """Files, batches and line outcomes on the store's engine (blocking methods)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        insert = dialect_insert(engine.dialect.name)
        # A line's answer replaces the row that says it started, and nothing else: an
        # outcome once recorded stays.
        insert_lines = insert(batch_lines)
        self._insert_lines = insert_lines.on_conflict_do_update(
            index_elements=["batch_id", "line_index"],
            set_={
                name: insert_lines.excluded[name]
                for name in ("ok", "status", "code", "request_id", "body")
            },
            where=batch_lines.c.code == LINE_INTERRUPTED,
        )
        self._limiter = anyio.CapacityLimiter(8)

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run one of the blocking methods on a worker thread."""
        return await anyio.to_thread.run_sync(
            functools.partial(fn, *args, **kwargs), limiter=self._limiter
        )

    # -- files ----------------------------------------------------------------------------

    def add_file(self, record: FileRecord, content: bytes) -> None:
        with self.engine.begin() as connection:
            connection.execute(files.insert().values(**attrs.asdict(record), content=content))

    def get_file(self, owner: str, file_id: str) -> FileRecord | None:
        query = sa.select(*_FILE_COLUMNS).where(files.c.id == file_id, files.c.owner == owner)
        with self.engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        return None if row is None else _file(row)

    def file_content(self, owner: str, file_id: str) -> bytes | None:
        query = sa.select(files.c.content).where(files.c.id == file_id, files.c.owner == owner)
        with self.engine.connect() as connection:
            content = connection.execute(query).scalar_one_or_none()
        return None if content is None else bytes(content)

    def list_files(
        self,
        owner: str,
        *,
        purpose: str | None = None,
        limit: int = 10_000,
        after: str | None = None,
        ascending: bool = False,
    ) -> list[FileRecord]:
        """The owner's files, newest first (oldest first if `ascending`), from the one
        after `after` on (none if the owner has no such file)."""
        query = sa.select(*_FILE_COLUMNS).where(files.c.owner == owner)
        if purpose is not None:
            query = query.where(files.c.purpose == purpose)
        if after is not None:
            anchor = self.get_file(owner, after)
            if anchor is None:
                return []
            beyond = operator.gt if ascending else operator.lt
            query = query.where(
                sa.or_(
                    beyond(files.c.created_at, anchor.created_at),
                    sa.and_(files.c.created_at == anchor.created_at, beyond(files.c.id, anchor.id)),
                )
            )
        if ascending:
            query = query.order_by(files.c.created_at, files.c.id)
        else:
            query = query.order_by(files.c.created_at.desc(), files.c.id.desc())
        with self.engine.connect() as connection:
            return [_file(row) for row in connection.execute(query.limit(limit)).mappings()]

    def delete_file(self, owner: str, file_id: str) -> bool:
        with self.engine.begin() as connection:
            result = connection.execute(
                files.delete().where(files.c.id == file_id, files.c.owner == owner)
            )
        return result.rowcount > 0

    # -- batches: the API's side ----------------------------------------------------------

    def add_batch(self, batch: BatchLog, *, max_active: int) -> bool:
        """Store a new batch unless its owner has `max_active` unfinished ones already."""
        with self.engine.begin() as connection:
            active = connection.execute(
                sa.select(sa.func.count())
                .select_from(batches)
                .where(batches.c.user_id == batch.user_id, batches.c.status.in_(ACTIVE_STATUSES))
            ).scalar_one()
            if active >= max_active:
                return False
            connection.execute(batches.insert().values(**attrs.asdict(batch, recurse=False)))
        return True

    def get_batch(self, batch_id: str, *, owner: str | None = None) -> BatchLog | None:
        query = sa.select(batches).where(batches.c.id == batch_id)
        if owner is not None:
            query = query.where(batches.c.user_id == owner)
        with self.engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        return None if row is None else _batch(row)

    def list_batches(self, owner: str, *, after: str | None, limit: int) -> list[BatchLog]:
        """The owner's batches, newest first, from the one after `after` on."""
        query = sa.select(batches).where(batches.c.user_id == owner)
        if after is not None:
            anchor = self.get_batch(after, owner=owner)
            if anchor is None:
                return []
            query = query.where(
                sa.or_(
                    batches.c.created_at < anchor.created_at,
                    sa.and_(batches.c.created_at == anchor.created_at, batches.c.id < anchor.id),
                )
            )
        query = query.order_by(batches.c.created_at.desc(), batches.c.id.desc()).limit(limit)
        with self.engine.connect() as connection:
            return [_batch(row) for row in connection.execute(query).mappings()]

    def request_cancel(self, owner: str, batch_id: str, now: datetime) -> BatchLog | None:
        """Mark an unfinished batch `cancelling` (the runner that holds it stops it); a
        finished one is left as it is.  None if the owner has no such batch."""
        with self.engine.begin() as connection:
            connection.execute(
                batches.update()
                .where(
                    batches.c.id == batch_id,
                    batches.c.user_id == owner,
                    batches.c.status.in_(("validating", "in_progress")),
                )
                .values(status="cancelling", cancelling_at=now)
            )
        return self.get_batch(batch_id, owner=owner)

    def batches_of(
        self, owner: str, *, statuses: Collection[str] | None = None, limit: int = 10_000
    ) -> list[BatchLog]:
        """The owner's batches, oldest first (the seed's list), optionally only those in
        one of `statuses` (stored OpenAI statuses)."""
        query = sa.select(batches).where(batches.c.user_id == owner)
        if statuses is not None:
            query = query.where(batches.c.status.in_(list(statuses)))
        query = query.order_by(batches.c.created_at, batches.c.id).limit(limit)
        with self.engine.connect() as connection:
            return [_batch(row) for row in connection.execute(query).mappings()]

    def unfinished_with_input(self, owner: str, input_file: str) -> BatchLog | None:
        """An unfinished batch of the owner's that reads `input_file`, if any (the seed
        refuses a second batch on the same input while one runs)."""
        query = (
            sa.select(batches)
            .where(
                batches.c.user_id == owner,
                batches.c.input_file == input_file,
                batches.c.status.in_(ACTIVE_STATUSES),
            )
            .limit(1)
        )
        with self.engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        return None if row is None else _batch(row)

    # -- batches: the runner's side -------------------------------------------------------

    def claim(
        self,
        holder: str,
        now: datetime,
        lease: timedelta,
        *,
        exclude: Collection[str] = (),
        mode: str = "builtin",
    ) -> BatchLog | None:
        """Take the oldest unfinished batch run this way (`mode`; not one of `exclude`,
        those `holder` runs already) whose lease is free or expired, and hold it until
        `now + lease`."""
        query = (
            sa.select(batches)
            .where(
                batches.c.status.in_(ACTIVE_STATUSES),
                batches.c.mode == mode,
                sa.or_(batches.c.lease_holder.is_(None), batches.c.lease_expires_at < now),
                batches.c.id.not_in(list(exclude)),
            )
            .order_by(batches.c.created_at, batches.c.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        with self.engine.begin() as connection:
            row = connection.execute(query).mappings().first()
            if row is None:
                return None
            connection.execute(
                batches.update()
                .where(batches.c.id == row["id"])
                .values(lease_holder=holder, lease_expires_at=now + lease)
            )
        return attrs.evolve(_batch(row), lease_holder=holder, lease_expires_at=now + lease)

    def outcomes(self, batch_id: str) -> dict[int, bool]:
        query = sa.select(batch_lines.c.line_index, batch_lines.c.ok).where(
            batch_lines.c.batch_id == batch_id
        )
        with self.engine.connect() as connection:
            return {int(i): bool(ok) for i, ok in connection.execute(query)}

    def lines(self, batch_id: str) -> list[LineOutcome]:
        query = (
            sa.select(batch_lines)
            .where(batch_lines.c.batch_id == batch_id)
            .order_by(batch_lines.c.line_index)
        )
        with self.engine.connect() as connection:
            return [
                LineOutcome(
                    index=row["line_index"],
                    custom_id=row["custom_id"],
                    ok=row["ok"],
                    status=row["status"],
                    body=bytes(row["body"]),
                    code=row["code"],
                    request_id=row["request_id"],
                )
                for row in connection.execute(query).mappings()
            ]

    def progress(
        self,
        batch_id: str,
        holder: str,
        outcomes: Sequence[LineOutcome],
        values: Mapping[str, Any],
        *,
        starting: Sequence[tuple[int, str, str]] = (),
    ) -> BatchLog | None:
        """In one transaction: record these outcomes, record the lines `starting`
        (index, custom_id, request_id) as started (see the module docstring), and set
        `values` on the batch, if `holder` still holds it.  The batch as stored
        afterwards (the runner reads a cancel request from it), or None when the lease
        was lost (and then no line may be sent)."""
        values = {**values, "lease_holder": holder}  # never an empty SET
        status = values.get("status")
        if status in ("validating", "in_progress"):
            # A cancel the API wrote meanwhile stays visible until the runner reads it.
            values["status"] = sa.case(
                (batches.c.status == "cancelling", "cancelling"), else_=status
            )
        with self.engine.begin() as connection:
            updated = connection.execute(
                batches.update()
                .where(batches.c.id == batch_id, batches.c.lease_holder == holder)
                .values(**values)
            )
            if updated.rowcount == 0:
                return None
            rows = [_line_row(batch_id, o) for o in outcomes]
            rows += [_started_row(batch_id, *line) for line in starting]
            if rows:
                connection.execute(self._insert_lines, rows)
            row = (
                connection.execute(sa.select(batches).where(batches.c.id == batch_id))
                .mappings()
                .first()
            )
        return None if row is None else _batch(row)

    def finish(
        self,
        batch_id: str,
        holder: str,
        new_files: Iterable[tuple[FileRecord, bytes]],
        values: Mapping[str, Any],
    ) -> bool:
        """Store the output/error files and the batch's final values together, and let go
        of the lease; False (nothing stored) when the lease was lost."""
        with self.engine.begin() as connection:
            updated = connection.execute(
                batches.update()
                .where(batches.c.id == batch_id, batches.c.lease_holder == holder)
                .values(**values, lease_holder=None, lease_expires_at=None)
            )
            if updated.rowcount == 0:
                return False
            for record, content in new_files:
                connection.execute(files.insert().values(**attrs.asdict(record), content=content))
        return True

    def release(self, batch_id: str, holder: str) -> None:
        """Give the lease up (a graceful stop), so another process may take it at once."""
        with self.engine.begin() as connection:
            connection.execute(
                batches.update()
                .where(batches.c.id == batch_id, batches.c.lease_holder == holder)
                .values(lease_holder=None, lease_expires_at=None)
            )


def _line_row(batch_id: str, outcome: LineOutcome) -> dict[str, Any]:
    return {
        "batch_id": batch_id,
        "line_index": outcome.index,
        "custom_id": outcome.custom_id,
        "ok": outcome.ok,
        "status": outcome.status,
        "code": outcome.code,
        "request_id": outcome.request_id,
        "body": outcome.body,
    }


def _started_row(batch_id: str, index: int, custom_id: str, request_id: str) -> dict[str, Any]:
    started = LineOutcome(
        index=index,
        custom_id=custom_id,
        ok=False,
        status=0,
        code=LINE_INTERRUPTED,
        request_id=request_id,
    )
    return _line_row(batch_id, started)
