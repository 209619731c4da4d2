"""`Drain.cuttable()` alone, under asyncio and trio: a cut ends a waiting block quietly
and only that block, waits for a shielded scope inside it to finish, never swallows its
caller's own cancellation, and leaves the task as it found it (under asyncio the block
is lazy until the cut: these say it still behaves as the cancel scope it stands for)."""

from __future__ import annotations

import anyio
import pytest

from frontends.drain import Drain

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_a_cut_ends_the_waiting_block_quietly_and_the_task_goes_on() -> None:
    drain = Drain()
    steps: list[str] = []

    async def wait() -> None:
        with drain.cuttable():
            await anyio.sleep_forever()
            steps.append("not reached")
        steps.append("after the block")
        await anyio.sleep(0)  # no cancellation left pending on the task
        steps.append("went on")

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(wait)
            while not drain.waiting:
                await anyio.sleep(0)
            assert drain.cut() == 1
    assert steps == ["after the block", "went on"]
    assert drain.waiting == 0


async def test_a_shielded_scope_inside_the_block_finishes_before_the_cut_lands() -> None:
    drain = Drain()
    shielded = anyio.Event()
    release = anyio.Event()
    steps: list[str] = []

    async def wait() -> None:
        with drain.cuttable():
            with anyio.CancelScope(shield=True):
                shielded.set()
                await release.wait()
                steps.append("shield done")
            await anyio.sleep_forever()
            steps.append("not reached")
        steps.append("after the block")

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(wait)
            await shielded.wait()
            assert drain.cut() == 1
            for _ in range(5):
                await anyio.sleep(0)
            assert steps == []
            release.set()
    assert steps == ["shield done", "after the block"]


async def test_the_callers_own_cancellation_is_not_swallowed() -> None:
    drain = Drain()
    steps: list[str] = []

    async def wait(outer: anyio.CancelScope) -> None:
        with outer:
            with drain.cuttable():
                await anyio.sleep_forever()
            steps.append("not reached")
        steps.append("after the caller's scope")

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            outer = anyio.CancelScope()
            tasks.start_soon(wait, outer)
            while not drain.waiting:
                await anyio.sleep(0)
            outer.cancel()
            drain.cut()
    assert steps == ["after the caller's scope"]


async def test_a_block_that_ends_before_the_cut_is_not_touched() -> None:
    drain = Drain()
    with drain.cuttable():
        await anyio.sleep(0)
    assert drain.cut() == 0
    await anyio.sleep(0)  # nothing pending on this task


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_native_cancellation_landing_with_the_cut_is_not_swallowed() -> None:
    # How Hypercorn's asyncio worker cancels a request whose client left.
    import asyncio

    drain = Drain()
    steps: list[str] = []

    async def wait() -> None:
        with drain.cuttable():
            await asyncio.sleep(3600)
        steps.append("not reached")

    task = asyncio.get_running_loop().create_task(wait())
    while not drain.waiting:
        await asyncio.sleep(0)
    drain.cut()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 30)
    assert steps == []
