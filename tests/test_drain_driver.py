"""The driver's side of the graceful drain, under asyncio and trio: `Gateway.drain.cut()`
ends a stream waiting on its backend with the shutting-down error event, and a request
waiting for its answer with a 503; in both the backend call is cancelled.  A gateway
acting for a batch's owner keeps a drain of its own, which `serve` never cuts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from core import Identity
from frontends.drain import Drain
from frontends.embedding import FixedIdentity, open_gateway
from tests.support.fake_openai import FakeOpenAI, running_fake_openai
from tests.support.quota import limited_fixtures

pytestmark = pytest.mark.anyio

AUTH = {"Authorization": "Bearer embedded"}
ADA = FixedIdentity(Identity(username="ada@example.org"))


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[tuple[FakeOpenAI, Path]]:
    with running_fake_openai(models=["hang-stream", "slow"]) as (fake, url):
        yield fake, limited_fixtures(tmp_path, url, ["hang-stream", "slow"])


def chat(model: str, *, stream: bool) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}


async def test_a_cut_stream_ends_with_the_shutting_down_event_and_cancels_its_backend(
    backend: tuple[FakeOpenAI, Path],
) -> None:
    fake, fixtures = backend
    async with open_gateway(fixtures, identity=ADA) as gateway:
        response = await gateway.request(
            "chat/completions", chat("hang-stream", stream=True), headers=AUTH
        )
        assert response.stream is not None
        chunks = aiter(response.stream)
        first = await anext(chunks)
        assert b'"content"' in first  # the backend's first chunk, then it hangs
        gateway.drain.cut()  # between two reads: the next read is interrupted at once
        last = await anext(chunks)
        with pytest.raises(StopAsyncIteration):
            await anext(chunks)
    error = json.loads(last.strip().removeprefix(b"data: "))["error"]
    assert error["code"] == "gateway_shutting_down"
    assert fake.stream_cancelled.wait(30)


async def test_a_request_waiting_for_its_answer_gets_a_503_when_cut(
    backend: tuple[FakeOpenAI, Path],
) -> None:
    fake, fixtures = backend
    async with open_gateway(fixtures, identity=ADA) as gateway:
        answers = []

        async def ask() -> None:
            answers.append(
                await gateway.request("chat/completions", chat("slow", stream=False), headers=AUTH)
            )

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(ask)
            with anyio.fail_after(30):
                while not fake.requests:  # the backend has it (and hangs)
                    await anyio.sleep(0.01)
            assert gateway.drain.waiting == 1  # the driver waits for the answer
            assert gateway.drain.cut() == 1
    (answer,) = answers
    assert answer.status == 503
    assert answer.json()["error"]["code"] == "gateway_shutting_down"
    assert ("Retry-After", "1") in answer.headers
    assert fake.stream_cancelled.wait(30)


async def test_a_stream_cut_while_waiting_for_its_next_chunk_ends_the_same_way(
    backend: tuple[FakeOpenAI, Path],
) -> None:
    fake, fixtures = backend
    async with open_gateway(fixtures, identity=ADA) as gateway:
        response = await gateway.request(
            "chat/completions", chat("hang-stream", stream=True), headers=AUTH
        )
        assert response.stream is not None
        chunks = aiter(response.stream)
        await anext(chunks)
        rest: list[bytes] = []

        async def read_the_rest() -> None:
            rest.extend([chunk async for chunk in chunks])

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(read_the_rest)
            with anyio.fail_after(30):
                while not gateway.drain.waiting:  # the relay waits for the next chunk
                    await anyio.sleep(0.01)
            assert gateway.drain.cut() == 1
    (last,) = rest
    assert b'"gateway_shutting_down"' in last
    assert fake.stream_cancelled.wait(30)


async def test_once_cut_a_new_wait_is_interrupted_at_once() -> None:
    drain = Drain()
    assert drain.cut() == 0
    reached = False
    with anyio.fail_after(30), drain.cuttable():
        await anyio.sleep_forever()
        reached = True
    assert not reached


async def test_a_batch_owners_gateway_is_never_cut(backend: tuple[FakeOpenAI, Path]) -> None:
    _, fixtures = backend
    async with open_gateway(fixtures, identity=ADA) as gateway:
        owner = gateway.acting_for(Identity(username="bob@example.org"))
        gateway.drain.cut()
        assert not owner.drain.is_cut
