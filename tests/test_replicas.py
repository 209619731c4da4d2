"""Replicas find each other in the shared database: one that cannot share state with the
others (on SQLite, or without Redis) refuses to start and says why; a graceful stop
takes a replica's row away at once; a crashed one's row ages out."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from core import ConfigurationError
from frontends.store import Replicas, Store, check_can_join
from frontends.store._schema import replicas as replicas_table
from tests.support.databases import scratch_postgres_database
from tests.support.gateway_server import write_tokens
from tests.support.quota import REDIS_URL, serve_process
from tests.support.serve_process import ROOT

pytestmark = pytest.mark.e2e


def _serve_refused(tmp_path: Path, state: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERENCE_GATEWAY_")}
    env.update(
        PYTHONPATH=str(ROOT),
        INFERENCE_GATEWAY_TOKENS_FILE=str(write_tokens(tmp_path)),
        INFERENCE_GATEWAY_STATE_DIR=str(tmp_path / state),
        **{f"INFERENCE_GATEWAY_{k.upper()}": v for k, v in settings.items()},
    )
    return subprocess.run(
        [sys.executable, "-m", "frontends.cli", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _fixtures() -> Path:
    return ROOT / "fixtures"


def test_a_second_server_on_one_sqlite_file_refuses_to_start(tmp_path: Path) -> None:
    with serve_process(tmp_path, _fixtures(), "asyncio"):
        refused = _serve_refused(tmp_path, "serve-asyncio/state")  # the first one's
    assert refused.returncode == 2
    assert "another gateway server is running on this SQLite database" in refused.stderr
    assert "database_url" in refused.stderr and "--workers" in refused.stderr
    # The first one's graceful stop took its row away: a new one starts at once.
    with serve_process(tmp_path, _fixtures(), "asyncio") as url:
        assert httpx.get(f"{url}/resource_server/health").status_code == 200


def test_a_replica_without_redis_refuses_to_join_one_on_postgresql(tmp_path: Path) -> None:
    with (
        scratch_postgres_database("igw_replicas") as database,
        serve_process(tmp_path, _fixtures(), "trio", database_url=database, redis_url=REDIS_URL),
    ):
        refused = _serve_refused(tmp_path, "other", database_url=database)
        # With Redis, a second replica joins.
        with serve_process(
            tmp_path, _fixtures(), "asyncio", database_url=database, redis_url=REDIS_URL
        ) as url:
            assert httpx.get(f"{url}/resource_server/health").status_code == 200
    assert refused.returncode == 2
    assert "this one has no Redis" in refused.stderr and "redis_url" in refused.stderr


def test_a_crashed_replicas_row_ages_out(tmp_path: Path) -> None:
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    store = Store.connect(f"sqlite:///{tmp_path / 'gateway.db'}")
    try:
        crashed = Replicas(store.engine, shared_quota=False, clock=lambda: now)
        crashed.beat()  # and never again, nor a leave
        soon = Replicas(store.engine, shared_quota=False, clock=lambda: now + timedelta(seconds=20))
        with pytest.raises(ConfigurationError, match="SQLite"):
            check_can_join(soon, sqlite=True)
        later = Replicas(
            store.engine, shared_quota=False, clock=lambda: now + timedelta(seconds=40)
        )
        check_can_join(later, sqlite=True)
        # The workers of one server share an id and never see each other.
        sibling = Replicas(
            store.engine, replica_id=crashed.id, shared_quota=False, clock=lambda: now
        )
        check_can_join(sibling, sqlite=True)
    finally:
        store.engine.dispose()


def test_a_killed_server_on_this_machine_does_not_hold_a_restart_back(tmp_path: Path) -> None:
    """SIGKILL leaves the row, but its process is gone: the restart starts at once."""
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    store = Store.connect(f"sqlite:///{tmp_path / 'gateway.db'}")
    try:
        killed = Replicas(store.engine, shared_quota=False)
        killed.beat()
        with store.engine.begin() as connection:
            connection.execute(sa.update(replicas_table).values(pid=int(gone.stdout)))
        check_can_join(Replicas(store.engine, shared_quota=False), sqlite=True)
    finally:
        store.engine.dispose()
