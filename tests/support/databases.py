"""Scratch databases on the machine's PostgreSQL, for tests and benchmarks."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

__all__ = ["POSTGRES_URL", "PostgresUnreachable", "scratch_postgres_database"]

# The server's maintenance database; scratch databases are made beside it.
POSTGRES_URL = os.environ.get(
    "INFERENCE_GATEWAY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


class PostgresUnreachable(RuntimeError):
    pass


@contextmanager
def scratch_postgres_database(prefix: str = "igw_test") -> Iterator[str]:
    """A new, empty database for the caller alone (its URL); dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        try:
            with admin.connect() as connection:
                # template0 takes no connections, so a session left open on template1
                # elsewhere cannot make this fail.
                connection.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE template0'))
        except sa.exc.OperationalError as exc:
            raise PostgresUnreachable(
                f"PostgreSQL at {make_url(POSTGRES_URL).render_as_string()} is unreachable "
                f"({type(exc.orig).__name__}): the store's tests need it; `bash .ci/run` "
                "installs and starts it"
            ) from exc
        try:
            yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
