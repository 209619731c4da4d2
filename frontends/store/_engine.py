"""Opening a database: URLs, engines with each database's settings, migrations at start.

Everything here blocks: call it from a worker thread (`Store.open` does) or before the
event loop starts.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from frontends.store._schema import HEAD_REVISION, VERSION_TABLE

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.dialects.postgresql import Insert as PostgresInsert
    from sqlalchemy.dialects.sqlite import Insert as SQLiteInsert

    Insert = PostgresInsert | SQLiteInsert

__all__ = [
    "SQLITE_BUSY_TIMEOUT_MS",
    "create_store_engine",
    "current_revision",
    "default_database_url",
    "dialect_insert",
    "head_revision",
    "migrate",
    "migrate_in_child",
    "normalise_database_url",
    "safe_url",
]

SQLITE_BUSY_TIMEOUT_MS = 5000
# Alembic's `context` is one module-level object: one migration at a time per process.
# (Between processes, PostgreSQL's advisory lock in env.py serialises them.)
_ALEMBIC = threading.Lock()
DATABASE_FILE = "gateway.db"


def default_database_url(state_dir: Path) -> str:
    """The embedded default: an SQLite file under the state directory."""
    return URL.create("sqlite+pysqlite", database=str(state_dir / DATABASE_FILE)).render_as_string()


def normalise_database_url(url: str) -> str:
    """The URL with its driver made explicit; ValueError (never echoing the URL, which
    may hold a password) for anything but an SQLite file or PostgreSQL through psycopg 3.

    `postgresql://` and `postgres://` mean psycopg 3, the driver the gateway ships with.
    """
    text = url.strip()
    if text.startswith("postgres://"):
        text = "postgresql://" + text.removeprefix("postgres://")
    try:
        parsed = make_url(text)
    except ArgumentError:
        raise ValueError(
            "not a database URL; use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        if parsed.drivername == "postgresql":  # no driver named: SQLAlchemy's default varies
            parsed = parsed.set(drivername="postgresql+psycopg")
        if parsed.drivername != "postgresql+psycopg":
            driver = parsed.drivername.partition("+")[2]
            raise ValueError(f"PostgreSQL driver {driver!r} is not supported; use psycopg")
        if not parsed.database:
            raise ValueError("name the PostgreSQL database in the URL")
    elif backend == "sqlite":
        if parsed.drivername not in ("sqlite", "sqlite+pysqlite"):
            driver = parsed.drivername.partition("+")[2]
            raise ValueError(f"SQLite driver {driver!r} is not supported; use sqlite:///PATH")
        if parsed.database in (None, "", ":memory:") or "mode=memory" in str(parsed.query):
            raise ValueError("an in-memory SQLite database would lose the log; name a file")
    else:
        raise ValueError(f"database {backend!r} is not supported; use SQLite or PostgreSQL")
    return parsed.render_as_string(hide_password=False)


def safe_url(url: str | URL) -> str:
    """The URL for a log line: the password hidden."""
    return make_url(url).render_as_string(hide_password=True)


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    # WAL lets readers (usage queries) run while the writer writes; NORMAL sync is safe
    # with WAL (a power cut may lose the last commits, never corrupt the file).
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _into_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _null(value: None) -> None:
    return value


def _bind_none_directly() -> None:
    """On Python 3.11, register `None`'s adapter with the sqlite3 module (for the whole
    process; `None` stays `None`, bound as NULL).

    Before 3.12, sqlite3 looks up an adapter for every parameter not of a few plain
    types, `None` among them, and finding none it asks its protocol object for
    `__adapt__`, which raises (and formats) an AttributeError it then clears: about 1,900
    instructions more per NULL than with an adapter registered, for a request log whose
    rows hold several NULLs each.  From 3.12 the miss raises nothing and the adapter's
    call would cost more than it saves (about 300 instructions per NULL)."""
    if sys.version_info < (3, 12):
        sqlite3.register_adapter(type(None), _null)


def _into_wal(cursor: Any) -> None:
    """Switch a new file to WAL (the mode then stays with the file).

    The switch takes the file's exclusive lock, and SQLite answers "database is locked"
    at once, without its busy wait, when connections opening a new file together race
    for it (four threads of one process lost it about one time in six).  So the mode is
    read first (once a file is in WAL, nothing is to be switched), and a lost race is
    tried again, with short pauses, for as long as the busy timeout would have waited.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    pause = 0.005
    while True:
        try:
            (mode,) = cursor.execute("PRAGMA journal_mode").fetchone()
            if str(mode).lower() == "wal":
                return
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)  # a blocking connect, on a worker thread or before serving
        pause = min(pause * 2, 0.1)


