"""The core's rules for the Responses and Messages APIs, one case each: error dialect,
usage names, stream endings, the directory of stored responses, and the request machine
sending a follow-up back to the endpoint that made the previous response."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import (
    AdaptorReturned,
    CallAdaptor,
    Catalog,
    ChunkReceived,
    ClientError,
    ClusterRecord,
    EndpointRecord,
    Identity,
    IdentityResolved,
    OpenAIRoute,
    RememberResponse,
    RequestMachine,
    RequestReceived,
    Respond,
    Response,
    ResponseDirectory,
    SSEMonitor,
    StreamEnded,
    StreamOpened,
    Usage,
    error_body,
    in_dialect,
    route_of_path,
)
from core._dialects import stream_error_event, stream_rules

RESPONSES, MESSAGES = OpenAIRoute.RESPONSES, OpenAIRoute.MESSAGES


# -- the error dialect ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (415, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "api_error"),
    ],
)
def test_an_openai_error_becomes_anthropics_on_messages_only(status: int, kind: str) -> None:
    error = ClientError("it went wrong", status=status, code="x", param="y")
    response = Response(status=status, headers=(("retry-after", "3"),), body=error_body(error))
    shaped = in_dialect(MESSAGES, response)
    assert json.loads(shaped.body) == {
        "type": "error",
        "error": {"type": kind, "message": "it went wrong"},
    }
    assert (shaped.status, shaped.headers) == (status, response.headers)
    for route in [None, *(r for r in OpenAIRoute if r is not MESSAGES)]:
        assert in_dialect(route, response) == response


def test_success_and_anthropic_shaped_bodies_are_left_as_they_are() -> None:
    ok = Response(status=200, body=b'{"error": {"message": "not an error: a 200"}}')
    theirs = Response(status=400, body=b'{"type":"error","error":{"type":"x","message":"m"}}')
    other = Response(status=502, body=b"<html>")
    for response in (ok, theirs, other):
        assert in_dialect(MESSAGES, response) is response


def test_a_stream_error_event_on_messages_is_a_named_anthropic_event() -> None:
    body = error_body(ClientError("cut", status=502))
    event = stream_error_event(MESSAGES, body, 502, after_partial=True)
    assert event.startswith(b"\n\nevent: error\ndata: {")
    assert json.loads(event.split(b"data: ", 1)[1])["error"] == {
        "type": "api_error",
        "message": "cut",
    }
    assert stream_error_event(RESPONSES, body, 502) == b"data: " + body + b"\n\n"


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/v1/messages", MESSAGES),
        ("/v1/messages/", MESSAGES),
        ("/resource_server/c/f/v1/messages", MESSAGES),
        ("/v1/responses", RESPONSES),
        ("/v1/chat/completions", OpenAIRoute.CHAT_COMPLETIONS),
        ("/v2/messages", None),
        ("/elsewhere/v1/messages", None),
        ("/v1/nothing", None),
    ],
)
def test_the_route_a_path_names(path: str, route: OpenAIRoute | None) -> None:
    assert route_of_path(path) is route


# -- usage under each API's names ----------------------------------------------------------


@pytest.mark.parametrize(
    ("reported", "counts"),
    [
        ({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}, (3, 4, 7)),
        ({"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}, (3, 4, 7)),  # Responses
        ({"input_tokens": 3, "output_tokens": 4}, (3, 4, 7)),  # Messages: no total
        (
            {"input_tokens": 3, "output_tokens": 4, "cache_read_input_tokens": 10},
            (13, 4, 17),
        ),
        ({"output_tokens": 9}, (None, 9, None)),
        ({"prompt_tokens": 5, "total_tokens": 5}, (5, None, 5)),  # embeddings
    ],
)
def test_usage_is_read_under_each_apis_names(
    reported: dict[str, int], counts: tuple[int | None, ...]
) -> None:
    usage = Usage.from_json(reported)
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == counts


def _events(*payloads: dict[str, Any], named: bool = True) -> bytes:
    return b"".join(
        (f"event: {p['type']}\n" if named else "").encode() + f"data: {json.dumps(p)}\n\n".encode()
        for p in payloads
    )


MESSAGE_STREAM = _events(
    {
        "type": "message_start",
        "message": {"id": "m", "usage": {"input_tokens": 12, "output_tokens": 1}},
    },
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 30}},
    {"type": "message_stop"},
)
RESPONSE_STREAM = _events(
    {"type": "response.created", "response": {"id": "resp_1", "usage": None}},
    {"type": "response.output_text.delta", "delta": "hi"},
    {
        "type": "response.completed",
        "response": {
            "id": "resp_1",
            "usage": {"input_tokens": 5, "output_tokens": 6, "total_tokens": 11},
        },
    },
)


@given(cuts=st.lists(st.integers(min_value=0, max_value=len(MESSAGE_STREAM)), max_size=6))
def test_a_messages_stream_ends_at_message_stop_with_its_usage_put_together(
    cuts: list[int],
) -> None:
    monitor = SSEMonitor(rules=stream_rules(MESSAGES))
    edges = [0, *sorted(cuts), len(MESSAGE_STREAM)]
    for start, end in itertools.pairwise(edges):
        monitor.feed(MESSAGE_STREAM[start:end])
    monitor.finish()
    assert monitor.done and not monitor.errored
    assert monitor.usage == Usage(prompt_tokens=12, completion_tokens=30, total_tokens=42)


def test_a_responses_stream_ends_at_response_completed_and_names_its_response() -> None:
    monitor = SSEMonitor(rules=stream_rules(RESPONSES))
    monitor.feed(RESPONSE_STREAM)
    assert monitor.done and monitor.response_id == "resp_1"
    assert monitor.usage == Usage(prompt_tokens=5, completion_tokens=6, total_tokens=11)
    chat = SSEMonitor(rules=stream_rules(OpenAIRoute.CHAT_COMPLETIONS))
    chat.feed(RESPONSE_STREAM)
    assert not chat.done  # a chat stream ends with [DONE] only


@pytest.mark.parametrize(
    ("route", "payload"),
    [
        (MESSAGES, {"type": "error", "error": {"type": "overloaded_error", "message": "x"}}),
        (RESPONSES, {"type": "response.failed", "response": {"id": "r", "error": {"code": "x"}}}),
        (RESPONSES, {"type": "error", "code": "x", "message": "y"}),
    ],
)
def test_an_in_band_failure_is_seen(route: OpenAIRoute, payload: dict[str, Any]) -> None:
    monitor = SSEMonitor(rules=stream_rules(route))
    monitor.feed(_events(payload))
    assert monitor.errored


# -- the directory of stored responses ---------------------------------------------------


def test_the_directory_answers_only_the_owner_and_forgets_the_oldest() -> None:
    directory = ResponseDirectory(capacity=2)
    directory.remember("r1", "ada", "one")
    directory.remember("r2", "ada", "two")
    assert directory.endpoint_for("r1", "ada") == "one"
    assert directory.endpoint_for("r1", "bob") is None
    directory.remember("r3", "bob", "one")
    assert len(directory) == 2
    assert directory.endpoint_for("r1", "ada") is None  # the oldest left first
    assert directory.endpoint_for("r3", "bob") == "one"


# -- the machine: follow-ups go back, stored ids are remembered --------------------------


def _cluster(name: str) -> ClusterRecord:
    return ClusterRecord(
        id=name,
        cluster_name=name,
        cluster_adapter="adaptors.clusters.demo.DemoCluster",
        frameworks=["vllm"],
        openai_endpoints=["responses", "messages"],
    )


def _endpoint(cluster: str, groups: tuple[str, ...] = ()) -> EndpointRecord:
    return EndpointRecord(
        id=cluster,
        endpoint_slug=f"{cluster}-vllm-m",
        cluster=cluster,
        framework="vllm",
        model="m",
        endpoint_adapter="adaptors.endpoints.demo.DemoEndpoint",
        allowed_globus_groups=groups,
    )


CATALOG = Catalog.build(
    [_cluster("one"), _cluster("two"), _cluster("three")],
    [_endpoint("one"), _endpoint("two"), _endpoint("three", groups=("staff",))],
)
ADA = Identity(username="ada@example.org")


def _run(
    directory: ResponseDirectory, body: dict[str, Any], identity: Identity = ADA, **where: str
) -> tuple[RequestMachine, list[Any]]:
    machine = RequestMachine(CATALOG, responses=directory)
    effects = list(
        machine.receive(
            RequestReceived(
                request_id="r",
                route=RESPONSES,
                body=json.dumps(body).encode(),
                authorization="Bearer t",
                **where,
            )
        )
    )
    effects += machine.receive(IdentityResolved(identity=identity))
    return machine, effects


def test_a_follow_up_goes_to_the_endpoint_of_the_previous_response() -> None:
    directory = ResponseDirectory()
    directory.remember("resp_1", ADA.username, "two-vllm-m")
    _, effects = _run(directory, {"model": "m", "input": "x", "previous_response_id": "resp_1"})
    [call] = [e for e in effects if isinstance(e, CallAdaptor)]
    assert call.endpoint_slug == "two-vllm-m"


@pytest.mark.parametrize(
    ("owner", "slug", "where", "status", "code"),
    [
        ("bob@example.org", "two-vllm-m", {}, 404, "response_not_found"),  # another user's
        (ADA.username, "three-vllm-m", {}, 404, "response_not_found"),  # no longer allowed
        (
            ADA.username,
            "two-vllm-m",
            {"cluster": "one", "framework": "vllm"},
            400,
            "previous_response_mismatch",
        ),
    ],
)
def test_a_follow_up_that_cannot_go_back_is_refused_without_a_call(
    owner: str, slug: str, where: dict[str, str], status: int, code: str
) -> None:
    directory = ResponseDirectory()
    directory.remember("resp_1", owner, slug)
    body = {"model": "m", "input": "x", "previous_response_id": "resp_1"}
    _, effects = _run(directory, body, **where)
    assert not any(isinstance(e, CallAdaptor) for e in effects)
    [respond] = [e for e in effects if isinstance(e, Respond)]
    assert respond.response.status == status
    assert json.loads(respond.response.body)["error"]["code"] == code


def test_a_stored_response_is_remembered_whole_or_streamed() -> None:
    directory = ResponseDirectory()
    machine, _ = _run(directory, {"model": "m", "input": "x"})
    effects = machine.receive(
        AdaptorReturned(result=b'{"id": "resp_9", "object": "response", "output": []}')
    )
    assert (
        RememberResponse(response_id="resp_9", username=ADA.username, endpoint_slug="one-vllm-m")
        in effects
    )
    machine, _ = _run(directory, {"model": "m", "input": "x", "stream": True})
    machine.receive(StreamOpened())
    machine.receive(ChunkReceived(data=RESPONSE_STREAM))
    ended = machine.receive(StreamEnded())
    assert (
        RememberResponse(response_id="resp_1", username=ADA.username, endpoint_slug="one-vllm-m")
        in ended
    )


@pytest.mark.parametrize(("route", "field"), [(RESPONSES, "output"), (MESSAGES, "content")])
def test_a_success_without_the_apis_list_is_a_backends_failure(
    route: OpenAIRoute, field: str
) -> None:
    body = {"model": "m", "input": "x", "messages": [], "max_tokens": 4}
    machine = RequestMachine(CATALOG)
    machine.receive(
        RequestReceived(
            request_id="r", route=route, body=json.dumps(body).encode(), authorization="Bearer t"
        )
    )
    machine.receive(IdentityResolved(identity=ADA))
    effects = machine.receive(AdaptorReturned(result=b'{"id": "x"}'))
    [respond] = [e for e in effects if isinstance(e, Respond)]
    assert respond.response.status == 502
    assert field in respond.response.body.decode()
    assert not any(isinstance(e, RememberResponse) for e in effects)


@pytest.mark.parametrize("route", list(OpenAIRoute))
@pytest.mark.parametrize("kind", [[], {}, 3, None, "response.completed", "message_stop"])
def test_any_event_type_a_backend_sends_is_only_observed(route: OpenAIRoute, kind: Any) -> None:
    monitor = SSEMonitor(rules=stream_rules(route))
    monitor.feed(_events({"type": kind, "usage": {"output_tokens": 2}}, named=False))
    assert monitor.invalid is None
    assert monitor.done == (isinstance(kind, str) and kind in stream_rules(route).finished)
