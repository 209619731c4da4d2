"""The request log's rows, as the writer hands them to the database's driver: exactly
what the columns' own bind processors (SQLAlchemy's `execute`) would have bound, on both
databases, for the plain values the fast path knows and for the others it passes on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from frontends.store import RequestRecord
from frontends.store._schema import request_log
from frontends.store._store import _Insert, _insert_ignoring_duplicates
from tests.store.factories import record

CEST = timezone(timedelta(hours=2))


class _Later(datetime):
    """A datetime of another class: not the fast path's plain shape."""


RECORDS = [
    record(1),
    record(2, received_at=datetime(2026, 11, 20, 12, 0, 0, 0, tzinfo=UTC)),
    record(
        3,
        received_at=datetime(2026, 11, 20, 23, 59, 59, 123456, tzinfo=CEST),
        first_byte_at=datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        done_at=_Later(2026, 11, 21, 0, 0, 1, 7, tzinfo=UTC),
        streamed=True,
        tokens_estimated=True,
        cancelled=True,
    ),
    record(4, first_byte_at=datetime.fromtimestamp(1_800_000_000.25, UTC), streamed=False),
]


def _reference(dialect: sa.Dialect, records: list[RequestRecord]) -> list[Any]:
    """The rows as SQLAlchemy's general machinery binds them: each column's processor."""
    compiled = _insert_ignoring_duplicates(dialect.name).compile(dialect=dialect)
    names = compiled.positiontup if compiled.positional else [c.name for c in request_log.c]
    assert names is not None

    def bound(r: RequestRecord, name: str) -> Any:
        kind = request_log.c[name].type.dialect_impl(dialect)
        process = kind.bind_processor(dialect)
        value = getattr(r, name)
        return value if process is None else process(value)

    if compiled.positional:
        return [tuple(bound(r, name) for name in names) for r in records]
    return [{name: bound(r, name) for name in names} for r in records]


@pytest.mark.parametrize(
    "dialect", [sqlite.dialect(), postgresql.psycopg.dialect()], ids=["sqlite", "postgresql"]
)
def test_rows_are_what_the_column_processors_bind(dialect: sa.Dialect) -> None:
    rows = _Insert(dialect).rows(RECORDS)
    assert rows == _reference(dialect, RECORDS)
    assert [type(v) for v in _flat(rows)] == [type(v) for v in _flat(_reference(dialect, RECORDS))]


def test_a_flag_that_is_not_a_bool_is_refused_as_before() -> None:
    odd = record(5, streamed=2)
    with pytest.raises(ValueError):
        _Insert(sqlite.dialect()).rows([odd])


def _flat(rows: list[Any]) -> list[Any]:
    return [v for row in rows for v in (row.values() if isinstance(row, dict) else row)]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"id": ""}, "id must not be empty"),
        ({"received_at": datetime(2026, 11, 1)}, "received_at must be timezone-aware"),
        ({"done_at": datetime(2026, 11, 1)}, "done_at must be timezone-aware"),
        ({"status": 99}, "status must be an HTTP status"),
        ({"status": 600}, "status must be an HTTP status"),
        ({"total_tokens": 2**63}, "total_tokens must be a count"),
        ({"bytes_in": -1}, "bytes_in must be a count"),
        ({"bytes_out": -1}, "bytes_out must be a count"),
        # Two broken: the first field in the record's order is the one named.
        ({"bytes_out": -1, "status": 700}, "status must be an HTTP status"),
        ({"first_byte_at": datetime(2026, 11, 1), "id": ""}, "id must not be empty"),
    ],
)
def test_a_record_names_the_first_field_that_breaks_a_rule(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        record(1, **fields)


def test_a_record_accepts_the_edges_of_its_rules() -> None:
    made = record(
        1,
        status=599,
        bytes_in=0,
        bytes_out=2**63 - 1,
        prompt_tokens=None,
        received_at=datetime(2026, 11, 1, tzinfo=CEST),
        first_byte_at=_Later(2026, 11, 1, tzinfo=UTC),
    )
    assert (made.status, made.bytes_out, made.received_at.utcoffset()) == (
        599,
        2**63 - 1,
        timedelta(hours=2),
    )
    assert record(2, status=100).status == 100
