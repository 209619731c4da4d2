"""Streams stay honest, and so do whole answers: what a backend sends as a success must
be what OpenAI's clients parse, or it ends as the gateway's OpenAI error.

- A stream event that is neither `[DONE]` nor a JSON object is not relayed: the whole
  events before it are, then one error event (`backend_invalid_response`), and no
  `[DONE]` after it (the answer is incomplete; the official clients raise on the error).
- A 200 whose JSON lacks the route's list (`choices` for chat and completions, `data` for
  embeddings) is a 502 `backend_invalid_response`, logged with that code.
- Valid streams are relayed byte for byte, however the backend's chunks split them.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import (
    AdaptorReturned,
    Catalog,
    ChunkReceived,
    ClusterRecord,
    EndpointRecord,
    EndStream,
    Identity,
    IdentityResolved,
    OpenAIRoute,
    RelayChunk,
    RequestMachine,
    RequestReceived,
    Respond,
    State,
    StreamEnded,
    StreamOpened,
    WriteLog,
)

CATALOG = Catalog.build(
    [
        ClusterRecord(
            id="1",
            cluster_name="c",
            cluster_adapter="adaptors.clusters.demo.DemoCluster",
            frameworks=["vllm"],
            openai_endpoints=["chat/completions", "completions", "embeddings"],
        )
    ],
    [
        EndpointRecord(
            id="1",
            endpoint_slug="c-vllm-m",
            cluster="c",
            framework="vllm",
            model="m",
            endpoint_adapter="adaptors.endpoints.demo.DemoEndpoint",
        )
    ],
)
INPUTS: dict[OpenAIRoute, dict[str, Any]] = {
    OpenAIRoute.CHAT_COMPLETIONS: {"messages": [{"role": "user", "content": "hi"}]},
    OpenAIRoute.COMPLETIONS: {"prompt": "hi"},
    OpenAIRoute.EMBEDDINGS: {"input": "hi"},
}


def called(route: OpenAIRoute, *, stream: bool) -> RequestMachine:
    machine = RequestMachine(CATALOG)
    body = {"model": "m", **INPUTS[route], **({"stream": True} if stream else {})}
    machine.receive(
        RequestReceived(
            request_id="r", route=route, body=json.dumps(body).encode(), authorization="Bearer k"
        )
    )
    machine.receive(IdentityResolved(identity=Identity(username="a@example.org")))
    return machine


def streaming() -> RequestMachine:
    machine = called(OpenAIRoute.CHAT_COMPLETIONS, stream=True)
    machine.receive(StreamOpened())
    return machine


def stream(*pieces: bytes, end: bool = True) -> tuple[RequestMachine, list[Any]]:
    machine = streaming()
    effects: list[Any] = []
    for piece in pieces:
        if machine.finished:
            break
        effects.extend(machine.receive(ChunkReceived(data=piece)))
    if end and not machine.finished:
        effects.extend(machine.receive(StreamEnded()))
    return machine, effects


def relayed(effects: list[Any]) -> bytes:
    return b"".join(e.data for e in effects if isinstance(e, RelayChunk))


def the_log(effects: list[Any]) -> WriteLog:
    (log,) = [e for e in effects if isinstance(e, WriteLog)]
    return log


def last_event(data: bytes) -> Any:
    return json.loads(data.rstrip(b"\n").rpartition(b"data: ")[2])


CHUNK = b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
DONE = b"data: [DONE]\n\n"

# -- whole answers -------------------------------------------------------------------------

CHAT, COMPLETIONS, EMBEDDINGS = (
    OpenAIRoute.CHAT_COMPLETIONS,
    OpenAIRoute.COMPLETIONS,
    OpenAIRoute.EMBEDDINGS,
)


@pytest.mark.parametrize(
    ("route", "answer", "status"),
    [
        (CHAT, {"id": "x", "object": "chat.completion", "choices": []}, 200),
        (CHAT, {"id": "x", "choices": [{"index": 0, "message": {"content": "hi"}}]}, 200),
        (CHAT, {"id": "x", "object": "chat.completion"}, 502),
        (CHAT, {"id": "x", "choices": {"0": "hi"}}, 502),
        (CHAT, {"id": "x", "choices": None}, 502),
        (CHAT, {"object": "list", "data": []}, 502),  # an embeddings answer on the chat route
        (COMPLETIONS, {"id": "x", "object": "text_completion", "choices": []}, 200),
        (COMPLETIONS, {"id": "x", "text": "hi"}, 502),
        (EMBEDDINGS, {"object": "list", "data": [{"embedding": [0.1]}]}, 200),
        (EMBEDDINGS, {"object": "list", "embedding": [0.1]}, 502),
        (EMBEDDINGS, {"object": "list", "data": "AAAA"}, 502),
    ],
)
def test_a_success_must_have_the_routes_list(
    route: OpenAIRoute, answer: dict[str, Any], status: int
) -> None:
    result = json.dumps(answer)
    effects = called(route, stream=False).receive(AdaptorReturned(result=result))
    (respond,) = [e for e in effects if isinstance(e, Respond)]
    log = the_log(list(effects))
    assert respond.response.status == status
    if status == 200:
        assert respond.response.body == result.encode()  # byte for byte, as before
        assert log.entry.error_code is None
        return
    error = json.loads(respond.response.body)["error"]
    assert (error["type"], error["code"]) == ("api_error", "backend_invalid_response")
    assert "model 'm' on cluster 'c'" in error["message"]
    assert (log.entry.status, log.entry.error_code) == (502, "backend_invalid_response")


@pytest.mark.parametrize(
    ("result", "code"),
    [("[1, 2]", "malformed_backend_response"), ("<html>", "malformed_backend_response")],
)
def test_a_success_that_is_not_a_json_object_is_logged_with_its_code(
    result: str, code: str
) -> None:
    effects = list(called(CHAT, stream=False).receive(AdaptorReturned(result=result)))
    assert (the_log(effects).entry.status, the_log(effects).entry.error_code) == (502, code)


# -- streams -------------------------------------------------------------------------------

INVALID_EVENTS = [
    b"data: {not json}\n\n",
    b"data: <html>502 Bad Gateway</html>\n\n",
    b'data: {"id": "c1", "choices": [\n\n',
    b"data: 42\n\n",
    b'data: "text"\n\n',
    b"data: [1, 2]\n\n",
    b"data: null\n\n",
]
NOT_OBJECTS = INVALID_EVENTS[3:]  # JSON, but no chunk


@pytest.mark.parametrize("bad", INVALID_EVENTS)
def test_an_event_that_is_not_a_json_object_ends_the_stream_with_an_error(bad: bytes) -> None:
    machine, effects = stream(CHUNK, bad, CHUNK, DONE)
    sent = relayed(effects)
    assert sent.startswith(CHUNK)
    assert bad not in sent
    error = last_event(sent)["error"]
    assert (error["type"], error["code"]) == ("api_error", "backend_invalid_response")
    assert b"[DONE]" not in sent
    assert [type(e) for e in effects][-2:] == [EndStream, WriteLog]
    log = the_log(effects)
    assert (log.entry.status, log.entry.error_code) == (502, "backend_invalid_response")
    kind = "JSON but not an object" if bad in NOT_OBJECTS else "not JSON"
    assert log.entry.detail == f"event 2 is {kind}"
    assert machine.state is State.DONE


def test_the_bad_event_in_the_same_chunk_as_good_ones_and_done_still_ends_it() -> None:
    _, effects = stream(CHUNK + b"data: oops\n\n" + CHUNK + DONE, end=False)
    assert relayed(effects).startswith(CHUNK + b"data: {")
    assert relayed(effects).count(b"data: ") == 2
    assert b"[DONE]" not in relayed(effects)


def test_an_unended_fragment_at_the_close_is_dropped_not_relayed() -> None:
    """A stream cut mid-event: the fragment no client could parse is left out, and the
    error says the stream is incomplete."""
    _, effects = stream(CHUNK, b'data: {"id": "c1", "cho')
    sent = relayed(effects)
    assert sent.startswith(CHUNK + b"data: {")
    assert b"cho" not in sent.removeprefix(CHUNK)
    assert last_event(sent)["error"]["code"] == "incomplete_stream"


def test_an_event_growing_past_a_mebibyte_without_ending_ends_the_stream() -> None:
    huge = b'data: {"x": "' + b"a" * (1 << 20) + b'"'
    _, effects = stream(CHUNK, huge, end=False)
    assert relayed(effects).startswith(CHUNK)
    assert last_event(relayed(effects))["error"]["code"] == "backend_invalid_response"


@pytest.mark.parametrize(
    "event",
    [
        b"data:\n\n",  # an empty data buffer dispatches no event at all (WHATWG)
        b": keep-alive\n\n",
        b"event: ping\n\n",
        b'data: {"id": "c1", "choices": [], "x": NaN}\n\n',  # Python's reading of JSON
        b'data: {"error": {"message": "overloaded", "type": "api_error"}}\n\n',
    ],
    ids=["empty-data", "comment", "event-only", "nan", "backend-error"],
)
def test_events_clients_read_without_failing_are_relayed(event: bytes) -> None:
    _, effects = stream(CHUNK, event, DONE)
    assert relayed(effects) == CHUNK + event + DONE
    assert the_log(effects).entry.error_code is None


def test_an_event_too_deep_to_parse_is_relayed_unread() -> None:
    deep = b"data: " + b"[" * 100_000 + b"]" * 100_000 + b"\n\n"
    _, effects = stream(CHUNK, deep, DONE)
    assert relayed(effects) == CHUNK + deep + DONE


# -- any split of the stream reads the same -----------------------------------------------

valid_events = st.sampled_from(
    [
        CHUNK,
        b'data: {"id":"c1","choices":[],"usage":{"total_tokens":3}}\r\n\r\n',
        b': comment\ndata: {"id":"c1",\ndata: "choices":[]}\n\n',
        b'event: message\ndata:{"id":"c1","choices":[{"delta":{"content":"\\u00e9 \xc3\xa9"}}]}'
        b"\n\n",
    ]
)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


@given(events=st.lists(valid_events, max_size=6), data=st.data())
def test_a_valid_stream_is_relayed_byte_for_byte_however_it_is_split(
    events: list[bytes], data: st.DataObject
) -> None:
    whole = b"".join(events) + DONE
    cuts = data.draw(st.lists(st.integers(0, len(whole)), max_size=10), label="cuts")
    _, effects = stream(*split_at(whole, cuts))
    assert relayed(effects) == whole
    assert the_log(effects).entry.status == 200


@given(
    before=st.lists(valid_events, max_size=4),
    bad=st.sampled_from(INVALID_EVENTS),
    after=st.lists(valid_events, max_size=2),
    data=st.data(),
)
def test_a_bad_event_ends_the_stream_at_the_same_byte_however_it_is_split(
    before: list[bytes], bad: bytes, after: list[bytes], data: st.DataObject
) -> None:
    whole = b"".join([*before, bad, *after]) + DONE
    cuts = data.draw(st.lists(st.integers(0, len(whole)), max_size=10), label="cuts")
    _, effects = stream(*split_at(whole, cuts))
    sent = relayed(effects)
    good = b"".join(before)
    assert sent.startswith(good)
    assert last_event(sent.removeprefix(good))["error"]["code"] == "backend_invalid_response"
    assert the_log(effects).entry.error_code == "backend_invalid_response"
