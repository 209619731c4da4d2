"""The store edge: the request log and usage, files and batches, on SQLite (embedded) or
PostgreSQL."""

from frontends.store._batches import (
    ACTIVE_STATUSES,
    LINE_INTERRUPTED,
    BatchLog,
    BatchStore,
    FileRecord,
    LineOutcome,
)
from frontends.store._engine import (
    create_store_engine,
    current_revision,
    default_database_url,
    head_revision,
    migrate,
    migrate_in_child,
    normalise_database_url,
)
from frontends.store._figures import fetch_samples, recent_samples, samples_query
from frontends.store._records import CAPTURE_CEILING, DETAIL_LIMIT, RequestRecord, capture
from frontends.store._replicas import Replicas, check_can_join
from frontends.store._store import Store
from frontends.store._usage import GroupBy, UsageRow, fetch_usage, usage, usage_query
from frontends.store._writer import LINGER, BatchSink, LogWriter, open_log_writer

__all__ = [
    "ACTIVE_STATUSES",
    "CAPTURE_CEILING",
    "DETAIL_LIMIT",
    "LINE_INTERRUPTED",
    "LINGER",
    "BatchLog",
    "BatchSink",
    "BatchStore",
    "FileRecord",
    "GroupBy",
    "LineOutcome",
    "LogWriter",
    "Replicas",
    "RequestRecord",
    "Store",
    "UsageRow",
    "capture",
    "check_can_join",
    "create_store_engine",
    "current_revision",
    "default_database_url",
    "fetch_samples",
    "fetch_usage",
    "head_revision",
    "migrate",
    "migrate_in_child",
    "normalise_database_url",
    "open_log_writer",
    "recent_samples",
    "samples_query",
    "usage",
    "usage_query",
]
