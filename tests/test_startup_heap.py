"""A served app moves what the process holds at start out of the collector's reach while
it serves (`create_app(freeze_startup_heap=True)`, which `serve` asks for): full
collections then walk only what serving made, not the whole started process."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from frontends.assembly import build_gateway
from frontends.gateway import Gateway
from frontends.identity import StaticKeys
from frontends.web import create_app
from tests.support.gateway_server import REPO_FIXTURES, write_tokens
from transports.httpx_transport import HttpxTransport

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _gateway(tmp_path: Path) -> Gateway:
    return build_gateway(
        REPO_FIXTURES,
        identity=StaticKeys.from_file(write_tokens(tmp_path)),
        transport=HttpxTransport(),
    )


async def test_the_started_heap_is_frozen_while_serving_and_thawed_after(tmp_path: Path) -> None:
    assert gc.get_freeze_count() == 0
    app = create_app(_gateway(tmp_path), freeze_startup_heap=True)
    async with app.test_app():
        # Everything that exists once serving starts, the app among it.
        assert gc.get_freeze_count() > 10_000
        assert all(held is not app for held in gc.get_objects())
    assert gc.get_freeze_count() == 0


async def test_an_embedded_app_leaves_the_collector_alone(tmp_path: Path) -> None:
    app = create_app(_gateway(tmp_path))
    async with app.test_app():
        assert gc.get_freeze_count() == 0
