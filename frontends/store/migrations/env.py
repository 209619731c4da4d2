"""Alembic's environment for the store, run by `frontends.store.migrate()`.

`migrate()` hands over an open connection in `config.attributes["connection"]`; the
whole upgrade runs in its transaction.  On PostgreSQL the upgrade first takes a
transaction-scoped advisory lock, so replicas starting together migrate one at a time
and the later ones find the schema already at head.  With no connection handed over
(Alembic's own command line), the URL comes from the `sqlalchemy.url` option.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from frontends.store._schema import VERSION_TABLE, metadata

# Any fixed 64-bit number, the same in every process: "inference-gateway schema".
MIGRATION_LOCK = 0x16_6A7E_5C4E_3A00


def _upgrade(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK)))
        context.run_migrations()


def _run() -> None:
    if context.is_offline_mode():
        raise RuntimeError("the store's migrations run online only (frontends.store.migrate)")
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _upgrade(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection handed over and no sqlalchemy.url to open one")
    engine = sa.create_engine(url)
    try:
        with engine.begin() as opened:
            _upgrade(opened)
    finally:
        engine.dispose()


_run()
