"""Request validation: every body, however broken, gets our own decision.

`validate_request` never raises.  It answers a `ValidRequest` whose body is the client's
JSON object untouched, or a 4xx `ClientError` whose `param` names the field to fix.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import RESERVED_FIELDS, ClientError, OpenAIRoute, ValidRequest, validate_request

JSON = "application/json"
CHAT = OpenAIRoute.CHAT_COMPLETIONS
COMPLETIONS = OpenAIRoute.COMPLETIONS
EMBEDDINGS = OpenAIRoute.EMBEDDINGS
RESPONSES = OpenAIRoute.RESPONSES
MESSAGES_ROUTE = OpenAIRoute.MESSAGES
INPUT_FIELD = {
    CHAT: "messages",
    COMPLETIONS: "prompt",
    EMBEDDINGS: "input",
    RESPONSES: "input",
    MESSAGES_ROUTE: "messages",
}
# Fields a route checks beside its input: the Messages API requires `max_tokens`.
CHECKED_FIELDS = {MESSAGES_ROUTE: {"max_tokens"}, RESPONSES: {"previous_response_id"}}
KNOWN_FIELDS = {
    "model",
    "stream",
    "messages",
    "prompt",
    "input",
    "max_tokens",
    "previous_response_id",
} | RESERVED_FIELDS

# -- strategies --------------------------------------------------------------------------

routes = st.sampled_from(list(OpenAIRoute))

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=16,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=5)

# Objects that look like requests, so the later rules get exercised too, not only
# "model is missing".
request_like = st.fixed_dictionaries(
    {},
    optional={
        "model": st.text(max_size=6) | json_values,
        "stream": st.booleans() | json_values,
        "messages": st.lists(json_objects, max_size=3) | json_values,
        "prompt": st.text(max_size=6) | st.lists(st.integers(), max_size=3) | json_values,
        "input": st.text(max_size=6) | st.lists(st.text(max_size=4), max_size=3) | json_values,
        "model_params": json_values,
        "temperature": json_values,
    },
)

json_content_types = st.sampled_from(
    [
        None,
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/vnd.api+json",
    ]
)
any_content_types = json_content_types | st.text(max_size=30)

# Extra fields a backend may understand and the gateway does not: they must survive.
OPENAI_AND_VLLM_FIELDS = [
    "user",
    "temperature",
    "top_p",
    "max_tokens",
    "n",
    "stop",
    "seed",
    "tools",
    "tool_choice",
    "response_format",
    "logprobs",
    "stream_options",
    "top_k",
    "guided_json",
    "chat_template_kwargs",
    "encoding_format",
    "dimensions",
    "suffix",
    "echo",
]
extra_fields = st.dictionaries(
    st.sampled_from(OPENAI_AND_VLLM_FIELDS)
    | st.text(min_size=1, max_size=10).filter(lambda k: k not in KNOWN_FIELDS),
    json_values,
    max_size=6,
)


def encode(value: Any) -> bytes:
    return json.dumps(value).encode()


def assert_is_decision(result: object) -> None:
    assert isinstance(result, ValidRequest | ClientError), result
    if isinstance(result, ClientError):
        assert 400 <= result.status < 500, result
        assert result.code, result
        assert result.message, result


# -- properties --------------------------------------------------------------------------


@given(route=routes, value=json_values | request_like, content_type=any_content_types)
def test_any_json_value_gets_a_decision_never_an_exception(
    route: OpenAIRoute, value: Any, content_type: str | None
) -> None:
    assert_is_decision(validate_request(route, content_type, encode(value)))


@given(route=routes, raw=st.binary(max_size=64), content_type=any_content_types)
def test_any_bytes_get_a_decision_never_an_exception(
    route: OpenAIRoute, raw: bytes, content_type: str | None
) -> None:
    assert_is_decision(validate_request(route, content_type, raw))


@given(route=routes, raw=st.binary(max_size=64), content_type=json_content_types)
def test_unparseable_bytes_are_a_400_without_param(
    route: OpenAIRoute, raw: bytes, content_type: str | None
) -> None:
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError):
        parsed = None
        parseable = False
    else:
        parseable = True
    result = validate_request(route, content_type, raw)
    if not parseable:
        assert isinstance(result, ClientError)
        assert result.status == 400
        assert result.param is None
    elif not isinstance(parsed, dict):
        assert isinstance(result, ClientError)
        assert result.status == 400


@given(route=routes, body=json_objects | request_like, content_type=json_content_types)
def test_a_rejected_json_object_names_the_param_to_fix(
    route: OpenAIRoute, body: dict[str, Any], content_type: str | None
) -> None:
    result = validate_request(route, content_type, encode(body))
    if isinstance(result, ClientError):
        assert result.status == 400
        assert result.param is not None
        field = result.param.partition("[")[0]
        assert field in body or field in {
            "model",
            INPUT_FIELD[route],
            *CHECKED_FIELDS.get(route, ()),
        }


@given(route=routes, value=json_values.filter(lambda v: not isinstance(v, dict)))
def test_a_json_value_that_is_not_an_object_is_a_400(route: OpenAIRoute, value: Any) -> None:
    result = validate_request(route, JSON, encode(value))
    assert isinstance(result, ClientError)
    assert result.status == 400
    assert result.code == "invalid_json"


@given(route=routes, value=json_values | request_like, content_type=st.text(max_size=20))
def test_a_rejection_for_a_non_json_content_type_is_a_415_or_a_400(
    route: OpenAIRoute, value: Any, content_type: str
) -> None:
    result = validate_request(route, content_type, encode(value))
    if isinstance(result, ClientError) and result.param is None:
        assert result.status in (400, 415)


def valid_bodies(route: OpenAIRoute) -> st.SearchStrategy[dict[str, Any]]:
    message = st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system"]), "content": st.text(max_size=10)}
    )
    tokens = st.lists(st.integers(min_value=0, max_value=50_000), min_size=1, max_size=4)
    text_or_tokens = (
        st.text(max_size=10)
        | st.lists(st.text(max_size=6), min_size=1, max_size=3)
        | tokens
        | st.lists(tokens, min_size=1, max_size=3)
    )
    inputs = (
        st.lists(message, min_size=1, max_size=3)
        if route in (CHAT, MESSAGES_ROUTE)
        else text_or_tokens
    )
    streams = st.just(False) if route is EMBEDDINGS else st.booleans()
    return st.builds(
        lambda model, stream, value, extra, send_stream: {
            **extra,
            "model": model,
            INPUT_FIELD[route]: value,
            **({"max_tokens": 64} if route is MESSAGES_ROUTE else {}),
            **({"stream": stream} if send_stream else {}),
        },
        model=st.text(min_size=1, max_size=12).filter(str.strip),
        stream=streams,
        value=inputs,
        extra=extra_fields,
        send_stream=st.booleans(),
    )


@given(data=st.data(), route=routes, content_type=json_content_types)
def test_a_valid_body_passes_through_unchanged(
    data: st.DataObject, route: OpenAIRoute, content_type: str | None
) -> None:
    body = data.draw(valid_bodies(route))
    result = validate_request(route, content_type, encode(body))
    assert isinstance(result, ValidRequest), result
    assert result.route is route
    assert result.model == body["model"]
    assert result.stream is bool(body.get("stream", False))
    assert dict(result.body) == json.loads(encode(body))
    for key, value in body.items():
        assert key in result.body
        assert encode(result.body[key]) == encode(value)


# -- one case per rule -------------------------------------------------------------------

MESSAGES = [{"role": "user", "content": "hi"}]

# route, body, status, param, code
REJECTIONS: list[tuple[str, OpenAIRoute, Any, int, str | None, str]] = [
    ("model missing", CHAT, {"messages": MESSAGES}, 400, "model", "missing_required_parameter"),
    (
        "model null",
        CHAT,
        {"model": None, "messages": MESSAGES},
        400,
        "model",
        "missing_required_parameter",
    ),
    ("model int", CHAT, {"model": 3, "messages": MESSAGES}, 400, "model", "invalid_type"),
    ("model bool", CHAT, {"model": True, "messages": MESSAGES}, 400, "model", "invalid_type"),
    ("model list", CHAT, {"model": ["m"], "messages": MESSAGES}, 400, "model", "invalid_type"),
    ("model empty", CHAT, {"model": "", "messages": MESSAGES}, 400, "model", "invalid_type"),
    ("model blank", CHAT, {"model": "  ", "messages": MESSAGES}, 400, "model", "invalid_type"),
    (
        "stream string",
        CHAT,
        {"model": "m", "messages": MESSAGES, "stream": "true"},
        400,
        "stream",
        "invalid_type",
    ),
    (
        "stream int",
        COMPLETIONS,
        {"model": "m", "prompt": "p", "stream": 1},
        400,
        "stream",
        "invalid_type",
    ),
    (
        "stream on embeddings",
        EMBEDDINGS,
        {"model": "m", "input": "x", "stream": True},
        400,
        "stream",
        "unsupported_parameter",
    ),
    (
        "embeddings stream 0",
        EMBEDDINGS,
        {"model": "m", "input": "x", "stream": 0},
        400,
        "stream",
        "invalid_type",
    ),
    ("messages missing", CHAT, {"model": "m"}, 400, "messages", "missing_required_parameter"),
    # -- the Responses API: `input` a string or a list of items ----------------------------
    (
        "responses input missing",
        RESPONSES,
        {"model": "m"},
        400,
        "input",
        "missing_required_parameter",
    ),
    (
        "responses input object",
        RESPONSES,
        {"model": "m", "input": {}},
        400,
        "input",
        "invalid_type",
    ),
    ("responses input number", RESPONSES, {"model": "m", "input": 3}, 400, "input", "invalid_type"),
    (
        "previous_response_id not a string",
        RESPONSES,
        {"model": "m", "input": "x", "previous_response_id": 7},
        400,
        "previous_response_id",
        "invalid_type",
    ),
    # -- the Messages API: `messages` a list, `max_tokens` a positive integer -------------
    (
        "anthropic messages string",
        MESSAGES_ROUTE,
        {"model": "m", "messages": "hi", "max_tokens": 5},
        400,
        "messages",
        "invalid_type",
    ),
    (
        "anthropic max_tokens missing",
        MESSAGES_ROUTE,
        {"model": "m", "messages": MESSAGES},
        400,
        "max_tokens",
        "missing_required_parameter",
    ),
    (
        "anthropic max_tokens zero",
        MESSAGES_ROUTE,
        {"model": "m", "messages": MESSAGES, "max_tokens": 0},
        400,
        "max_tokens",
        "invalid_type",
    ),
    (
        "anthropic max_tokens string",
        MESSAGES_ROUTE,
        {"model": "m", "messages": MESSAGES, "max_tokens": "5"},
        400,
        "max_tokens",
        "invalid_type",
    ),
    ("messages string", CHAT, {"model": "m", "messages": "hi"}, 400, "messages", "invalid_type"),
    (
        "messages object",
        CHAT,
        {"model": "m", "messages": {"role": "user"}},
        400,
        "messages",
        "invalid_type",
    ),
    ("messages empty", CHAT, {"model": "m", "messages": []}, 400, "messages", "empty_array"),
    (
        "messages[0] string",
        CHAT,
        {"model": "m", "messages": ["hi"]},
        400,
        "messages[0]",
        "invalid_type",
    ),
    (
        "messages[1] null",
        CHAT,
        {"model": "m", "messages": [*MESSAGES, None]},
        400,
        "messages[1]",
        "invalid_type",
    ),
    ("prompt missing", COMPLETIONS, {"model": "m"}, 400, "prompt", "missing_required_parameter"),
    ("prompt int", COMPLETIONS, {"model": "m", "prompt": 5}, 400, "prompt", "invalid_type"),
    ("prompt bool", COMPLETIONS, {"model": "m", "prompt": True}, 400, "prompt", "invalid_type"),
    (
        "prompt bools are not tokens",
        COMPLETIONS,
        {"model": "m", "prompt": [True, False]},
        400,
        "prompt",
        "invalid_type",
    ),
    (
        "prompt bool in token arrays",
        COMPLETIONS,
        {"model": "m", "prompt": [[1, True]]},
        400,
        "prompt",
        "invalid_type",
    ),
    (
        "prompt mixed strings and ints",
        COMPLETIONS,
        {"model": "m", "prompt": ["a", 1]},
        400,
        "prompt",
        "invalid_type",
    ),
    (
        "prompt floats",
        COMPLETIONS,
        {"model": "m", "prompt": [1.0, 2.0]},
        400,
        "prompt",
        "invalid_type",
    ),
    ("prompt empty array", COMPLETIONS, {"model": "m", "prompt": []}, 400, "prompt", "empty_array"),
    ("input missing", EMBEDDINGS, {"model": "m"}, 400, "input", "missing_required_parameter"),
    (
        "input object",
        EMBEDDINGS,
        {"model": "m", "input": {"text": "x"}},
        400,
        "input",
        "invalid_type",
    ),
    ("input null", EMBEDDINGS, {"model": "m", "input": None}, 400, "input", "invalid_type"),
    ("input bools", EMBEDDINGS, {"model": "m", "input": [True]}, 400, "input", "invalid_type"),
    (
        "input nested strings",
        EMBEDDINGS,
        {"model": "m", "input": [["a"]]},
        400,
        "input",
        "invalid_type",
    ),
    (
        "reserved model_params",
        CHAT,
        {"model": "m", "messages": MESSAGES, "model_params": {}},
        400,
        "model_params",
        "reserved_parameter",
    ),
    (
        "reserved openai_endpoint",
        EMBEDDINGS,
        {"model": "m", "input": "x", "openai_endpoint": "embeddings"},
        400,
        "openai_endpoint",
        "reserved_parameter",
    ),
    ("not an object", CHAT, [{"model": "m"}], 400, None, "invalid_json"),
    ("a bare string", CHAT, "hello", 400, None, "invalid_json"),
]


@pytest.mark.parametrize(
    ("route", "body", "status", "param", "code"),
    [pytest.param(*case[1:], id=case[0]) for case in REJECTIONS],
)
def test_each_rule_rejects_with_its_param_and_code(
    route: OpenAIRoute, body: Any, status: int, param: str | None, code: str
) -> None:
    result = validate_request(route, JSON, encode(body))
    assert isinstance(result, ClientError), result
    assert (result.status, result.param, result.code) == (status, param, code)
    assert result.type == "invalid_request_error"


ACCEPTED: list[tuple[str, OpenAIRoute, dict[str, Any]]] = [
    ("chat", CHAT, {"model": "m", "messages": MESSAGES}),
    ("chat stream", CHAT, {"model": "m", "messages": MESSAGES, "stream": True}),
    ("chat stream null", CHAT, {"model": "m", "messages": MESSAGES, "stream": None}),
    ("prompt string", COMPLETIONS, {"model": "m", "prompt": "once upon"}),
    ("prompt strings", COMPLETIONS, {"model": "m", "prompt": ["a", "b"]}),
    ("prompt tokens", COMPLETIONS, {"model": "m", "prompt": [1, 2, 3]}),
    ("prompt token arrays", COMPLETIONS, {"model": "m", "prompt": [[1, 2], [3]]}),
    ("prompt empty string", COMPLETIONS, {"model": "m", "prompt": ""}),
    ("input string", EMBEDDINGS, {"model": "m", "input": "x"}),
    ("input strings", EMBEDDINGS, {"model": "m", "input": ["x", "y"]}),
    ("input tokens", EMBEDDINGS, {"model": "m", "input": [7, 8]}),
    ("input token arrays", EMBEDDINGS, {"model": "m", "input": [[7], [8, 9]]}),
    ("embeddings stream false", EMBEDDINGS, {"model": "m", "input": "x", "stream": False}),
    (
        "unknown fields pass",
        CHAT,
        {
            "model": "m",
            "messages": MESSAGES,
            "guided_json": {"a": 1},
            "top_k": 5,
            "chat_template_kwargs": None,
            "user": "alice",
            "temperature": 0.2,
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "stream_options": {"include_usage": True},
        },
    ),
    ("model with slash", CHAT, {"model": "meta-llama/Llama-3-8B", "messages": MESSAGES}),
]


@pytest.mark.parametrize(
    ("route", "body"), [pytest.param(*case[1:], id=case[0]) for case in ACCEPTED]
)
def test_each_accepted_shape_is_valid_and_untouched(
    route: OpenAIRoute, body: dict[str, Any]
) -> None:
    result = validate_request(route, JSON, encode(body))
    assert isinstance(result, ValidRequest), result
    assert dict(result.body) == body
    assert result.stream is bool(body.get("stream"))


VALID_CHAT = encode({"model": "m", "messages": MESSAGES})


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        "APPLICATION/JSON",
        "application/vnd.api+json",
        None,
    ],
)
def test_json_content_types_are_accepted(content_type: str | None) -> None:
    assert isinstance(validate_request(CHAT, content_type, VALID_CHAT), ValidRequest)


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ],
)
def test_other_content_types_are_415(content_type: str) -> None:
    result = validate_request(CHAT, content_type, VALID_CHAT)
    assert isinstance(result, ClientError)
    assert (result.status, result.param, result.code) == (415, None, "unsupported_media_type")


@pytest.mark.parametrize("raw", [b"", b"   ", b"\n\t"], ids=["empty", "spaces", "whitespace"])
def test_an_empty_body_is_a_400(raw: bytes) -> None:
    result = validate_request(CHAT, JSON, raw)
    assert isinstance(result, ClientError)
    assert (result.status, result.param, result.code) == (400, None, "empty_body")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model": "m", "messages": [{"role": "user"}], "temperature": NaN}',
        b'{"model": "m", "messages": [{"role": "user"}], "temperature": Infinity}',
        b'{"model": "m", "messages": [{"role": "user"}], "temperature": -Infinity}',
        b'{"model": "m", "messages": [{"role": "user"}], "temperature": 1e400}',
        b'{"model": "m", "messages": [{"role": "user"}], "temperature": -1E+999}',
    ],
    ids=["NaN", "Infinity", "-Infinity", "1e400", "-1E+999"],
)
def test_non_finite_numbers_are_refused_naming_the_field(raw: bytes) -> None:
    """Issue 8: a 400 naming the field, for the literals JSON lacks and for numbers beyond
    a double (which Python would read as infinity and a backend could not read at all)."""
    result = validate_request(CHAT, JSON, raw)
    assert isinstance(result, ClientError)
    assert (result.status, result.param, result.code) == (400, "temperature", "invalid_value")


def test_a_non_finite_number_deep_in_the_body_is_named_by_its_path() -> None:
    raw = b'{"model": "m", "messages": [{"role": "user", "x": [1, {"y": NaN}]}]}'
    result = validate_request(CHAT, JSON, raw)
    assert isinstance(result, ClientError)
    assert result.param == "messages[0].x[1].y"


@pytest.mark.parametrize(
    "number", [b"1.0E2", b"1e308", b"-0.0", b"5e-324", b"12345678901234567890"]
)
def test_large_but_finite_numbers_pass(number: bytes) -> None:
    raw = b'{"model": "m", "messages": [{"role": "user"}], "temperature": ' + number + b"}"
    assert not isinstance(validate_request(CHAT, JSON, raw), ClientError)


@pytest.mark.parametrize(
    "raw",
    [b"{", b'{"model": }', b"\xff\xfe\x00", b"nul"],
    ids=["truncated", "bad value", "bad encoding", "bad literal"],
)
def test_unparseable_bodies_are_a_400(raw: bytes) -> None:
    result = validate_request(CHAT, JSON, raw)
    assert isinstance(result, ClientError)
    assert (result.status, result.param, result.code) == (400, None, "invalid_json")
