"""Shaping what an adaptor returned into what the client receives, and watching a
relayed event stream.

A success goes out byte-for-byte; a backend's own 4xx OpenAI error goes out unchanged;
everything else is an OpenAI error object from the gateway that names the model and
cluster and never the backend's URL, key or 5xx text.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import EndpointRecord, SSEMonitor, Usage, redact
from core._shaping import shape_failure, shape_result
from core._sse import SSEFramer

ENDPOINT = EndpointRecord(
    id="1",
    endpoint_slug="polaris-vllm-llama",
    cluster="polaris",
    framework="vllm",
    model="meta-llama/Llama-3-8B",
    endpoint_adapter="adaptors.endpoints.direct_api.DirectAPIEndpoint",
)

SECRET = "SECRET-DETAIL-123"
URL = "http://10.0.0.1:8000/v1"
KEY = "sk-abcdefghijkl"
LEAKS = [URL, KEY, "10.0.0.1"]

# -- strategies --------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**12), max_value=10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=10,
)
json_objects = st.dictionaries(st.text(max_size=6), json_values, max_size=4)

# Words of a backend's message, some of them things no client may see, sometimes glued
# to their neighbours.
words = st.sampled_from([SECRET, URL, f"Bearer {KEY}", "upstream", "error:"]) | st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Z", "C"]), max_size=8
)
texts = st.lists(st.tuples(words, st.sampled_from([" ", "", "_", "/"])), max_size=5).map(
    lambda parts: "".join(word + glue for word, glue in parts)
)

openai_errors = st.builds(
    lambda message, type_, param, code: json.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    ),
    message=texts,
    type_=st.sampled_from(["invalid_request_error", "BadRequestError", "api_error"]),
    param=st.none() | st.sampled_from(["model", "max_tokens"]),
    code=st.none() | st.sampled_from(["context_length_exceeded", "400"]) | st.integers(400, 499),
)

results = st.one_of(
    st.none(),
    texts,
    json_objects.map(json.dumps),
    json_values.filter(lambda v: not isinstance(v, dict)).map(json.dumps),
)
error_messages = st.none() | texts | openai_errors
error_codes = st.none() | st.integers(min_value=100, max_value=599)


def is_openai_error_json(text: str | None) -> bool:
    try:
        value = json.loads(text or "")
    except ValueError:
        return False
    return isinstance(value, dict) and isinstance(value.get("error"), dict)


def assert_openai_error(body: bytes) -> dict[str, Any]:
    payload = json.loads(body)
    assert isinstance(payload, dict) and set(payload) == {"error"}, payload
    error = payload["error"]
    assert set(error) >= {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    return error  # type: ignore[no-any-return]


# -- properties --------------------------------------------------------------------------


@given(result=results, error_message=error_messages, error_code=error_codes)
def test_every_outcome_is_the_backends_success_or_an_openai_error(
    result: str | None, error_message: str | None, error_code: int | None
) -> None:
    shaped = shape_result(
        ENDPOINT, result=result, error_message=error_message, error_code=error_code
    )
    response = shaped.response
    body = json.loads(response.body)  # always JSON
    assert dict(response.headers)["content-type"] == "application/json"

    if response.status == 200:
        assert (error_message, error_code) == (None, None)
        assert result is not None
        assert response.body == result.encode()
        assert isinstance(body, dict)
        return

    assert 400 <= response.status <= 599
    passed_through = (
        error_code is not None
        and 400 <= error_code < 500
        and error_code not in (401, 403, 407)
        and is_openai_error_json(error_message)
    )
    if passed_through:
        # The backend's own explanation of the caller's mistake, unchanged.  (Unchanged
        # also means unredacted: see the report on 4xx pass-through.)
        assert error_message is not None
        assert (response.status, response.body) == (error_code, error_message.encode())
        return
    assert_openai_error(response.body)
    if response.status >= 500:
        assert SECRET not in response.body.decode()
        assert body["error"]["type"] == "api_error"
        assert ENDPOINT.model in body["error"]["message"]
    for leak in LEAKS:
        assert leak not in response.body.decode()


@given(result=results, error_message=error_messages, error_code=error_codes)
def test_the_operators_log_detail_is_redacted_too(
    result: str | None, error_message: str | None, error_code: int | None
) -> None:
    shaped = shape_result(
        ENDPOINT, result=result, error_message=error_message, error_code=error_code
    )
    for leak in LEAKS:
        assert leak not in (shaped.detail or "")


@given(status=st.integers(min_value=100, max_value=599), detail=texts)
def test_an_adaptor_that_raised_is_a_5xx_without_its_detail(status: int, detail: str) -> None:
    shaped = shape_failure(ENDPOINT, status, detail)
    assert shaped.response.status == (status if status in (502, 503, 504) else 502)
    error = assert_openai_error(shaped.response.body)
    assert error["type"] == "api_error"
    for secret in [SECRET, *LEAKS]:
        assert secret not in shaped.response.body.decode()


# -- case by case ------------------------------------------------------------------------


def shape(
    result: str | None = None, error_message: str | None = None, error_code: int | None = None
) -> tuple[int, bytes, dict[str, Any]]:
    shaped = shape_result(
        ENDPOINT, result=result, error_message=error_message, error_code=error_code
    )
    return shaped.response.status, shaped.response.body, json.loads(shaped.response.body)


@pytest.mark.parametrize("status", [400, 404, 413, 422, 429])
def test_a_backend_4xx_openai_error_passes_through_unchanged(status: int) -> None:
    message = (
        '{"object":"error","error":{"message":"This model\'s maximum context length is '
        '8192 tokens.","type":"BadRequestError","param":"messages","code":400}}'
    )
    got, body, _ = shape(error_message=message, error_code=status)
    assert (got, body) == (status, message.encode())


@pytest.mark.parametrize("status", [401, 403, 407])
def test_a_backend_refusing_the_gateways_credentials_is_502_backend_auth_failed(
    status: int,
) -> None:
    message = json.dumps({"error": {"message": f"Incorrect API key: {KEY}", "type": "auth"}})
    got, raw, body = shape(error_message=message, error_code=status)
    assert got == 502
    assert body["error"]["code"] == "backend_auth_failed"
    assert KEY not in raw.decode() and "Incorrect" not in raw.decode()


@pytest.mark.parametrize(
    ("backend", "status", "code"),
    [
        (500, 502, "backend_error"),
        (502, 502, "backend_error"),
        (503, 503, "backend_unavailable"),
        (504, 504, "backend_timeout"),
        (501, 502, "backend_error"),
        (None, 502, "backend_error"),  # a message without a code
        (302, 502, "backend_error"),
    ],
)
def test_backend_failures_map_to_gateway_statuses(
    backend: int | None, status: int, code: str
) -> None:
    got, raw, body = shape(error_message=f"{SECRET} at {URL}", error_code=backend)
    assert got == status
    assert body["error"]["code"] == code
    assert body["error"]["type"] == "api_error"
    assert "meta-llama/Llama-3-8B" in body["error"]["message"]
    assert "polaris" in body["error"]["message"]
    assert SECRET not in raw.decode() and URL not in raw.decode()


@pytest.mark.parametrize(
    ("result", "code"),
    [
        ("Internal Server Error", "malformed_backend_response"),
        ("<html>502 Bad Gateway</html>", "malformed_backend_response"),
        ("[1, 2]", "malformed_backend_response"),
        ('"just a string"', "malformed_backend_response"),
        ("", "malformed_backend_response"),
        (None, "empty_backend_response"),
    ],
)
def test_a_success_that_is_not_a_json_object_is_502(result: str | None, code: str) -> None:
    got, _, body = shape(result=result)
    assert (got, body["error"]["code"]) == (502, code)


def test_a_success_goes_out_byte_for_byte_and_its_usage_is_read() -> None:
    result = (
        '{"id":"chatcmpl-1",  "object":"chat.completion","choices":[],'
        '"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}'
    )
    shaped = shape_result(ENDPOINT, result=result, error_message=None, error_code=None)
    assert shaped.response.status == 200
    assert shaped.response.body == result.encode()
    assert shaped.usage == Usage(prompt_tokens=5, completion_tokens=7, total_tokens=12)


@pytest.mark.parametrize("usage", ['"lots"', "null", "[1]"])
def test_a_usage_that_is_not_an_object_is_not_logged(usage: str) -> None:
    result = f'{{"id":"x","usage":{usage}}}'
    shaped = shape_result(ENDPOINT, result=result, error_message=None, error_code=None)
    assert shaped.response.status == 200
    assert shaped.usage is None


def test_a_backend_4xx_in_plain_text_becomes_an_openai_error_with_that_status() -> None:
    got, raw, body = shape(error_message=f"prompt too long, see {URL}", error_code=400)
    assert got == 400
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith("prompt too long")
    assert URL not in raw.decode()


def test_a_backend_429_keeps_its_status_and_gets_the_rate_limit_type() -> None:
    got, _, body = shape(error_message="slow down", error_code=429)
    assert (got, body["error"]["type"]) == (429, "rate_limit_error")


def test_a_backend_4xx_without_a_message_still_explains() -> None:
    got, _, body = shape(error_code=404)
    assert got == 404
    assert "404" in body["error"]["message"]


# Regression: redact() once anchored on word boundaries, so these reached the client.
@pytest.mark.parametrize(
    "message",
    [
        f"upstream_{URL}",
        f"0{URL}",
        f"é{URL}",
        f"xBearer {KEY}",
        f"tokenBearer {KEY}",
        f"key {KEY} refused",
    ],
)
def test_secrets_glued_to_a_word_are_redacted_too(message: str) -> None:
    _, raw, _ = shape(error_message=message, error_code=400)
    assert URL not in raw.decode()
    assert KEY not in raw.decode()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"connect to {URL} failed", "connect to <backend> failed"),
        (f"Authorization: Bearer {KEY}", "Authorization: Bearer <redacted>"),
        (f"api_key={KEY}", "api_key=<redacted>"),
        ("token expired", "token expired"),
        ("nothing secret here", "nothing secret here"),
    ],
)
def test_redact_cases(text: str, expected: str) -> None:
    assert redact(text) == expected


# -- the stream monitor ------------------------------------------------------------------

Event = tuple[str, list[str]]  # (kind, data lines); kind is for the expectation only

chunk_events = st.builds(
    lambda content: (
        "chunk",
        [json.dumps({"id": "c1", "choices": [{"delta": {"content": content}}]})],
    ),
    st.text(max_size=8),
)
usage_events = st.builds(
    lambda n: ("usage", [json.dumps({"id": "c1", "choices": [], "usage": {"total_tokens": n}})]),
    st.integers(0, 10_000),
)
error_events = st.builds(
    lambda message: ("error", [json.dumps({"error": {"message": message, "type": "api_error"}})]),
    st.text(max_size=8),
)
multiline_events = st.just(("chunk", ['{"id": "c1",', '"choices": []}']))
done_event = st.just(("done", ["[DONE]"]))
sse_events = st.one_of(chunk_events, usage_events, error_events, multiline_events, done_event)


@st.composite
def sse_streams(draw: st.DrawFn) -> tuple[bytes, dict[str, Any]]:
    """A well-formed event stream with LF and CRLF line endings, comments and `event:`
    lines mixed in, and what a monitor must conclude from it."""
    events = draw(st.lists(sse_events, max_size=6))
    out = b""
    for kind, lines in events:
        eol = draw(st.sampled_from([b"\n", b"\r\n"]))
        if draw(st.booleans()):
            out += b": keep-alive" + eol
        if kind == "error" and draw(st.booleans()):
            out += b"event: error" + eol
        for line in lines:
            sep = draw(st.sampled_from([b"data: ", b"data:"]))
            out += sep + line.encode() + eol
        out += eol
    usages = [json.loads(lines[0])["usage"] for kind, lines in events if kind == "usage"]
    expected = {
        "done": any(kind == "done" for kind, _ in events),
        "errored": any(kind == "error" for kind, _ in events),
        "events": len(events),
        "usage": Usage.from_json(usages[-1]) if usages else None,
    }
    return out, expected


def conclusions(monitor: SSEMonitor) -> dict[str, Any]:
    return {
        "done": monitor.done,
        "errored": monitor.errored,
        "events": monitor.events,
        "usage": monitor.usage,
    }


def fed(pieces: list[bytes]) -> SSEMonitor:
    monitor = SSEMonitor()
    for piece in pieces:
        monitor.feed(piece)
    return monitor


def split_at(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(cuts), len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(points)]


@given(drawn=sse_streams())
def test_a_whole_stream_is_read_right(drawn: tuple[bytes, dict[str, Any]]) -> None:
    stream, expected = drawn
    monitor = fed([stream])
    assert not monitor.pending
    monitor.finish()
    assert conclusions(monitor) == expected


@given(drawn=sse_streams(), data=st.data())
def test_any_split_of_a_stream_reads_the_same_as_the_whole(
    drawn: tuple[bytes, dict[str, Any]], data: st.DataObject
) -> None:
    stream, _ = drawn
    cuts = data.draw(
        st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=12), label="cuts"
    )
    pieces = split_at(stream, cuts)
    assert b"".join(pieces) == stream
    whole, split = fed([stream]), fed(pieces)
    assert conclusions(split) == conclusions(whole)
    assert split.pending == whole.pending
    whole.finish()
    split.finish()
    assert conclusions(split) == conclusions(whole)


@given(drawn=sse_streams(), data=st.data())
def test_a_stream_cut_anywhere_reads_like_its_prefix(
    drawn: tuple[bytes, dict[str, Any]], data: st.DataObject
) -> None:
    stream, _ = drawn
    cut = data.draw(st.integers(min_value=0, max_value=len(stream)), label="cut")
    byte_by_byte = fed([stream[i : i + 1] for i in range(cut)])
    at_once = fed([stream[:cut]])
    assert conclusions(byte_by_byte) == conclusions(at_once)
    assert byte_by_byte.pending == at_once.pending


@pytest.mark.parametrize(
    ("pieces", "pending"),
    [
        ([b"da"], True),
        ([b'data: {"id": 1}\n'], True),  # an event begun and not ended
        ([b'data: {"id": 1}\n\n'], False),
        ([b'data: {"id": 1}\r\n\r'], True),  # the last LF may still come
        ([b'data: {"id": 1}\r\n\r', b"\n"], False),
        ([b": comment\n"], False),
    ],
)
def test_pending_tells_whether_a_stream_stopped_mid_event(
    pieces: list[bytes], pending: bool
) -> None:
    assert fed(pieces).pending is pending


def test_an_unterminated_last_event_still_counts_when_the_stream_closes() -> None:
    monitor = fed([b"data: [DONE]"])
    assert not monitor.done
    monitor.finish()
    assert monitor.done and monitor.events == 1


# -- which backend headers reach the client ---------------------------------------------

UPSTREAM = (
    ("Content-Type", "application/json; charset=utf-8"),
    ("X-Request-Id", "req_123"),
    ("Openai-Processing-Ms", "42"),
    ("Set-Cookie", "session=1"),
    ("Connection", "keep-alive"),
    ("Transfer-Encoding", "chunked"),
    ("X-Ratelimit-Remaining-Requests", "10"),
    ("Openai-Project", "proj_x"),
)


@pytest.mark.parametrize(
    ("result", "error_message", "error_code", "status"),
    [
        ('{"object": "chat.completion"}', None, None, 200),
        (
            None,
            '{"error": {"message": "no such model", "type": "invalid_request_error"}}',
            404,
            404,
        ),
    ],
)
def test_passed_through_answers_keep_the_backend_content_type_and_request_id(
    result: str | None, error_message: str | None, error_code: int | None, status: int
) -> None:
    from core._shaping import shape_result

    shaped = shape_result(
        ENDPOINT,
        result=result,
        error_message=error_message,
        error_code=error_code,
        headers=UPSTREAM,
    )
    headers = dict(shaped.response.headers)
    assert shaped.response.status == status
    assert headers == {
        "content-type": "application/json; charset=utf-8",
        "x-request-id": "req_123",
        "openai-processing-ms": "42",
    }


def test_gateway_errors_keep_only_the_request_id() -> None:
    from core._shaping import shape_result

    shaped = shape_result(
        ENDPOINT, result=None, error_message="boom", error_code=500, headers=UPSTREAM
    )
    assert dict(shaped.response.headers) == {
        "content-type": "application/json",
        "x-request-id": "req_123",
        "openai-processing-ms": "42",
    }


@pytest.mark.parametrize(
    ("backend_type", "sent_type"),
    [
        ("text/event-stream", "text/event-stream"),
        ("text/event-stream; charset=utf-8", "text/event-stream; charset=utf-8"),
        ("application/json", "text/event-stream; charset=utf-8"),
        (None, "text/event-stream; charset=utf-8"),
    ],
)
def test_stream_headers_follow_the_backend_but_never_buffer(
    backend_type: str | None, sent_type: str
) -> None:
    from core._shaping import stream_headers

    backend = (("content-type", backend_type),) if backend_type else ()
    headers = dict(stream_headers((*backend, ("x-request-id", "r1"), ("connection", "close"))))
    assert headers == {
        "content-type": sent_type,
        "cache-control": "no-cache",
        "x-accel-buffering": "no",
        "x-request-id": "r1",
    }


def judged(monitor: SSEMonitor) -> dict[str, Any]:
    return {**conclusions(monitor), "invalid": monitor.invalid, "usage_only": monitor.usage_only}


one_line_values = st.one_of(
    st.binary(max_size=40).filter(lambda b: b"\n" not in b and b"\r" not in b),
    st.builds(lambda e: e[1][0].encode(), sse_events),
    st.sampled_from([b"", b" ", b"  {}", b' {"choices": [], "usage": {}}', b" [DONE] ", b"\xff"]),
)


@given(value=one_line_values, space=st.sampled_from([b"", b" "]))
def test_an_event_of_one_data_line_fed_whole_is_judged_as_fed_byte_by_byte(
    value: bytes, space: bytes
) -> None:
    event = b"data:" + space + value + b"\n\n"
    whole = fed([event])
    byte_by_byte = fed([event[i : i + 1] for i in range(len(event))])
    assert judged(whole) == judged(byte_by_byte)


framer_bytes = st.lists(st.sampled_from([b"\n", b"\r", b"\r\n", b"data: x", b"{}", b":"]))


@given(parts=framer_bytes, data=st.data())
def test_the_framer_cuts_the_same_events_however_the_bytes_arrive(
    parts: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(parts)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8), label="cuts")
    whole, split = SSEFramer(), SSEFramer()
    at_once = whole.feed(stream)
    in_pieces = [event for piece in split_at(stream, cuts) for event in split.feed(piece)]
    assert in_pieces == at_once
    assert b"".join(at_once) + whole.tail == stream == b"".join(in_pieces) + split.tail
