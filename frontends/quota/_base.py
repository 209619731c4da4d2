"""The small interface the driver owns for quota counters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from core import Refusal, Reservation

__all__ = ["QuotaCounters"]


class QuotaCounters(Protocol):
    async def reserve(
        self, reservation_id: str, reservations: Sequence[Reservation]
    ) -> Refusal | None:
        """Record every reservation under `reservation_id`, or none and say which limit
        refused; one atomic step, so concurrent requests never overshoot a limit."""
        ...

    def settle(self, reservation_id: str, keys: Sequence[str], used: int) -> None:
        """What `reservation_id` holds on these keys becomes `used`; never blocks or raises."""
        ...

    def release(self, reservation_id: str, keys: Sequence[str]) -> None:
        """Give back what `reservation_id` holds on these keys; never blocks or raises."""
        ...

    async def holding(self, key: str) -> int:
        """What `key` holds in the window ending now (for the status page: what is left of
        a caller's quota); may raise when the counters cannot be read."""
        ...

    def status(self) -> dict[str, Any]:
        """A small dict for health and metrics; `backend` names what counts: "in-process",
        "redis" or "redis-unreachable, using in-process"."""
        ...
