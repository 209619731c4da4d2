"""`FunctionTransport`: a handler's answer as a whole response or as a stream of events."""

from __future__ import annotations

import pytest

from transports import (
    BackendRequest,
    BackendResponse,
    ConnectError,
    FunctionTransport,
    Transport,
)
from transports.function import sse_events

pytestmark = pytest.mark.anyio

SSE_BODY = b'data: {"n": 1}\n\ndata: {"n": 2}\n\ndata: [DONE]\n\n'


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _request(body: bytes = b"{}") -> BackendRequest:
    return BackendRequest(method="POST", url="http://backend.invalid/v1/x", body=body)


async def test_a_plain_function_answers_and_the_requests_are_kept() -> None:
    transport = FunctionTransport(lambda r: BackendResponse(status=200, body=r.body[::-1]))
    assert isinstance(transport, Transport)
    answer = await transport.send(_request(b"abc"))
    assert (answer.status, answer.body) == (200, b"cba")
    assert [r.body for r in transport.requests] == [b"abc"]


async def test_an_async_handler_is_awaited() -> None:
    async def handler(request: BackendRequest) -> BackendResponse:
        return BackendResponse(status=201, headers={"x-seen": request.method})

    answer = await FunctionTransport(handler).send(_request())
    assert (answer.status, answer.header("X-Seen")) == (201, "POST")


async def test_a_stream_arrives_one_event_per_chunk() -> None:
    transport = FunctionTransport(
        lambda r: BackendResponse(
            status=200, headers={"content-type": "text/event-stream"}, body=SSE_BODY
        )
    )
    stream = await transport.open_stream(_request())
    try:
        assert stream.status == 200
        assert [chunk async for chunk in stream.chunks()] == sse_events(SSE_BODY)
    finally:
        await stream.aclose()
    assert len(sse_events(SSE_BODY)) == 3 and b"".join(sse_events(SSE_BODY)) == SSE_BODY


async def test_a_failure_is_acted_out_by_raising() -> None:
    def down(request: BackendRequest) -> BackendResponse:
        raise ConnectError("could not connect to the backend")

    with pytest.raises(ConnectError):
        await FunctionTransport(down).open_stream(_request())
