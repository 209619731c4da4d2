"""redis-py, loaded only by the edges that use Redis.

redis-py (with the OpenTelemetry and cryptography modules it imports) costs a worker
about 6 MB of RSS; a gateway without `redis_url` never needs it.  So the edges that may
use Redis build their client with `connect` and catch its errors with `failures()`,
and only a gateway given a Redis URL imports it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis

__all__ = ["connect", "failures"]


def connect(url: str, **options: Any) -> redis.Redis:
    """`redis.Redis.from_url(url, **options)`, importing redis-py now."""
    import redis

    return redis.Redis.from_url(url, **options)


def failures() -> tuple[type[Exception], ...]:
    """What a Redis medium raises when it fails: `OSError`, and redis-py's errors once
    redis-py is loaded (before that, no Redis client exists that could raise them)."""
    loaded = sys.modules.get("redis")
    return (OSError,) if loaded is None else (OSError, loaded.RedisError)
