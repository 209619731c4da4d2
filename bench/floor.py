"""The framework's floor: a bare Quart app on Hypercorn, served the way `inference-gateway
serve` serves (same Hypercorn entry point, worker and event loop: `--uvloop` as the
gateway's `UVLOOP` setting, both through `frontends.event_loop.run_asyncio`), that reads
the body, parses it, and answers the canned JSON or SSE with no upstream call.  Whatever the
gateway costs beyond this is the gateway's own.  For the open-streams figure it also holds
streams open itself for the drip model (`bench.open_streams.DRIP_MODEL`): a chunk every
`--every` seconds, as the drip backend sends them through the gateway, so the memory one
open stream costs has the framework's own figure beside it.

    python -m bench.floor --port 8001 [--loop asyncio|trio] [--uvloop] [--every 5]
"""

from __future__ import annotations

import argparse
import json
import signal
from collections.abc import AsyncIterator
from typing import Any

import anyio
from quart import Quart, Response, request

from bench.canned import CHAT_JSON, CHAT_SSE
from bench.open_streams import DRIP_MODEL, drip_event


def make_app(app_class: type[Quart] = Quart, every: float = 5.0) -> Quart:
    app = app_class("bench_floor")
    app.config.update(RESPONSE_TIMEOUT=None)

    @app.post("/v1/chat/completions")
    async def chat() -> Response:
        body = json.loads(await request.get_data())
        if body.get("model") == DRIP_MODEL:

            async def drip() -> AsyncIterator[bytes]:
                n = 0
                while True:
                    yield drip_event(n)
                    n += 1
                    await anyio.sleep(every)

            return Response(drip(), content_type="text/event-stream")
        if body.get("stream"):

            async def events() -> AsyncIterator[bytes]:
                yield CHAT_SSE.encode()

            return Response(events(), content_type="text/event-stream")
        return Response(CHAT_JSON, content_type="application/json")

    return app


def _config(port: int) -> Any:
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--uvloop", action="store_true", help="asyncio on uvloop")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between drips")
    args = parser.parse_args()
    if args.loop == "trio":
        import trio
        from hypercorn.trio import serve as trio_serve
        from quart_trio import QuartTrio

        async def run_trio() -> None:
            async def wait_for_signal() -> None:
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        return

            await trio_serve(
                make_app(QuartTrio, args.every),
                _config(args.port),
                shutdown_trigger=wait_for_signal,
            )

        trio.run(run_trio)
        return
    import asyncio

    from hypercorn.asyncio import serve

    from frontends.event_loop import run_asyncio

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await serve(make_app(every=args.every), _config(args.port), shutdown_trigger=stop.wait)

    run_asyncio(run, uvloop=args.uvloop)


if __name__ == "__main__":
    main()
