"""What the web layer costs per request: the gateway's Quart app against the framework's
floor, both driven through their ASGI callables in this process, with no server and no
network.

* **floor**: `bench.floor`'s bare Quart app (reads the body, answers canned JSON);
* **web**: `frontends.web.create_app` (metrics, files and batches on, as `serve` has
  them) around a gateway whose `handle` answers at once with a canned answer: Quart,
  our hooks, the access layer and the conversions, and nothing of the gateway's own;
  **web - floor** is what ours adds to Quart's own;
* **app**: the same app around an embedded gateway (a fixed identity) whose transport
  answers at once (`bench.core_cost`'s canned answer);
* **embedded**: that gateway's `handle()` alone, fed the request the app would build.

With `--stream`, each side also serves the chat as a stream (`-sse`): the floor its
canned SSE, the app the canned backend stream (`bench.canned`'s: five words, a usage
chunk, `[DONE]`, in one piece, as the bench's nginx sends it), the gateway with stream
usage on as `serve` has it, so **app-sse - app** is what a stream costs beyond a JSON
answer, against the framework's own **floor-sse - floor**.

Each request is one ASGI call with a scripted `receive` (the whole body in one message,
then nothing until the app is done) and a `send` that keeps nothing; the access log is
on, set up as `serve` sets it up (its lines thrown away).  Figures are CPU microseconds
per request (`time.process_time`) over rounds that alternate the sides, so whatever else
the machine does hits each alike: the least round (what the machine's other work
inflated least) and the median.

    python -m bench.web_cost [--requests 1000] [--rounds 15] [--loop asyncio|uvloop] [--stream]

Compare figures only with a run of the other version on the same machine, side by side
(`PYTHONPATH=<other checkout> python <this file>` runs this bench against it).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import attrs

from bench.core_cost import ALICE, ANSWER, BODY, KEY_ENV, STREAM_BODY, _Canned, _fixtures
from bench.floor import make_app as floor_app
from core import OpenAIRoute
from frontends.batches import Batches
from frontends.cli import _access_log_to_stderr
from frontends.embedding import FixedIdentity
from frontends.gateway import Gateway, GatewayRequest, GatewayResponse
from frontends.metrics import MetricsSink
from frontends.store import BatchStore, Store, default_database_url

WARM_UP = 300  # requests per side before the rounds
HEADERS = [
    (b"host", b"127.0.0.1:8000"),
    (b"authorization", b"Bearer k"),
    (b"content-type", b"application/json"),
]


def _scope(body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [*HEADERS, (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "extensions": {},
    }


async def _call(
    app: Callable[..., Awaitable[None]], loop: asyncio.AbstractEventLoop, body: bytes = BODY
) -> int:
    """One request through `app`; its status."""
    first = True
    done = loop.create_future()
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": body, "more_body": False}
        await done  # nothing more until the app has answered (then it is cancelled)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif not message.get("more_body", False) and not done.done():
            done.set_result(None)

    await app(_scope(body), receive, send)
    return status


async def _round(run: Callable[[], Awaitable[Any]], count: int) -> float:
    start = time.process_time()
    for _ in range(count):
        await run()
    return (time.process_time() - start) / count * 1e6


def _gateway(folder: Path) -> tuple[Gateway, MetricsSink]:
    from frontends.assembly import build_gateway

    metrics = MetricsSink()
    gateway = build_gateway(
        folder,
        identity=FixedIdentity(ALICE),
        transport=_Canned(),
        environ={KEY_ENV: "sk-bench"},
        log_sink=metrics,
        stream_observer=metrics,
        stream_usage=True,  # as `serve` has it
    )
    return gateway, metrics


def _chat(body: bytes = BODY) -> GatewayRequest:
    return GatewayRequest(
        route=OpenAIRoute.CHAT_COMPLETIONS,
        body=body,
        content_type="application/json",
        authorization="Bearer k",
        client="127.0.0.1",
    )


class _Replayed:
    """A canned stream answer's body, served afresh each time it is iterated."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk

    async def aclose(self) -> None:
        pass


