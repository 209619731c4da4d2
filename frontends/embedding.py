"""Embedding the gateway in a Python program, under asyncio or trio alike.

The same `Gateway` the HTTP server drives, without HTTP: build it from fixtures, call
`request()`, read `.json()` or iterate `.events()`.  Everything underneath is written
against anyio, so `asyncio.run(main())` and `trio.run(main)` both work.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import attrs

from core import Identity
from frontends.assembly import build_gateway
from frontends.gateway import Gateway
from frontends.identity import IdentityProvider
from frontends.log_sink import FanOut, LoggerSink
from frontends.metrics import MetricsSink
from frontends.settings import default_fixtures
from transports import Transport

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
) -> AsyncIterator[Gateway]:
    """A Gateway over these fixtures (default: the built-in demo catalog), closed (with its
    transport) on exit.

    The keys the fixtures name (`api_key_env_name`) are looked up in `environ`, the
    process environment by default.  With `metrics`, every request is counted there
    (beside the log lines); `metrics.render()` gives the Prometheus exposition.
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
    )
    try:
        yield gateway
    finally:
        await gateway.aclose()
