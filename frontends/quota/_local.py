"""Counters for one process: the core's `Ledger` with the process's monotonic clock.

Every call runs to completion without awaiting anything, so on one event loop a reserve
is atomic by construction.  Replicas (or `serve --workers N`) each have their own: use
the Redis counters to share limits between processes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from core import Ledger, Refusal, Reservation

__all__ = ["InProcessCounters"]


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


class InProcessCounters:
    def __init__(self, clock: Callable[[], int] = _now_ms) -> None:
        self._ledger = Ledger()
        self._clock = clock

    async def reserve(
        self, reservation_id: str, reservations: Sequence[Reservation]
    ) -> Refusal | None:
        return self._ledger.reserve(reservation_id, reservations, self._clock())

    def settle(self, reservation_id: str, keys: Sequence[str], used: int) -> None:
        self._ledger.settle(reservation_id, keys, used)

    def release(self, reservation_id: str, keys: Sequence[str]) -> None:
        self._ledger.release(reservation_id, keys)

    def used(self, key: str) -> int:
        """What `key` holds in the window ending now (for health and tests)."""
        return self._ledger.used(key, self._clock())

    async def holding(self, key: str) -> int:
        return self.used(key)

    def status(self) -> dict[str, Any]:
        """For health and metrics: always `{"backend": "in-process"}`."""
        return {"backend": "in-process"}
