"""A gateway worker in multiprocess metrics mode whose request-log queue the test sets.

`python -m tests.support.metrics_worker DIR asyncio|trio` serves the demo catalog (on a
port nobody needs: the test reads the metrics files, not HTTP) with a stand-in queue;
each line on stdin sets the queue's depth, `stop` (or the end of stdin) stops it.
"""

from __future__ import annotations

import sys
from functools import partial

import anyio
import attrs
from hypercorn.config import Config

from frontends.assembly import build_gateway
from frontends.identity import StaticKeys
from frontends.metrics import MetricsSink
from frontends.settings import default_fixtures
from frontends.web import create_app
from transports.httpx_transport import HttpxTransport


@attrs.define
class Queue:
    queue_depth: int = 0
    dropped: int = 0


async def main(directory: str, loop: str) -> None:
    queue = Queue()
    metrics = MetricsSink(multiprocess_dir=directory, log_queue=queue)
    gateway = build_gateway(
        default_fixtures(),
        identity=StaticKeys(),
        transport=HttpxTransport(),
        log_sink=metrics,
        stream_observer=metrics,
    )
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.loglevel = "WARNING"
    if loop == "trio":
        from hypercorn.trio import serve
        from quart_trio import QuartTrio

        app = create_app(gateway, metrics=metrics, app_class=QuartTrio)
    else:
        from hypercorn.asyncio import serve

        app = create_app(gateway, metrics=metrics)
    stop = anyio.Event()
    async with anyio.create_task_group() as group:
        group.start_soon(partial(serve, app, config, shutdown_trigger=stop.wait))
        print("serving", flush=True)
        while True:
            line = (await anyio.to_thread.run_sync(sys.stdin.readline)).strip()
            if not line or line == "stop":
                break
            queue.queue_depth, queue.dropped = (int(n) for n in line.split())
            print("set", flush=True)
        stop.set()
    metrics.close()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], backend=sys.argv[2])
