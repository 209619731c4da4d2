"""The store's tables, as SQLAlchemy Core sees them for queries.

The migrations under `migrations/versions/` create these tables; each migration is a
frozen copy of what it does, so this module may move on while old migrations stay as they
were.  A test compares the migrated database with this metadata: they must not differ.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

__all__ = [
    "HEAD_REVISION",
    "VERSION_TABLE",
    "UTCDateTime",
    "batch_lines",
    "batches",
    "files",
    "metadata",
    "replicas",
    "request_log",
]

# Alembic's record of the schema's revision; named for us, so a database shared with
# another Alembic-managed application keeps the two apart.
VERSION_TABLE = "inference_gateway_schema"
# The newest migration's revision: a database at it is served without importing Alembic.
# A new migration moves it (tests/store/test_migrations.py checks it is Alembic's head).
HEAD_REVISION = "0006"

# Constraint and index names the same on every database, so later migrations can name them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware datetime, kept in UTC on both databases.

    PostgreSQL keeps `timestamptz`; SQLite keeps text without an offset, so values are
    converted to UTC on the way in and marked UTC on the way out.  Naive datetimes are
    refused: a time without a zone cannot be compared with the others.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            raise ValueError(f"a naive datetime cannot be stored: {value!r}")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _count(name: str, *, nullable: bool = True) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger, nullable=nullable)


request_log = sa.Table(
    "request_log",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("request_id", sa.Text, nullable=False),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Column("first_byte_at", UTCDateTime),
    sa.Column("done_at", UTCDateTime),
    sa.Column("route", sa.Text, nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("streamed", sa.Boolean, nullable=False),
    sa.Column("username", sa.Text),
    sa.Column("identity_provider", sa.Text),
    sa.Column("cluster", sa.Text),
    sa.Column("framework", sa.Text),
    sa.Column("model", sa.Text),
    sa.Column("endpoint_slug", sa.Text),
    sa.Column("error_code", sa.Text),
    sa.Column("backend_task_id", sa.Text),
    _count("prompt_tokens"),
    _count("completion_tokens"),
    _count("total_tokens"),
    sa.Column("tokens_estimated", sa.Boolean, nullable=False),
    _count("bytes_in", nullable=False),
    _count("bytes_out", nullable=False),
    sa.Column("client_address", sa.Text),
    sa.Column("prompt", sa.Text),
    sa.Column("response", sa.Text),
    # Added by migration 0002.
    sa.Column("cancelled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("detail", sa.Text),
    sa.CheckConstraint("status BETWEEN 100 AND 599", name="status"),
    sa.CheckConstraint(
        "prompt_tokens >= 0 AND completion_tokens >= 0 AND total_tokens >= 0"
        " AND bytes_in >= 0 AND bytes_out >= 0",
        name="counts",
    ),
    # The usage queries: one user's or one model's requests over time, and all by time.
    sa.Index(None, "username", "received_at"),
    sa.Index(None, "model", "received_at"),
    sa.Index(None, "received_at"),
)


# -- files and batches (OpenAI's files and batches API; the seed's BatchLog) ----------------

files = sa.Table(
    "files",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("owner", sa.Text, nullable=False),
    sa.Column("purpose", sa.Text, nullable=False),
    sa.Column("filename", sa.Text, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    # The file itself, in the database: one place for every replica, on both databases.
    sa.Column("content", sa.LargeBinary, nullable=False),
    sa.Index(None, "owner", "created_at"),
)

batches = sa.Table(
    "batches",
    metadata,
    # The seed system's BatchLog fields, by their names there.
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("access_log_id", sa.Text),
    sa.Column("user_id", sa.Text, nullable=False),
    sa.Column("input_file", sa.Text, nullable=False),
    sa.Column("output_folder_path", sa.Text),
    sa.Column("cluster", sa.Text, nullable=False),
    sa.Column("framework", sa.Text, nullable=False),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("globus_batch_uuid", sa.Text),
    sa.Column("task_ids", sa.Text),
    sa.Column("result", sa.Text),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("in_progress_at", UTCDateTime),
    sa.Column("completed_at", UTCDateTime),
    sa.Column("failed_at", UTCDateTime),
    # What OpenAI's batch object needs beside them.
    sa.Column("endpoint", sa.Text, nullable=False),
    sa.Column("endpoint_slug", sa.Text, nullable=False),
    sa.Column("completion_window", sa.Text, nullable=False),
    sa.Column("metadata", sa.JSON),
    sa.Column("identity", sa.JSON, nullable=False),  # who the lines run as
    sa.Column("input_file_id", sa.Text, nullable=False),
    sa.Column("output_file_id", sa.Text),
    sa.Column("error_file_id", sa.Text),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("cancelling_at", UTCDateTime),
    sa.Column("cancelled_at", UTCDateTime),
    sa.Column("finalizing_at", UTCDateTime),
    sa.Column("expired_at", UTCDateTime),
    sa.Column("total", sa.Integer, nullable=False),
    sa.Column("completed", sa.Integer, nullable=False),
    sa.Column("failed", sa.Integer, nullable=False),
    sa.Column("mode", sa.Text, nullable=False),
    sa.Column("lease_holder", sa.Text),
    sa.Column("lease_expires_at", UTCDateTime),
    sa.Index(None, "user_id", "created_at"),
    sa.Index(None, "status"),
)

batch_lines = sa.Table(
    "batch_lines",
    metadata,
    sa.Column("batch_id", sa.Text, primary_key=True),
    sa.Column("line_index", sa.Integer, primary_key=True),
    sa.Column("custom_id", sa.Text, nullable=False),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("code", sa.Text),
    sa.Column("request_id", sa.Text),
    sa.Column("body", sa.LargeBinary, nullable=False),
)


replicas = sa.Table(
    "replicas",
    metadata,
    # One running gateway server (all the workers of one `serve` share its id).
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("host", sa.Text, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("shared_quota", sa.Boolean, nullable=False),  # counts quotas in Redis
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("seen_at", UTCDateTime, nullable=False),
)
