"""A clock the test moves by hand, for code that takes `clock: Callable[[], float]`."""

from __future__ import annotations

__all__ = ["ManualClock"]


class ManualClock:
    """Reads `now`; only `advance` moves it (safe to read from a server's thread)."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
