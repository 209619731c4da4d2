"""One finished request's log entry, as the request machine would write it, for tests
of the request log and its readers: every field set, each test changing what it is about."""

from __future__ import annotations

from typing import Any

import attrs

from core import LogEntry, Usage

__all__ = ["log_entry"]

_BASE = LogEntry(
    request_id="log-1",
    route="chat/completions",
    status=200,
    username="ada@example.org",
    provider="static",
    endpoint_slug="lab-vllm-m",
    cluster="lab",
    framework="vllm",
    model="m",
    stream=False,
    usage=Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7),
    estimated=False,
    cancelled=False,
    detail=None,
    task_id=None,
    bytes_in=10,
    bytes_out=20,
    client="10.0.0.1",
)


def log_entry(**changes: Any) -> LogEntry:
    """A complete entry (ada's chat completion on the lab's vLLM), with `changes`."""
    return attrs.evolve(_BASE, **changes)
