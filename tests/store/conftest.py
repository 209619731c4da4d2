"""The store's tests run on real databases: an SQLite file in the test's tmp_path, and a
database of its own on the machine's PostgreSQL, created for the test and dropped after,
so no test sees another's rows.  PostgreSQL unreachable fails the test, loudly: `.ci/run`
installs and starts it (INFERENCE_GATEWAY_TEST_POSTGRES_URL names another server)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from frontends.store import Store
from tests.support.databases import scratch_postgres_database


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def postgresql_url() -> Iterator[str]:
    with scratch_postgres_database() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state' / 'gateway.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each database the store supports, in turn."""
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = Store.connect(database_url)
    try:
        yield opened
    finally:
        opened.close()