def dialect_insert(dialect: str) -> Callable[[sa.Table], Insert]:
    """The INSERT of this database's dialect (with its ON CONFLICT clauses).  The dialect
    module is imported here, so a gateway on SQLite never loads PostgreSQL's (2 MB)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert
    if dialect == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert
    raise ValueError(f"no store for database {dialect!r}")


def create_store_engine(url: str) -> sa.Engine:
    """An engine for the store's database, with that database's settings applied on
    every new connection.  An SQLite file's folder is created if missing."""
    parsed = make_url(normalise_database_url(url))
    if parsed.get_backend_name() == "sqlite":
        assert parsed.database is not None
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        _bind_none_directly()
        engine = sa.create_engine(
            parsed,
            # Connections are pooled and handed between worker threads, one at a time.
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        )
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(
        parsed,
        pool_pre_ping=True,
        connect_args={"connect_timeout": 10, "application_name": "inference-gateway"},
    )


@contextlib.contextmanager
def _alembic_config(connection: sa.Connection | None = None) -> Iterator[Config]:
    """Alembic's configuration, its script directory found inside the installed package
    (editable or not), so migrations need no alembic.ini and no source checkout."""
    from alembic.config import Config

    migrations = importlib.resources.files("frontends.store") / "migrations"
    with importlib.resources.as_file(migrations) as folder:
        config = Config()
        config.set_main_option("script_location", str(folder).replace("%", "%%"))
        if connection is not None:
            config.attributes["connection"] = connection
        yield config


def head_revision() -> str:
    """The newest migration's revision id, as Alembic reads it from the migrations."""
    from alembic.script import ScriptDirectory

    with _alembic_config() as config:
        head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def _at_head(engine: sa.Engine) -> bool:
    """Whether the database's version table holds exactly the newest revision."""
    with engine.connect() as connection:
        if not sa.inspect(connection).has_table(VERSION_TABLE):
            return False
        versions = sa.table(VERSION_TABLE, sa.column("version_num"))
        found = connection.execute(sa.select(versions.c.version_num)).scalars().all()
    return found == [HEAD_REVISION]


def current_revision(engine: sa.Engine) -> str | None:
    """The revision the database is at, None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def migrate(engine: sa.Engine) -> None:
    """Bring the database to the newest schema; a database already there is left as is.

    A database already at `HEAD_REVISION` is seen so with one query, without importing
    Alembic: Alembic, Mako and Pygments come to about 8 MB of RSS that a serving worker
    would otherwise keep for nothing."""
    if _at_head(engine):
        return
    from alembic import command

    with _ALEMBIC, engine.begin() as connection, _alembic_config(connection) as config:
        command.upgrade(config, "head")


# The child's whole program: the URL comes on stdin, never on a command line `ps` shows.
_MIGRATE_CHILD = (
    "import sys; from frontends.store import Store; Store.connect(sys.stdin.read()).close()"
)


def migrate_in_child(url: str) -> None:
    """`migrate` for a server about to serve: the upgrade, when one is due, runs in a
    child process, so the serving process never imports Alembic, Mako and Pygments
    (about 12 MB of RSS a worker would keep for its whole life after one first start).

    Raises nothing: if the child cannot migrate, the caller's own `Store.connect` meets
    the same error in process and reports it the way it always has."""
    try:
        engine = create_store_engine(url)
    except ValueError:
        return
    try:
        if _at_head(engine):
            return
    except Exception:
        return
    finally:
        engine.dispose()
    subprocess.run(
        [sys.executable, "-c", _MIGRATE_CHILD], input=url, text=True, capture_output=True
    )
