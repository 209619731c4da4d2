"""Where stored Responses API answers were made, kept where every process can find it.

The core decides with a `ResponseDirectory` (response id -> user and endpoint, plain
data in memory, read synchronously while selecting); this edge keeps that directory
filled.  Without Redis it is the whole story: each process remembers what it answered
(`remember`), as a single process always did.  With Redis (the replicas' shared one,
`redis_url`), every entry is also written there, under `<prefix>response:<id>`, with
the user and the endpoint's slug, expiring after `response_ttl` seconds (by default 30
days, the time OpenAI keeps a stored response; a backend that keeps them less answers
404 itself).  The write is awaited before the client sees the answer (`share`), so a
follow-up sent to any other replica at once finds it; and before a request that names a
`previous_response_id`, or a call on a stored response, the driver reads the entry
from Redis into the directory (`load`), so the core finds it as if it were local.
Only the user who made a response can find it; to anyone else it does not exist.

When Redis fails, this process goes on with what it remembers itself (a follow-up on
another replica then answers 404), logs it once, and tries Redis again on the next call.
Redis is read and written by its synchronous client in worker threads: asyncio and trio
alike, never blocking the loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

import anyio
import anyio.to_thread

from core import ResponseDirectory
from frontends.redis_client import connect, failures

__all__ = ["DEFAULT_TTL", "SharedResponses", "previous_response_id"]

log = logging.getLogger("inference_gateway")

DEFAULT_TTL = 30 * 24 * 3600.0  # OpenAI keeps a stored response 30 days


def previous_response_id(body: bytes) -> str | None:
    """The `previous_response_id` a request body names, if it names one (a cheap look
    first: most bodies never mention it)."""
    if b"previous_response_id" not in body:
        return None
    try:
        data: Any = json.loads(body)
    except ValueError:
        return None
    found = data.get("previous_response_id") if isinstance(data, dict) else None
    return found if isinstance(found, str) else None


class SharedResponses:
    """The directory the core reads, filled from and written to Redis when there is one."""

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        prefix: str = "inference-gateway:",
        ttl: float = DEFAULT_TTL,
        directory: ResponseDirectory | None = None,
    ) -> None:
        self.directory = directory or ResponseDirectory()
        self._prefix = prefix
        self._ttl_ms = max(1, int(ttl * 1000))
        self._redis = (
            None
            if redis_url is None
            else connect(redis_url, socket_timeout=1, socket_connect_timeout=1)
        )
        self._failing = False

    # -- what the driver calls ------------------------------------------------------------

    def remember(self, response_id: str, username: str, endpoint_slug: str) -> None:
        """In this process (the core's `RememberResponse`); `share` writes it for all."""
        self.directory.remember(response_id, username, endpoint_slug)

    async def share(self, response_id: str, username: str, endpoint_slug: str) -> None:
        """Write the entry to Redis (nothing without one), before the client is answered."""
        if self._redis is not None:
            value = json.dumps({"username": username, "endpoint": endpoint_slug})
            await self._io(self._put, response_id, value)

    async def load(self, response_id: str) -> None:
        """Read the entry from Redis into the directory, where the core looks for it."""
        if self._redis is None:
            return
        found = await self._io(self._get, response_id)
        if found is not None:
            self.directory.remember(response_id, *found)

    async def endpoint_for(self, response_id: str, username: str) -> str | None:
        """The endpoint holding `response_id`, if `username` made it."""
        await self.load(response_id)
        return self.directory.endpoint_for(response_id, username)

    async def forget(self, response_id: str) -> None:
        """The backend deleted it: follow-ups have nowhere to go, on any replica."""
        self.directory.forget(response_id)
        if self._redis is not None:
            await self._io(self._delete, response_id)

    def close(self) -> None:
        if self._redis is not None:
            with contextlib.suppress(*failures()):
                self._redis.close()

    # -- Redis, in worker threads ---------------------------------------------------------

    async def _io(self, call: Any, *args: Any) -> Any:
        try:
            answer = await anyio.to_thread.run_sync(call, *args)
        except failures() as exc:
            if not self._failing:
                log.warning(
                    "stored responses: Redis failed (%s); this process answers follow-ups "
                    "only for the responses it made itself until Redis answers again",
                    type(exc).__name__,
                )
            self._failing = True
            return None
        if self._failing:
            log.warning("stored responses: Redis answers again")
        self._failing = False
        return answer

    def _key(self, response_id: str) -> str:
        return f"{self._prefix}response:{response_id}"

    def _put(self, response_id: str, value: str) -> None:
        assert self._redis is not None
        self._redis.set(self._key(response_id), value, px=self._ttl_ms)

    def _get(self, response_id: str) -> tuple[str, str] | None:
        assert self._redis is not None
        value = self._redis.get(self._key(response_id))
        if not isinstance(value, bytes):
            return None
        try:
            data: Any = json.loads(value)
            return str(data["username"]), str(data["endpoint"])
        except (ValueError, KeyError, TypeError):
            return None

    def _delete(self, response_id: str) -> None:
        assert self._redis is not None
        self._redis.delete(self._key(response_id))
