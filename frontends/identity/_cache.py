"""A small expiring cache keyed by the SHA-256 of a token (never the token itself)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["TokenCache", "token_key"]

T = TypeVar("T")


def token_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenCache(Generic[T]):
    def __init__(self, clock: Callable[[], float], max_entries: int = 10_000) -> None:
        self._clock = clock
        self._max = max_entries
        self._items: dict[str, tuple[float, T]] = {}

    def get(self, token: str) -> T | None:
        key = token_key(token)
        item = self._items.get(key)
        if item is None:
            return None
        until, value = item
        if self._clock() >= until:
            del self._items[key]
            return None
        return value

    def put(self, token: str, value: T, ttl: float) -> None:
        if ttl <= 0:
            return
        if len(self._items) >= self._max:
            now = self._clock()
            self._items = {k: v for k, v in self._items.items() if v[0] > now}
            while len(self._items) >= self._max:
                self._items.pop(next(iter(self._items)))
        self._items[token_key(token)] = (self._clock() + ttl, value)

    def __len__(self) -> int:
        return len(self._items)
