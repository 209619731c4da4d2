"""The quota counters: the edge that carries out the core's Reserve, Settle and Release.

The core decides what a request must reserve and what to answer when it does not fit;
the counters only keep the numbers, atomically.  `reserve` is the one call the request
waits for (it decides admission); `settle` and `release` never block the request path:
they are recorded at once in process, or handed to a background writer by counters that
live elsewhere.

`InProcessCounters` count for one process; `RedisCounters` share the counts between
replicas through Redis and fall back to counting in process while it is unreachable.
Both have `status()`, a small dict whose `backend` says which is counting (for health
and metrics); counters with an `aclose()` are closed when the gateway stops.
"""

from typing import TYPE_CHECKING, Any

from frontends.quota._base import QuotaCounters
from frontends.quota._local import InProcessCounters

if TYPE_CHECKING:
    from frontends.quota._redis import DEFAULT_PREFIX, RedisCounters

__all__ = ["DEFAULT_PREFIX", "InProcessCounters", "QuotaCounters", "RedisCounters"]


def __getattr__(name: str) -> Any:
    """`RedisCounters` and `DEFAULT_PREFIX` load redis-py (about 6 MB), which a gateway
    counting in process never needs: they are imported on first use."""
    if name in ("DEFAULT_PREFIX", "RedisCounters"):
        from frontends.quota import _redis

        return getattr(_redis, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
