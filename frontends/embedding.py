"""Embedding the gateway in a Python program, under asyncio or trio alike.

The same `Gateway` the HTTP server drives, without HTTP: build it from fixtures, call
`request()`, read `.json()` or iterate `.events()`.  Everything underneath is written
against anyio, so `asyncio.run(main())` and `trio.run(main)` both work.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import attrs

from core import Identity
from frontends.assembly import build_gateway
from frontends.gateway import Gateway
from frontends.identity import IdentityProvider
from frontends.log_sink import FanOut, LoggerSink
from frontends.metrics import MetricsSink
from frontends.settings import default_fixtures
from transports import Transport

if TYPE_CHECKING:
    from frontends.store import Store

__all__ = ["FixedIdentity", "open_gateway"]


@attrs.frozen
class FixedIdentity:
    """Every caller is this identity: for a host program that has already decided who its
    user is.  Fixture rules (groups, domains) still apply to it in full."""

    identity: Identity

    async def resolve(self, credentials: str) -> Identity | None:
        return self.identity


@asynccontextmanager
async def open_gateway(
    fixtures_dir: Path | str | None = None,
    *,
    identity: IdentityProvider,
    transport: Transport | None = None,
    environ: Mapping[str, str] | None = None,
    metrics: MetricsSink | None = None,
    store: Store | str | None = None,
    capture_limit: int | None = None,
) -> AsyncIterator[Gateway]:
    """A Gateway over these fixtures (default: the built-in demo catalog), closed (with its
    transport) on exit.

    The keys the fixtures name (`api_key_env_name`) are looked up in `environ`, the
    process environment by default.  With `metrics`, every request is counted there
    (beside the log lines); `metrics.render()` gives the Prometheus exposition.


    With no `store` (the default) nothing is recorded and no database is touched.  With
    one (a `frontends.store.Store`, or a database URL, opened and migrated here), every
    request is written to its request log, and leaving the block flushes the log; with
    `capture_limit` too, so are the first that many characters of prompts and answers.
    """
    if fixtures_dir is None:
        fixtures_dir = default_fixtures()
    if transport is None:
        from transports.httpx_transport import HttpxTransport

        transport = HttpxTransport()
    gateway = build_gateway(
        fixtures_dir,
        identity=identity,
        transport=transport,
        environ=environ,
        log_sink=None if metrics is None else FanOut(LoggerSink(), metrics),
        stream_observer=metrics,
        capture_limit=capture_limit,
    )
    try:
        async with AsyncExitStack() as stack:
            if store is not None:
                from frontends.request_log import RequestLog

                if isinstance(store, str):
                    url = store
                    request_log = await anyio.to_thread.run_sync(
                        lambda: RequestLog.open(url, capture_limit=capture_limit)
                    )
                else:
                    request_log = RequestLog(store, capture_limit=capture_limit)
                gateway.add_log_sink(request_log)
                await stack.enter_async_context(request_log.running())
            yield gateway
    finally:
        await gateway.aclose()
