"""Request records for the store's tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from frontends.store import RequestRecord

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def record(n: int, **fields: Any) -> RequestRecord:
    """A plausible finished chat request, numbered n; any field can be overridden."""
    values: dict[str, Any] = {
        "id": f"log-{n:06d}",
        "request_id": f"req-{n:06d}",
        "received_at": T0 + timedelta(seconds=n),
        "route": "chat/completions",
        "status": 200,
        "username": "ada@example.org",
        "model": "llama-8b",
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
    }
    values.update(fields)
    return RequestRecord(**values)
