"""The schema: migrations shipped inside the package, applied at start on an empty
database, harmless on a second start, serialised between replicas; SQLite's settings;
the database setting checked at start."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from core import ConfigurationError
from frontends.settings import load_settings
from frontends.store import (
    Store,
    create_store_engine,
    current_revision,
    head_revision,
    migrate,
)
from frontends.store._schema import HEAD_REVISION, metadata
from tests.store.factories import record

ROOT = Path(__file__).resolve().parents[2]
UNTRACKED = (
    ".git",
    ".venv",
    "venv",
    "build",
    "dist",
    "*.egg-info",
    "*_cache",
    "__pycache__",
    "state",
)


def test_migrations_build_the_schema_on_an_empty_database(database_url: str) -> None:
    engine = create_store_engine(database_url)
    try:
        assert current_revision(engine) is None
        assert sa.inspect(engine).get_table_names() == []
        migrate(engine)
        assert current_revision(engine) == head_revision()
        tables = set(sa.inspect(engine).get_table_names())
        assert tables == {
            "request_log",
            "inference_gateway_schema",
            "files",
            "batches",
            "batch_lines",
            "replicas",
        }
        indexes = {ix["name"] for ix in sa.inspect(engine).get_indexes("request_log")}
        assert {
            "ix_request_log_username_received_at",
            "ix_request_log_model_received_at",
            "ix_request_log_received_at",
        } <= indexes
        # What the migrations built is what the queries expect.
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "version_table": "inference_gateway_schema"}
            )
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()


def test_a_second_start_changes_nothing(database_url: str) -> None:
    first = Store.connect(database_url)
    first.write_batch([record(1)])
    first.close()
    second = Store.connect(database_url)
    try:
        assert current_revision(second.engine) == head_revision()
        assert second.get("log-000001") == record(1)
        with second.engine.connect() as connection:
            versions = connection.execute(
                sa.text("SELECT version_num FROM inference_gateway_schema")
            )
            assert versions.scalars().all() == [head_revision()]
    finally:
        second.close()


def test_the_head_a_served_start_checks_for_is_alembics_head() -> None:
    # A start on a database at HEAD_REVISION skips Alembic; a new migration must move it.
    assert head_revision() == HEAD_REVISION


def test_a_start_on_a_database_at_the_head_does_not_import_alembic(tmp_path: Path) -> None:
    Store.connect(f"sqlite:///{tmp_path}/x.db").close()
    script = (
        "import sys, frontends.store as s;"
        "s.Store.connect(sys.argv[1]).close();"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'mako')))"
    )
    ran = subprocess.run(
        [sys.executable, "-c", script, f"sqlite:///{tmp_path}/x.db"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "[]"


def test_replicas_starting_together_migrate_once(postgresql_url: str) -> None:
    # Four processes, each held at the start line until all four are up.
    script = (
        "import sys; from frontends.store import Store;"
        "sys.stdin.readline(); Store.connect(sys.argv[1]).close(); print('ok')"
    )
    replicas = [
        subprocess.Popen(
            [sys.executable, "-c", script, postgresql_url],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for replica in replicas:
        assert replica.stdin is not None
        replica.stdin.write("go\n")
        replica.stdin.flush()
    outcomes = [replica.communicate(timeout=120) for replica in replicas]
    results = [(out.strip(), r.returncode) for r, (out, _) in zip(replicas, outcomes, strict=True)]
    assert results == [("ok", 0)] * 4, [err for _, err in outcomes]
    engine = create_store_engine(postgresql_url)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_threads_of_one_process_starting_together_migrate_once(database_url: str) -> None:
    errors: list[BaseException] = []
    go = threading.Barrier(4)

    def start() -> None:
        try:
            go.wait()
            Store.connect(database_url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout_and_foreign_keys(sqlite_url: str) -> None:
    store = Store.connect(sqlite_url)
    try:
        with store.engine.connect() as connection:
            pragma = {
                name: connection.exec_driver_sql(f"PRAGMA {name}").scalar_one()
                for name in ("journal_mode", "busy_timeout", "foreign_keys")
            }
        assert pragma == {"journal_mode": "wal", "busy_timeout": 5000, "foreign_keys": 1}
    finally:
        store.close()


def test_the_migrations_ship_in_the_wheel_and_run_from_it(tmp_path: Path) -> None:
    """Installed without the source tree (no editable install, no alembic.ini), the
    package finds its own migrations."""
    # Built from a copy, so the build leaves nothing behind in the working tree.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*UNTRACKED))
    # Offline, with the setuptools the test extras install (as tests/test_packaging.py).
    pip_wheel = [sys.executable, "-m", "pip", "--disable-pip-version-check", "wheel"]
    built = subprocess.run(
        [*pip_wheel, "--no-deps", "--no-build-isolation", "--no-index", "-w", tmp_path, source],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("inference_gateway-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert {
            "frontends/store/migrations/env.py",
            "frontends/store/migrations/script.py.mako",
            "frontends/store/migrations/versions/v0001_request_log.py",
        } <= names
        archive.extractall(tmp_path / "site")
    script = (
        "import frontends.store as s, pathlib, sys;"
        "assert pathlib.Path(s.__file__).is_relative_to(sys.argv[1]), s.__file__;"
        "store = s.Store.connect(sys.argv[2]);"
        "print(s.current_revision(store.engine))"
    )
    ran = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "site"), f"sqlite:///{tmp_path}/x.db"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == head_revision()


# -- the setting -------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("INFERENCE_GATEWAY_"):
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("clean_env")
def test_the_default_database_is_an_sqlite_file_under_the_state_dir(tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path)
    assert settings.database_url is None
    assert settings.store_url == f"sqlite+pysqlite:///{tmp_path}/gateway.db"
    Store.connect(settings.store_url).close()
    assert (tmp_path / "gateway.db").is_file()


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("given", "meant"),
    [
        ("postgresql://gw:pw@db.example/gateway", "postgresql+psycopg://gw:pw@db.example/gateway"),
        ("postgres://gw@db.example:5433/gw", "postgresql+psycopg://gw@db.example:5433/gw"),
        ("postgresql+psycopg://gw@db/gw", "postgresql+psycopg://gw@db/gw"),
        ("sqlite:////var/lib/gw/log.db", "sqlite:////var/lib/gw/log.db"),
    ],
)
def test_database_urls_name_their_driver(
    monkeypatch: pytest.MonkeyPatch, given: str, meant: str
) -> None:
    monkeypatch.setenv("INFERENCE_GATEWAY_DATABASE_URL", given)
    settings = load_settings()
    assert settings.store_url == meant
    assert "pw" not in repr(settings).replace("password", "")


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("given", "why"),
    [
        ("mysql://gw:pw-secret@db/gw", "'mysql' is not supported"),
        ("postgresql+psycopg2://gw:pw-secret@db/gw", "driver 'psycopg2' is not supported"),
        ("postgresql://gw:pw-secret@db", "name the PostgreSQL database"),
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
        ("not a url pw-secret", "not a database URL"),
    ],
)
def test_a_bad_database_url_fails_at_start_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, given: str, why: str
) -> None:
    monkeypatch.setenv("INFERENCE_GATEWAY_DATABASE_URL", given)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = str(caught.value)
    assert "INFERENCE_GATEWAY_DATABASE_URL" in message
    assert why in message
    assert "pw-secret" not in message
