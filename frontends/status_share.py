"""Cluster status read by one process at a time and shared, so that N replicas (or the
N workers of one `serve`) do not multiply the load on a cluster's status service.

Theory of operation
-------------------
Each cluster's last `get_jobs` reading is one record in a shared medium: Redis when the
replicas have one (`RedisMedium`), else a folder the workers of one `serve` share
(`FolderMedium`).  A record is the reading (the adaptor's answer as JSON, or why it
failed) and when it was made (wall clock, the same for every reader).  A process that
needs a cluster's status:

1. reads the record; if it is fresh (younger than the TTL: `is_fresh`), adopts it;
2. else takes the cluster's lock, if no one holds it, reads the record again (another
   may have written it just before), and if it is still not fresh, calls `get_jobs`,
   writes the record and lets go of the lock;
3. else (another process holds the lock and is reading) waits for that reading, polling
   the record for a bounded time, and then takes whatever is there, or reads the
   cluster itself if there is nothing at all (the holder died before writing).

So a cluster is read at most once per TTL however many processes share the medium.  The
decisions (`is_fresh`, `next_step`) are pure; the medium does the IO, in worker threads
(`anyio.to_thread`), so nothing blocks the loop, under asyncio and trio alike.

When the medium fails (Redis refused, timed out; the folder unwritable), the process
reads the cluster itself, as if it were alone, logs it once, says so in `status()`
(which `/resource_server/health` shows), and tries the medium again after
`retry_interval` seconds.  Nothing here ever raises into a request.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.to_thread
import attrs

from adaptors.clusters.cluster import GetJobsResponse
from frontends.redis_client import connect, failures

__all__ = [
    "FolderMedium",
    "Medium",
    "Reading",
    "RedisMedium",
    "StatusShare",
    "Step",
    "is_fresh",
    "next_step",
]

log = logging.getLogger("inference_gateway")

LOCK_SECONDS = 30.0  # a lock whose holder died is free again after this (Redis only)
KEEP_TTLS = 3  # a record lives this many TTLs (a report older is not trusted anyway)


@attrs.frozen(kw_only=True)
class Reading:
    """One reading of a cluster's status: the answer (None if the read failed), why it
    failed, and when it was made (seconds since the epoch)."""

    answer: GetJobsResponse | None
    error: str | None
    fetched_at: float

    def encode(self) -> str:
        answer = None if self.answer is None else self.answer.model_dump(mode="json")
        return json.dumps({"answer": answer, "error": self.error, "fetched_at": self.fetched_at})

    @classmethod
    def decode(cls, text: str | bytes) -> Reading | None:
        """The reading `encode` wrote; None for anything else."""
        try:
            data: Any = json.loads(text)
            answer = data["answer"]
            return cls(
                answer=None if answer is None else GetJobsResponse.model_validate(answer),
                error=None if data["error"] is None else str(data["error"]),
                fetched_at=float(data["fetched_at"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


# -- the decisions (pure) ------------------------------------------------------------------


def is_fresh(reading: Reading | None, now: float, ttl: float) -> bool:
    """Whether `reading` (made at its `fetched_at`) is still good at `now`."""
    return reading is not None and now - reading.fetched_at < ttl


class Step(enum.Enum):
    ADOPT = "adopt"  # take the shared reading
    FETCH = "fetch"  # read the cluster, and share what it said
    WAIT = "wait"  # another process is reading it: wait for its reading


def next_step(reading: Reading | None, now: float, ttl: float, *, locked: bool | None) -> Step:
    """What to do with the shared `reading` at `now`: `locked` None before trying the
    lock, then whether this process took it."""
    if is_fresh(reading, now, ttl):
        return Step.ADOPT
    if locked is None or locked:
        return Step.FETCH
    return Step.WAIT


# -- the media (blocking IO, run in worker threads) -----------------------------------------


class Medium(Protocol):
    """Where readings are shared.  Every method blocks (it runs in a worker thread) and
    raises `OSError` or `redis.RedisError` when the medium fails."""

    name: str

    def get(self, cluster: str) -> Reading | None: ...

    def lock(self, cluster: str) -> object | None:
        """A handle if this process now holds the cluster's lock, else None."""
        ...

    def put(self, cluster: str, reading: Reading, keep: float) -> None: ...

    def unlock(self, cluster: str, handle: object) -> None: ...

    def close(self) -> None: ...


