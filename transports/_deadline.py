"""The total-time limit shared by every transport: one deadline for a whole exchange."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import anyio

from transports._base import TotalTimeout, TransportTimeout

__all__ = ["deadline_after", "until"]


def deadline_after(seconds: float | None) -> float:
    """The loop-clock time by which a call must finish (inf: no limit)."""
    return math.inf if seconds is None else anyio.current_time() + seconds


@contextmanager
def until(
    deadline: float,
    error: TransportTimeout | None = None,
) -> Iterator[None]:
    """`fail_after` for the time left before `deadline` (inf: no limit).

    A deadline already past raises `error` (by default the total limit's) at once; one
    that runs out inside raises TimeoutError, which the transport maps by its phase.
    """
    if deadline == math.inf:
        yield
        return
    remaining = deadline - anyio.current_time()
    if remaining <= 0:
        raise error or TotalTimeout("the backend call exceeded its total time limit")
    with anyio.fail_after(remaining):
        yield
