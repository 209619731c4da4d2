"""Batches through real `serve` processes (see `serve_process`): the settings they share
to run batches on one database, an input file, the official client, waiting on a
condition with a deadline, and the backend's own count of each line."""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import openai

from tests.support.batch_gateway import KEY_ENV, batch_fixtures
from tests.support.fake_openai import FakeOpenAI
from tests.support.gateway_server import ALICE
from tests.support.serve_process import ServeProcess, start_serve

__all__ = [
    "DEADLINE",
    "TERMINAL",
    "backend_counts",
    "client",
    "create_batch",
    "read_lines",
    "start_batch_serve",
    "wait_until",
]

DEADLINE = 120.0
TERMINAL = {"completed", "failed", "expired", "cancelled"}


def start_batch_serve(
    folder: Path,
    backend_url: str,
    database_url: str,
    *,
    models: tuple[str, ...] = ("gated",),
    loop: str = "asyncio",
    **settings: str,
) -> ServeProcess:
    """`serve` on `database_url` with the batch fixtures of the fake backend (an endpoint
    per model in `models`); `settings` add to or replace the batch settings here."""
    fixtures = batch_fixtures(folder.parent / "catalog", backend_url, models=models)
    chosen: Mapping[str, str] = {
        "database_url": database_url,
        "batch_max_active": "8",
        "batch_concurrency": "8",
        **settings,
    }
    return start_serve(
        folder, fixtures=fixtures, loop=loop, settings=chosen, environ={KEY_ENV: "unused"}
    )


def client(served: ServeProcess, key: str = ALICE) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key=key, max_retries=0)


def create_batch(c: openai.OpenAI, tag: str, lines: int, model: str = "gated") -> str:
    """Upload `lines` chat lines, each saying "{tag} line {i}" (`custom_id` "{tag}-{i}"),
    and create their batch; its id."""
    items = [
        {
            "custom_id": f"{tag}-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": f"{tag} line {i}"}]},
        }
        for i in range(lines)
    ]
    content = "".join(json.dumps(item) + "\n" for item in items).encode()
    file_id = c.files.create(file=("input.jsonl", io.BytesIO(content)), purpose="batch").id
    batch = c.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    return batch.id


def read_lines(c: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    """An output or error file's lines (none when the batch has no such file)."""
    if file_id is None:
        return []
    return [json.loads(text) for text in c.files.content(file_id).text.splitlines()]


def backend_counts(fake: FakeOpenAI) -> Counter[str]:
    """How many times the backend received each line ("{tag} line {i}")."""
    chats = [r for r in fake.requests if r.path == "/v1/chat/completions"]
    return Counter(r.json()["messages"][0]["content"] for r in chats)


def wait_until(condition: Callable[[], bool], what: str, deadline: float = DEADLINE) -> None:
    """Poll real processes (the gateway, the backend) until `condition()`, or fail."""
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, f"not within {deadline:.0f} s: {what}"
        time.sleep(0.02)