# Deletes the lock only if it is still ours (it may have expired and been taken).
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisMedium:
    """Readings in Redis under `<prefix>status:<cluster>`, expiring after `keep` seconds;
    the lock is `SET NX PX` on `<prefix>status:<cluster>:lock`, expiring on its own after
    `LOCK_SECONDS` if its holder dies."""

    name = "redis"

    def __init__(self, url: str, *, prefix: str, timeout: float = 1.0) -> None:
        self._redis = connect(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._prefix = prefix
        self._unlock = self._redis.register_script(_UNLOCK)

    def _key(self, cluster: str) -> str:
        return f"{self._prefix}status:{cluster}"

    def get(self, cluster: str) -> Reading | None:
        value = self._redis.get(self._key(cluster))
        return Reading.decode(value) if isinstance(value, bytes) else None

    def lock(self, cluster: str) -> object | None:
        token = uuid.uuid4().hex
        taken = self._redis.set(
            f"{self._key(cluster)}:lock", token, nx=True, px=int(LOCK_SECONDS * 1000)
        )
        return token if taken else None

    def put(self, cluster: str, reading: Reading, keep: float) -> None:
        self._redis.set(self._key(cluster), reading.encode(), px=max(1, int(keep * 1000)))

    def unlock(self, cluster: str, handle: object) -> None:
        self._unlock(keys=[f"{self._key(cluster)}:lock"], args=[str(handle)])

    def close(self) -> None:
        self._redis.close()


class FolderMedium:
    """Readings as files in a folder the processes of one machine share (the workers of
    one `serve`); the lock is an `flock` on a file beside each, let go when its holder
    unlocks or dies."""

    name = "folder"

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    def _path(self, cluster: str, suffix: str) -> Path:
        digest = hashlib.sha256(cluster.encode()).hexdigest()[:24]
        return self._folder / f"cluster-status-{digest}{suffix}"

    def get(self, cluster: str) -> Reading | None:
        try:
            return Reading.decode(self._path(cluster, ".json").read_bytes())
        except FileNotFoundError:
            return None

    def lock(self, cluster: str) -> object | None:
        self._folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path(cluster, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def put(self, cluster: str, reading: Reading, keep: float) -> None:
        path = self._path(cluster, ".json")
        temporary = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        temporary.write_text(reading.encode())
        temporary.replace(path)  # readers see the old reading or the new, never half

    def unlock(self, cluster: str, handle: object) -> None:
        assert isinstance(handle, int)
        os.close(handle)  # closing the descriptor lets go of the flock

    def close(self) -> None:
        pass


# -- the edge ------------------------------------------------------------------------------


Fetch = Callable[[], Awaitable[Reading]]


class StatusShare:
    """`reading(cluster, ttl, fetch)`: the cluster's shared reading, `fetch` called only
    when no process has a fresh one and none is reading it now (see the module)."""

    def __init__(
        self,
        medium: Medium,
        *,
        wait_seconds: float = 5.0,
        retry_interval: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._medium = medium
        self._wait = wait_seconds
        self._retry_interval = retry_interval
        self._clock = clock
        self._failed_at: float | None = None  # monotonic, while the medium is failing

    def status(self) -> str:
        """What `/resource_server/health` shows: "redis" or "folder" while the medium
        works, "<medium>-unreachable, fetching locally" while it does not."""
        if self._failed_at is None:
            return self._medium.name
        return f"{self._medium.name}-unreachable, fetching locally"

    async def reading(self, cluster: str, ttl: float, fetch: Fetch) -> Reading:
        failed = self._failed_at
        if failed is not None and time.monotonic() - failed < self._retry_interval:
            return await fetch()
        handle: object | None = None
        shared: Reading | None
        try:
            shared = await self._io(self._medium.get, cluster)
            if next_step(shared, self._clock(), ttl, locked=None) is Step.ADOPT:
                assert shared is not None
                return self._working(shared)
            handle = await self._io(self._medium.lock, cluster)
            if handle is not None:  # another may have written it just before we locked
                shared = await self._io(self._medium.get, cluster)
            step = next_step(shared, self._clock(), ttl, locked=handle is not None)
            if step is Step.ADOPT:
                assert shared is not None
                return self._working(shared)
            if step is Step.WAIT:
                return self._working(await self._wait_for(cluster, shared, ttl, fetch))
            fresh = await fetch()
            try:
                await self._io(self._medium.put, cluster, fresh, KEEP_TTLS * ttl)
            except failures() as exc:
                self._failing(exc)
                return fresh
            return self._working(fresh)
        except failures() as exc:
            self._failing(exc)
            return await fetch()
        finally:
            if handle is not None:
                with anyio.CancelScope(shield=True), contextlib.suppress(*failures()):
                    await self._io(self._medium.unlock, cluster, handle)

    async def _wait_for(
        self, cluster: str, seen: Reading | None, ttl: float, fetch: Fetch
    ) -> Reading:
        """Another process holds the lock: its reading, once written; after `wait_seconds`
        the shared one however old, or, with none at all, one of our own."""
        latest: Reading | None = seen
        with anyio.move_on_after(self._wait):
            while True:
                await anyio.sleep(0.05)
                latest = await self._io(self._medium.get, cluster)
                if next_step(latest, self._clock(), ttl, locked=None) is Step.ADOPT:
                    assert latest is not None
                    return latest
        return latest if latest is not None else await fetch()

    @staticmethod
    async def _io(call: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(call, *args)

    def _working(self, reading: Reading) -> Reading:
        if self._failed_at is not None:
            self._failed_at = None
            log.warning("cluster status: the %s answers again; sharing readings", self._medium.name)
        return reading

    def _failing(self, exc: BaseException) -> None:
        if self._failed_at is None:
            log.warning(
                "cluster status: the %s failed (%s); each process reads cluster status "
                "itself, trying the %s again every %ss",
                self._medium.name,
                type(exc).__name__,
                self._medium.name,
                self._retry_interval,
            )
        self._failed_at = time.monotonic()

    def close(self) -> None:
        with contextlib.suppress(*failures()):
            self._medium.close()
