"""An OpenAI-compatible backend whose answers wait at gates the test opens (for the
graceful-drain tests: requests and streams that are in flight exactly as long as the
test wants, with no sleeps).

Each request names its gate in its last user message.  A stream sends its first chunk
at once, waits at its gate, then sends the rest and `data: [DONE]`; a non-streamed
answer waits at its gate before it is sent.  `wait_until_waiting(names)` returns once
each of those requests is waiting at its gate; `open(name)` lets one go on.  Served by
`servers.serve_app` (Hypercorn on asyncio, in a thread of its own).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from quart import Quart, Response, request

from tests.support.servers import serve_app

__all__ = ["GatedOpenAI", "running_gated_openai"]

MODEL = "gated"


def _chunk(text: str | None, *, first: bool = False) -> bytes:
    delta: dict[str, Any] = {} if text is None else {"content": text}
    if first:
        delta["role"] = "assistant"
    choice = {"index": 0, "delta": delta, "finish_reason": "stop" if text is None else None}
    payload = {
        "id": "gated-1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": MODEL,
        "choices": [choice],
    }
    return f"data: {json.dumps(payload)}\n\n".encode()


class GatedOpenAI:
    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._waiting: set[str] = set()
        self._opened: set[str] = set()
        self._gates: dict[str, asyncio.Event] = {}
        self._callers: dict[str, list[str | None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.app = self._build_app()

    # -- what the tests use ----------------------------------------------------------------

    def wait_until_waiting(self, names: Iterable[str], timeout: float = 60) -> None:
        wanted = set(names)
        with self._lock:
            if not self._lock.wait_for(lambda: wanted <= self._waiting, timeout):
                raise AssertionError(f"never waiting at their gates: {wanted - self._waiting}")

    def callers(self) -> dict[str, list[str | None]]:
        """Per request (its gate's name), the Authorization header of each time it
        arrived: who sent it, and whether it came more than once."""
        with self._lock:
            return {name: list(seen) for name, seen in self._callers.items()}

    def open(self, *names: str) -> None:
        with self._lock:
            self._opened.update(names)
            loop = self._loop
            gates = [self._gates[n] for n in names if n in self._gates]
        if loop is not None and not loop.is_closed():
            for gate in gates:
                with suppress(RuntimeError):  # the loop closed in between
                    loop.call_soon_threadsafe(gate.set)

    def open_all(self) -> None:
        with self._lock:
            names = list(self._gates)
        self.open(*names)

    # -- the app -------------------------------------------------------------------------

    async def _wait_at(self, name: str) -> None:
        with self._lock:
            gate = self._gates.setdefault(name, asyncio.Event())
            if name in self._opened:
                gate.set()
            self._waiting.add(name)
            self._lock.notify_all()
        try:
            await gate.wait()
        finally:
            with self._lock:
                self._waiting.discard(name)

    def _build_app(self) -> Quart:
        app = Quart("gated_openai")

        @app.before_serving
        async def remember_loop() -> None:
            self._loop = asyncio.get_running_loop()

        @app.post("/v1/chat/completions")
        async def chat() -> Response:
            body = json.loads(await request.get_data(as_text=False))
            name = str(body["messages"][-1]["content"])
            with self._lock:
                self._callers.setdefault(name, []).append(request.headers.get("Authorization"))
            if body.get("stream") is True:
                response = Response(self._stream(name), content_type="text/event-stream")
                response.timeout = None
                return response
            await self._wait_at(name)
            answer = {
                "id": "gated-1",
                "object": "chat.completion",
                "created": 0,
                "model": MODEL,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "Hello world"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
            }
            return Response(json.dumps(answer), content_type="application/json")

        return app

    async def _stream(self, name: str) -> AsyncIterator[bytes]:
        yield _chunk("Hello", first=True)
        await self._wait_at(name)
        yield _chunk(" world")
        yield _chunk(None)
        yield b"data: [DONE]\n\n"


@contextmanager
def running_gated_openai() -> Iterator[tuple[GatedOpenAI, str]]:
    """A `GatedOpenAI` on a free local port; yields (backend, base URL without /v1).
    Every gate opens at the end, so the server stops promptly."""
    backend = GatedOpenAI()
    with serve_app(backend.app) as base_url:
        try:
            yield backend, base_url
        finally:
            backend.open_all()