async def _measure(requests: int, rounds: int, stream: bool) -> dict[str, list[float]]:
    from frontends.web import create_app

    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory() as tmp:
        folder = _fixtures(Path(tmp))
        # The files and batches routes on, as `serve` has them: their upload limit adds
        # a check before every request.  No migration: no request here reaches the store.
        store = Store.connect(default_database_url(folder / "state"), apply_migrations=False)
        gateway, metrics = _gateway(folder)
        app = create_app(
            gateway, metrics=metrics, batches=Batches(gateway, BatchStore(store.engine))
        )
        canned_gateway, canned_metrics = _gateway(folder)
        canned = await canned_gateway.handle(_chat())
        streamed = await canned_gateway.handle(_chat(STREAM_BODY))
        assert streamed.stream is not None
        relayed = [chunk async for chunk in streamed.stream]
        canned_stream = attrs.evolve(streamed, stream=_Replayed(relayed))

        async def at_once(request: GatewayRequest) -> GatewayResponse:
            return canned_stream if request.body == STREAM_BODY else canned

        canned_gateway.handle = at_once  # type: ignore[method-assign]
        web = create_app(
            canned_gateway,
            metrics=canned_metrics,
            batches=Batches(canned_gateway, BatchStore(store.engine)),
        )
        floor = floor_app()
        for served in (app, web, floor):
            await served.startup()

        async def through(served: Any, body: bytes = BODY) -> None:
            assert await _call(served, loop, body) == 200

        async def embedded() -> None:
            answer = await gateway.handle(_chat())
            assert answer.status == 200 and answer.body == ANSWER

        async def embedded_stream() -> None:
            answer = await gateway.handle(_chat(STREAM_BODY))
            assert answer.stream is not None
            async for chunk in answer.stream:
                assert chunk
            await answer.stream.aclose()

        sides: dict[str, Callable[[], Awaitable[None]]] = {
            "floor": partial(through, floor),
            "web": partial(through, web),
            "app": partial(through, app),
            "embedded": embedded,
        }
        if stream:
            sides |= {
                "floor-sse": partial(through, floor, STREAM_BODY),
                "web-sse": partial(through, web, STREAM_BODY),
                "app-sse": partial(through, app, STREAM_BODY),
                "embedded-sse": embedded_stream,
            }
        samples: dict[str, list[float]] = {name: [] for name in sides}
        try:
            for run in sides.values():
                await _round(run, WARM_UP)
            for _ in range(rounds):
                for name, run in sides.items():
                    samples[name].append(await _round(run, requests))
        finally:
            for served in (app, web, floor):
                await served.shutdown()
            store.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop")
    parser.add_argument("--stream", action="store_true", help="streamed chats too (-sse)")
    args = parser.parse_args()
    os.environ[KEY_ENV] = "sk-bench"
    # The access log as `serve` sets it up, its lines thrown away.
    stderr, sys.stderr = sys.stderr, open(os.devnull, "w")  # noqa: SIM115 (for the run)
    try:
        _access_log_to_stderr()
    finally:
        sys.stderr = stderr
    logging.getLogger("inference_gateway").setLevel(logging.WARNING)

    from frontends.event_loop import run_asyncio, uvloop_installed

    samples: dict[str, list[float]] = {}

    async def run() -> None:
        samples.update(await _measure(args.requests, args.rounds, args.stream))

    run_asyncio(run, uvloop=args.loop == "uvloop" and uvloop_installed())
    least = {name: min(values) for name, values in samples.items()}
    median = {name: statistics.median(values) for name, values in samples.items()}
    print(f"{args.requests} requests per round, {args.rounds} rounds, CPU us/request")
    print(f"{'side':<16}{'least':>10}{'median':>10}")
    for name in samples:
        print(f"{name:<16}{least[name]:>10.1f}{median[name]:>10.1f}")
    pairs = [("web", "floor"), ("app", "embedded")]
    if args.stream:
        pairs += [
            ("web-sse", "floor-sse"),
            ("app-sse", "embedded-sse"),
            ("floor-sse", "floor"),
            ("app-sse", "app"),
            ("embedded-sse", "embedded"),
        ]
    for a, b in pairs:
        print(f"{a + ' - ' + b:<16}{least[a] - least[b]:>10.1f}{median[a] - median[b]:>10.1f}")


if __name__ == "__main__":
    main()
