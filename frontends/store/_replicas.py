"""Replicas in the shared database: who else is serving, so that a replica whose setup
cannot share state with them refuses to start rather than break limits silently.

Every `serve` writes one row (its id; host, pid; whether it counts quotas in Redis) and
renews `seen_at` every `HEARTBEAT` seconds; a graceful stop deletes the row, a crash
leaves it to age out after `STALE`.  At start, `others` lists the rows of other servers
seen within `STALE`.  Finding one while this server is on SQLite (nothing else can share
that file's state safely: batches have no row locks there) or without Redis (quotas
would be counted apart, each replica admitting the whole limit) is a configuration
error that says so.  The workers of one `serve --workers N` share one id, so they never
see each other.

Every method blocks (it talks to the database); the heartbeat task runs them on a worker
thread, under asyncio or trio alike.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import anyio
import attrs
import sqlalchemy as sa

from core import ConfigurationError
from frontends.store._schema import replicas

__all__ = ["HEARTBEAT", "STALE", "ReplicaRow", "Replicas", "check_can_join"]

HEARTBEAT = timedelta(seconds=10)
STALE = timedelta(seconds=35)  # three heartbeats missed, and a little


@attrs.frozen
class ReplicaRow:
    id: str
    host: str
    pid: int
    shared_quota: bool
    seen_at: datetime


class Replicas:
    """This server's row in the `replicas` table of `engine`'s database."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        replica_id: str | None = None,
        shared_quota: bool,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.engine = engine
        self.id = replica_id or uuid.uuid4().hex
        self.shared_quota = shared_quota
        self._clock = clock

    def others(self) -> list[ReplicaRow]:
        """Other servers seen within `STALE`, less those of this host whose process is
        gone (killed, crashed: a restart on the same machine need not wait for the row
        to age)."""
        since = self._clock() - STALE
        query = sa.select(replicas).where(replicas.c.id != self.id, replicas.c.seen_at >= since)
        with self.engine.connect() as connection:
            rows = [
                ReplicaRow(
                    id=row.id,
                    host=row.host,
                    pid=row.pid,
                    shared_quota=row.shared_quota,
                    seen_at=row.seen_at,
                )
                for row in connection.execute(query)
            ]
        here = socket.gethostname()
        return [row for row in rows if row.host != here or _alive(row.pid)]

    def beat(self) -> None:
        """Writes (or renews) this server's row."""
        now = self._clock()
        with self.engine.begin() as connection:
            updated = connection.execute(
                sa.update(replicas).where(replicas.c.id == self.id).values(seen_at=now)
            )
            if updated.rowcount == 0:
                connection.execute(
                    sa.insert(replicas).values(
                        id=self.id,
                        host=socket.gethostname(),
                        pid=os.getpid(),
                        shared_quota=self.shared_quota,
                        started_at=now,
                        seen_at=now,
                    )
                )

    def leave(self) -> None:
        with self.engine.begin() as connection:
            connection.execute(sa.delete(replicas).where(replicas.c.id == self.id))

    async def keep_beating(self, stopping: Callable[[], Awaitable[object]] | None) -> None:
        """Renews the heartbeat every `HEARTBEAT` until `stopping()` returns (or the task
        is cancelled, as quart-trio does with background tasks at shutdown)."""
        while True:
            await anyio.to_thread.run_sync(self.beat)
            with anyio.move_on_after(HEARTBEAT.total_seconds()):
                if stopping is None:
                    await anyio.sleep_forever()
                else:
                    await stopping()
                    return

    async def aleave(self) -> None:
        """Deletes this server's row (a graceful stop: the others need not wait for it
        to age), off the event loop."""
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.leave)


def _alive(pid: int) -> bool:
    """Whether a process of this machine with this id runs (signal 0 checks, sends none)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it runs, as another user
    return True


def check_can_join(registry: Replicas, *, sqlite: bool) -> None:
    """Refuses to start beside other replicas when this one cannot share their state."""
    others = registry.others()
    if not others:
        return
    other = next((o for o in others if not o.shared_quota), others[0])
    where = f"{other.host} (pid {other.pid}), seen {other.seen_at:%H:%M:%S} UTC"
    if sqlite:
        raise ConfigurationError(
            f"another gateway server is running on this SQLite database: {where}. "
            "Replicas must share PostgreSQL (set INFERENCE_GATEWAY_DATABASE_URL) and "
            "Redis (INFERENCE_GATEWAY_REDIS_URL); one process serving more cores: "
            "serve --workers N",
            file="settings",
            field="database_url",
        )
    if not registry.shared_quota:
        raise ConfigurationError(
            f"another gateway replica uses this database: {where}, and this one has no "
            "Redis: its quota counts would be its own, and together the replicas would "
            "admit beyond every limit. Set INFERENCE_GATEWAY_REDIS_URL to the Redis the "
            "replicas share",
            file="settings",
            field="redis_url",
        )
    if not other.shared_quota:
        raise ConfigurationError(
            f"another gateway replica on this database counts quotas without Redis: "
            f"{where}; replicas must all count in the Redis they share. Give it "
            "INFERENCE_GATEWAY_REDIS_URL and restart it first",
            file="settings",
            field="redis_url",
        )
