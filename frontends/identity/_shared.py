"""Identities shared by replicas through Redis, so that a token is introspected once for
all of them, not once per replica.

An answer (an identity, or why the token was refused) is kept under the SHA-256 of the
token, never the token, for the time the provider's own cache would keep it.  When no
replica has it yet, the first to ask takes a short lock (`SET NX PX`); the others wait
for its answer rather than asking the provider too, and ask it themselves only if the
lock's holder gave nothing in time (it died, or the provider is slow).  Within one
process, concurrent requests with one token wait for one answer (`single_flight`).

Redis is an edge like the quota counters: the sync client runs on worker threads, so
it works under asyncio and trio alike.  Any Redis error reads as "not cached": identity
never fails because the cache is away.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import redis

from core import Identity, Rule
from frontends.identity._base import AccessRefused, CredentialsRejected
from frontends.identity._cache import token_key

__all__ = ["Answer", "RedisIdentities", "decode_answer", "encode_answer"]

Answer = Identity | CredentialsRejected | AccessRefused

LOCK_MS = 5_000  # how long one replica may take to introspect before another tries


def encode_answer(answer: Answer) -> str:
    if isinstance(answer, Identity):
        return json.dumps(
            {
                "kind": "identity",
                "username": answer.username,
                "groups": sorted(answer.groups),
                "provider": answer.provider,
                "subject": answer.subject,
                "expires_at": answer.expires_at,
            }
        )
    if isinstance(answer, CredentialsRejected):
        return json.dumps({"kind": "rejected", "reason": answer.reason})
    return json.dumps({"kind": "refused", "rule": answer.rule.value})


def decode_answer(text: str | bytes) -> Answer | None:
    """The answer written by `encode_answer`; None for anything else."""
    try:
        data: Any = json.loads(text)
        kind = data["kind"]
        if kind == "identity":
            return Identity(
                username=data["username"],
                groups=frozenset(data["groups"]),
                provider=data["provider"],
                subject=data["subject"],
                expires_at=data["expires_at"],
            )
        if kind == "rejected":
            return CredentialsRejected(data["reason"])
        if kind == "refused":
            return AccessRefused(Rule(data["rule"]))
    except (ValueError, KeyError, TypeError):
        return None
    return None


class RedisIdentities:
    """The shared cache: `answer(token, ask, ttl_of)` is the one call providers make."""

    def __init__(self, url: str, *, prefix: str, wait_seconds: float = LOCK_MS / 1000) -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._prefix = prefix
        self._wait = wait_seconds
        self._flights: dict[str, anyio.Event] = {}

    def _key(self, token: str) -> str:
        return f"{self._prefix}identity:{token_key(token)}"

    def _get(self, key: str) -> bytes | None:
        try:
            value = self._redis.get(key)
        except redis.RedisError:
            return None
        return value if isinstance(value, bytes) else None

    def _lock(self, key: str) -> bool:
        try:
            return bool(self._redis.set(f"{key}:lock", b"1", nx=True, px=LOCK_MS))
        except redis.RedisError:
            return True  # no Redis: ask the provider ourselves

    def _unlock(self, key: str) -> None:
        with contextlib.suppress(redis.RedisError):
            self._redis.delete(f"{key}:lock")

    def _put(self, key: str, value: str, ttl: float) -> None:
        try:
            if ttl > 0:
                self._redis.set(key, value, px=max(1, int(ttl * 1000)))
            self._redis.delete(f"{key}:lock")
        except redis.RedisError:
            pass

    async def cached(self, token: str) -> Answer | None:
        value = await anyio.to_thread.run_sync(self._get, self._key(token))
        return None if value is None else decode_answer(value)

    async def answer(
        self,
        token: str,
        ask: Callable[[], Awaitable[Answer]],
        ttl_of: Callable[[Answer], float],
    ) -> Answer:
        """The shared answer for `token`, asking the provider (`ask`) only when no replica
        has it and no other is asking right now."""
        key = self._key(token)
        while (flight := self._flights.get(key)) is not None:
            await flight.wait()  # this process is asking already
        # No await between the look above and this: one flight per key in a process.
        self._flights[key] = done = anyio.Event()
        try:
            found = await self.cached(token)
            if found is not None:
                return found
            if not await anyio.to_thread.run_sync(self._lock, key):
                # Another replica is asking: wait for its answer, then ask ourselves.
                with anyio.move_on_after(self._wait):
                    while True:
                        await anyio.sleep(0.02)
                        found = await self.cached(token)
                        if found is not None:
                            return found
            try:
                answer = await ask()
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._unlock, key)
                raise
            await anyio.to_thread.run_sync(self._put, key, encode_answer(answer), ttl_of(answer))
            return answer
        finally:
            self._flights.pop(key, None)
            done.set()

    def close(self) -> None:
        self._redis.close()
