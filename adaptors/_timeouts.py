"""Per-endpoint time limits: four config keys, the settings' defaults, and how they meet.

A backend call has four limits (see `transports.Timeout`): `connect_timeout`,
`first_byte_timeout` (the request sent until the answer's head, and for a stream its
first bytes), `stream_idle_timeout` (each silence between a stream's later chunks) and
`total_timeout` (a whole non-streamed answer).  A stream that keeps sending is never cut
for its length: streams get no total limit at all.

Where each limit comes from, first found wins:

1. the key of that name in the endpoint's `config`;
2. the seed's `api_request_timeout` in the endpoint's `config`, when written there, for
   what it always bounded: the wait for the first byte and a whole non-streamed answer
   (never a stream that keeps sending);
3. the key of that name in the `config` of the endpoint's cluster (a default for every
   endpoint on that cluster);
4. the gateway's settings (`INFERENCE_GATEWAY_CONNECT_TIMEOUT`, `..._FIRST_BYTE_TIMEOUT`,
   `..._STREAM_IDLE_TIMEOUT`, `..._TOTAL_TIMEOUT`), handed to adaptors at `bind`.
"""

from __future__ import annotations

from typing import Any

import attrs
from pydantic import BaseModel, Field

from transports import Timeout

__all__ = ["DEFAULT_TIMEOUTS", "TIMEOUT_KEYS", "TimeoutConfig", "endpoint_timeout"]

# The built-in defaults, what the settings default to as well.
DEFAULT_TIMEOUTS = Timeout(connect=10.0, read=120.0, first_byte=120.0, idle=120.0, total=120.0)

# Config key -> the `Timeout` field it sets.
TIMEOUT_KEYS = {
    "connect_timeout": "connect",
    "first_byte_timeout": "first_byte",
    "stream_idle_timeout": "idle",
    "total_timeout": "total",
}
_LEGACY_BOUNDS = ("first_byte", "total")  # what api_request_timeout always bounded


class TimeoutConfig(BaseModel):
    """The four limits as optional `config` keys, in seconds; unset, the next source's."""

    connect_timeout: float | None = Field(default=None, gt=0)
    first_byte_timeout: float | None = Field(default=None, gt=0)
    stream_idle_timeout: float | None = Field(default=None, gt=0)
    total_timeout: float | None = Field(default=None, gt=0)


def _keys_of(config: Any) -> dict[str, float]:
    """The limits a config sets itself, by `Timeout` field."""
    return {
        field: value
        for key, field in TIMEOUT_KEYS.items()
        if isinstance(value := getattr(config, key, None), int | float)
    }


def endpoint_timeout(
    config: Any,
    *,
    legacy: float | None,
    cluster_config: Any = None,
    defaults: Timeout = DEFAULT_TIMEOUTS,
    stream: bool,
) -> Timeout:
    """The limits of one call: `config` the endpoint's, `legacy` its `api_request_timeout`
    if written there, `cluster_config` its cluster's config, `defaults` the settings'.

    Each receive of a whole answer's body is bounded by the total limit alone, so an
    answer that keeps arriving is cut only when the total runs out.
    """
    chosen = {
        "connect": defaults.connect,
        "first_byte": defaults.first_byte,
        "idle": defaults.idle,
        "total": defaults.total,
    }
    chosen.update(_keys_of(cluster_config))
    if legacy is not None:
        chosen.update(dict.fromkeys(_LEGACY_BOUNDS, legacy))
        if chosen["connect"] is not None:
            chosen["connect"] = min(chosen["connect"], legacy)
    chosen.update(_keys_of(config))
    total = None if stream else chosen["total"]
    return attrs.evolve(
        DEFAULT_TIMEOUTS,
        connect=chosen["connect"],
        read=chosen["total"],
        first_byte=chosen["first_byte"],
        idle=chosen["idle"],
        total=total,
    )
