"""Client limits in the core: JSON depth, number of messages, text no backend could
encode, and how much of the client's input an error message may repeat.

Each limit is the client's 400 with the OpenAI `code` and the `param` to fix; limits
come from `RequestLimits` (settings), defaults 64 levels and 2,048 messages.  No error
message repeats more than `ECHO_LIMIT` characters of any one thing the client sent.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import (
    Catalog,
    ClientError,
    ClusterRecord,
    EndpointRecord,
    Identity,
    OpenAIRoute,
    RequestLimits,
    ValidRequest,
    clip,
    model_entry,
    select_endpoint,
    usable_cluster,
    validate_request,
)
from core._limits import ECHO_LIMIT, deeper_than, lone_surrogate_at

JSON = "application/json"
CHAT = OpenAIRoute.CHAT_COMPLETIONS
EMBEDDINGS = OpenAIRoute.EMBEDDINGS
USER = {"role": "user", "content": "hi"}


def chat(**extra: Any) -> bytes:
    return json.dumps({"model": "m", "messages": [USER], **extra}).encode()


def nested(depth: int) -> Any:
    """A value `depth` levels deep: lists around an object."""
    value: Any = {"x": 1}
    for _ in range(depth - 1):
        value = [value]
    return value


def refusal(result: ValidRequest | ClientError) -> tuple[int, str | None, str | None]:
    assert isinstance(result, ClientError), result
    return result.status, result.param, result.code


# -- JSON depth --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra_depth", "limit", "refused"),
    [
        (62, 64, False),  # the body object (1) + `extra` 63 deep = 64: at the limit
        (63, 64, True),
        (6, 8, False),
        (7, 8, True),
        (300, 64, True),
    ],
)
def test_json_nested_beyond_the_limit_is_refused(
    extra_depth: int, limit: int, refused: bool
) -> None:
    raw = chat(extra=nested(extra_depth + 1))
    result = validate_request(CHAT, JSON, raw, RequestLimits(max_json_depth=limit))
    if not refused:
        assert isinstance(result, ValidRequest)
        return
    status, param, code = refusal(result)
    assert (status, code) == (400, "json_too_deep")
    assert param is not None and param.startswith("extra")
    assert isinstance(result, ClientError) and str(limit) in result.message


def test_the_refusal_names_the_path_of_the_first_container_too_deep() -> None:
    """Depths: the body 1, messages 2, messages[0] 3, content 4, content[0] 5, a 6."""
    raw = json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": [{"a": [[{"b": []}]]}]}]}
    ).encode()
    result = validate_request(CHAT, JSON, raw, RequestLimits(max_json_depth=6))
    assert refusal(result) == (400, "messages[0].content[0].a[0]", "json_too_deep")


def test_json_deeper_than_the_parser_goes_is_the_same_refusal() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    raw = b'{"model": "m", "messages": [{"role": "user"}], "x": ' + deep + b"}"
    assert refusal(validate_request(CHAT, JSON, raw)) == (400, None, "json_too_deep")
    assert refusal(validate_request(CHAT, JSON, b"[" * 100_000))[2] == "json_too_deep"


@given(depth=st.integers(min_value=1, max_value=200), limit=st.integers(min_value=2, max_value=80))
def test_any_depth_over_the_limit_is_refused_and_none_under_it(depth: int, limit: int) -> None:
    """The body is depth 1, `messages` 2, each message 3: a value in a message's field
    at depth `depth` below it makes the body `depth + 3` deep."""
    message = {"role": "user", "content": "hi", "extra": nested(depth)}
    raw = json.dumps({"model": "m", "messages": [message]}).encode()
    result = validate_request(CHAT, JSON, raw, RequestLimits(max_json_depth=limit))
    if depth + 3 > limit:
        assert refusal(result)[2] == "json_too_deep"
    else:
        assert isinstance(result, ValidRequest)


@given(value=st.recursive(st.integers(), lambda c: st.lists(c, max_size=3), max_leaves=30))
def test_deeper_than_agrees_with_a_recursive_count(value: Any) -> None:
    def depth(v: Any) -> int:
        return 1 + max((depth(c) for c in v), default=0) if isinstance(v, list) else 0

    for limit in range(1, 8):
        assert (deeper_than(value, limit) is not None) == (depth(value) > limit)


# -- number of messages ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "limit", "refused"),
    [(2048, 2048, False), (2049, 2048, True), (3, 3, False), (4, 3, True)],
)
def test_more_messages_than_the_limit_are_refused(count: int, limit: int, refused: bool) -> None:
    raw = json.dumps({"model": "m", "messages": [USER] * count}).encode()
    result = validate_request(CHAT, JSON, raw, RequestLimits(max_messages=limit))
    if not refused:
        assert isinstance(result, ValidRequest)
        return
    assert refusal(result) == (400, "messages", "array_above_max_length")
    assert isinstance(result, ClientError)
    assert f"maximum length {limit}" in result.message and f"length {count}" in result.message


@pytest.mark.parametrize(
    "limits",
    [
        {"max_json_depth": 0},
        {"max_json_depth": 513},
        {"max_messages": 0},
        {"max_messages": True},
        {"max_json_depth": "64"},
    ],
)
def test_limits_that_make_no_sense_cannot_exist(limits: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="max_"):
        RequestLimits(**limits)


# -- text that cannot be encoded ---------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (rb'{"model": "m", "messages": [{"role": "user", "content": "\ud800"}]}',
         "messages[0].content"),
        (rb'{"model": "m", "messages": [{"role": "user", "content": "a\uDC00b"}]}',
         "messages[0].content"),
        (rb'{"model": "m", "messages": [{"role": "user", "content": "\ude00\ud83d"}]}',
         "messages[0].content"),
        (rb'{"model": "m", "messages": [{"role": "user", "content": [{"text": "x\udbff"}]}]}',
         "messages[0].content[0].text"),
        (rb'{"model": "m", "messages": [{"role": "user", "k\ud800": 1}]}',
         "messages[0].k\ud800"),
        (rb'{"model": "m\ud800", "messages": [{"role": "user"}]}', "model"),
    ],
    ids=["high", "low-mixed-case", "reversed-pair", "nested", "in-a-key", "in-the-model"],
)  # fmt: skip
def test_a_lone_surrogate_is_the_clients_400_naming_where(raw: bytes, param: str) -> None:
    """Issue 11: once a 502 'backend could not be reached'; no UTF-8 encoder can write it."""
    result = validate_request(CHAT, JSON, raw)
    assert refusal(result) == (400, param, "invalid_encoding")
    assert lone_surrogate_at(raw, json.loads(raw)) == param


@pytest.mark.parametrize(
    "raw",
    [
        rb'{"model": "m", "messages": [{"role": "user", "content": "\ud83d\ude00"}]}',
        rb'{"model": "m", "messages": [{"role": "user", "content": "\\ud800 is text"}]}',
        '{"model": "m", "messages": [{"role": "user", "content": "\U0001f600"}]}'.encode(),
    ],
    ids=["escaped-pair", "escaped-backslash", "raw-utf8-emoji"],
)
def test_surrogate_pairs_and_lookalikes_pass(raw: bytes) -> None:
    assert isinstance(validate_request(CHAT, JSON, raw), ValidRequest)


@given(text=st.text(max_size=20), where=st.integers(min_value=0, max_value=20))
def test_any_text_with_a_lone_surrogate_is_refused_and_any_without_passes(
    text: str, where: int
) -> None:
    clean = json.dumps({"model": "m", "input": text}).encode()
    assert isinstance(validate_request(EMBEDDINGS, JSON, clean), ValidRequest)
    broken = text[:where] + "\ud800" + text[where:]
    raw = json.dumps({"model": "m", "input": broken}).encode()  # ASCII escapes: "\ud800"
    assert refusal(validate_request(EMBEDDINGS, JSON, raw)) == (400, "input", "invalid_encoding")


# -- echoes are clipped ------------------------------------------------------------------

CATALOG = Catalog.build(
    [
        ClusterRecord(
            id="1",
            cluster_name="c",
            cluster_adapter="adaptors.clusters.demo.DemoCluster",
            frameworks=["vllm"],
            openai_endpoints=["chat/completions"],
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
ALICE = Identity(username="alice@example.org")
long_texts = st.text(min_size=ECHO_LIMIT + 1, max_size=5000)


def assert_clipped(message: str, sent: str) -> None:
    assert sent not in message
    assert clip(sent) in message
    assert len(message) < 400


def test_a_one_megabyte_model_name_is_not_echoed_whole() -> None:
    model = "x" * (1 << 20)
    valid = validate_request(CHAT, JSON, json.dumps({"model": model, "messages": [USER]}).encode())
    assert isinstance(valid, ValidRequest)
    result = select_endpoint(CATALOG, ALICE, valid)
    assert isinstance(result, ClientError) and result.code == "model_not_found"
    assert_clipped(result.message, model)


@given(model=long_texts)
def test_any_unknown_model_is_echoed_as_a_short_prefix(model: str) -> None:
    valid = ValidRequest(route=CHAT, model=model, stream=False, body={})
    for result in (
        select_endpoint(CATALOG, ALICE, valid),
        select_endpoint(CATALOG, ALICE, valid, cluster="c", framework="vllm"),
        model_entry(CATALOG, ALICE, model),
    ):
        assert isinstance(result, ClientError)
        assert_clipped(result.message, model)


@given(name=long_texts)
def test_any_unknown_cluster_or_framework_is_echoed_as_a_short_prefix(name: str) -> None:
    cluster = usable_cluster(CATALOG, ALICE, name)
    assert isinstance(cluster, ClientError)
    assert_clipped(cluster.message, name)
    valid = ValidRequest(route=CHAT, model="m", stream=False, body={})
    framework = select_endpoint(CATALOG, ALICE, valid, cluster="c", framework=name)
    assert isinstance(framework, ClientError)
    assert_clipped(framework.message, name)


@given(media=st.text(alphabet="abcdefghij/+.-", min_size=ECHO_LIMIT + 1, max_size=3000))
def test_any_content_type_is_echoed_as_a_short_prefix(media: str) -> None:
    result = validate_request(CHAT, media, chat())
    assert isinstance(result, ClientError) and result.status == 415
    assert_clipped(result.message, media)


@given(key=st.text(alphabet="abcdefgh", min_size=ECHO_LIMIT + 1, max_size=3000))
def test_a_path_named_in_an_error_is_clipped_too(key: str) -> None:
    for raw in (
        b'{"model": "m", "messages": [{"role": "user"}], "' + key.encode() + b'": NaN}',
        json.dumps({"model": "m", "messages": [{"role": "user", key: "\ud800"}]}).encode(),
    ):
        result = validate_request(CHAT, JSON, raw)
        assert isinstance(result, ClientError) and result.param is not None
        assert len(result.param) <= ECHO_LIMIT + 1
        assert key not in result.message


@given(text=st.text(max_size=200))
def test_clip_keeps_a_short_prefix(text: str) -> None:
    clipped = clip(text)
    assert len(clipped) <= ECHO_LIMIT + 1
    assert clipped == text or (clipped.endswith("…") and text.startswith(clipped[:-1]))
