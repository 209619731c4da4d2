"""HTTP/1.1 of the h11 transport, Sans-IO (`transports._http1`): what a request head may
hold, and how an answer's bytes are framed, ended and judged fit for reuse.

Each answer case feeds raw bytes (in the pieces given, then optionally the peer's end)
and reads what the `Answer` learnt; no socket is involved.  The transport-level
behaviour built on it is in `test_transport_h11` and `test_transport_conformance`.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from transports._http1 import (
    MAX_HEAD_BYTES,
    Answer,
    LocalProtocolError,
    NoAnswer,
    RemoteProtocolError,
    request_head,
)

# -- the request head ----------------------------------------------------------------------


def test_a_request_head_puts_host_first_and_keeps_the_rest_in_order() -> None:
    head = request_head(
        "POST", "/v1/chat?x=1", [("x-a", "1"), ("Host", "example.org"), ("x-b", "two  words")]
    )
    assert head == (
        b"POST /v1/chat?x=1 HTTP/1.1\r\nHost: example.org\r\nx-a: 1\r\nx-b: two  words\r\n\r\n"
    )


def test_an_empty_header_value_is_valid() -> None:
    assert b"x-empty: \r\n" in request_head("GET", "/", [("Host", "h"), ("x-empty", "")])


@pytest.mark.parametrize(
    ("method", "target", "headers"),
    [
        ("GET", "/", [("Host", "h"), ("x-key", "secret\r\ninjected: yes")]),
        ("GET", "/", [("Host", "h"), ("x-key", "a\nb")]),
        ("GET", "/", [("Host", "h"), ("x-key", "nul\x00")]),
        ("GET", "/", [("Host", "h"), ("x-key", " leading space")]),
        ("GET", "/", [("Host", "h"), ("x-key", "trailing space ")]),
        ("GET", "/", [("Host", "h"), ("x-key", "caf\u00e9")]),
        ("GET", "/", [("Host", "h"), ("bad name", "1")]),
        ("GET", "/", [("Host", "h"), ("bad:name", "1")]),
        ("GET", "/", [("Host", "h"), ("", "1")]),
        ("GET", "/", [("x-only", "1")]),
        ("GET", "/", [("Host", "h"), ("host", "h2")]),
        ("GE T", "/", [("Host", "h")]),
        ("GET", "/a b", [("Host", "h")]),
        ("GET", "/\u00e9", [("Host", "h")]),
        ("GET", "", [("Host", "h")]),
    ],
    ids=[
        "crlf-in-value",
        "lf-in-value",
        "nul-in-value",
        "leading-space",
        "trailing-space",
        "non-ascii-value",
        "space-in-name",
        "colon-in-name",
        "empty-name",
        "no-host",
        "two-hosts",
        "bad-method",
        "space-in-target",
        "non-ascii-target",
        "empty-target",
    ],
)
def test_a_request_that_is_not_valid_http_is_refused_without_quoting_it(
    method: str, target: str, headers: list[tuple[str, str]]
) -> None:
    with pytest.raises(LocalProtocolError) as caught:
        request_head(method, target, headers)
    assert "secret" not in str(caught.value)


# -- the answer ----------------------------------------------------------------------------


def _fed(*pieces: bytes, method: str = "GET", close: bool = False, eof: bool = False) -> Answer:
    answer = Answer(method, close=close)
    for piece in pieces:
        answer.receive(piece)
    if eof:
        answer.receive(b"")
    return answer


def test_a_content_length_answer_ends_by_its_length_and_is_reusable() -> None:
    answer = _fed(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhel", b"lo"
    )
    assert (answer.status, answer.headers) == (
        200,
        [("content-type", "text/plain"), ("content-length", "5")],
    )
    assert list(answer.body) == [b"hel", b"lo"]
    assert answer.ended and answer.reusable


def test_a_chunked_answer_gives_one_piece_per_chunk_and_drops_its_trailers() -> None:
    answer = _fed(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"6\r\ndata: \r\n3;ext=1\r\n1\n\n\r\n0\r\nx-trailer: t\r\n\r\n"
    )
    assert list(answer.body) == [b"data: ", b"1\n\n"]
    assert answer.headers == [("transfer-encoding", "chunked")]
    assert answer.ended and answer.reusable


def test_an_answer_without_framing_runs_until_the_close_and_is_not_reused() -> None:
    answer = _fed(b"HTTP/1.1 200 OK\r\n\r\nsome", b" more")
    assert not answer.ended
    answer.receive(b"")
    assert list(answer.body) == [b"some", b" more"]
    assert answer.ended and not answer.reusable


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
    ],
)
def test_204_and_304_have_no_body_whatever_their_headers_say(head: bytes) -> None:
    answer = _fed(head)
    assert answer.ended and answer.reusable and not answer.body


def test_an_answer_to_head_ends_with_its_head_though_it_announces_a_length() -> None:
    answer = _fed(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", method="HEAD")
    assert answer.ended and answer.reusable and not answer.body
    assert answer.headers == [("content-length", "1000")]


def test_a_body_sent_after_an_answer_to_head_costs_the_connection() -> None:
    answer = _fed(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody", method="HEAD")
    assert answer.ended and not answer.body and answer.overrun and not answer.reusable


def test_interim_answers_are_skipped() -> None:
    answer = _fed(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    )
    assert (answer.status, answer.headers, list(answer.body)) == (
        200,
        [("content-length", "2")],
        [b"ok"],
    )
    assert answer.reusable


def test_header_values_lose_surrounding_whitespace_and_keep_case_and_duplicates() -> None:
    answer = _fed(b"HTTP/1.1 200 OK\r\nX-Dup:  One \t\r\nx-dup: two\r\nContent-Length: 0\r\n\r\n")
    assert answer.headers == [("x-dup", "One"), ("x-dup", "two"), ("content-length", "0")]


@pytest.mark.parametrize(
    ("pieces", "close"),
    [
        ([b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n"], False),
        ([b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"], False),
        ([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"], True),
    ],
    ids=["answer-says-close", "http-1.0", "request-said-close"],
)
def test_a_connection_either_side_closes_is_not_reused(pieces: list[bytes], close: bool) -> None:
    answer = _fed(*pieces, close=close)
    assert answer.ended and not answer.reusable


def test_bytes_after_a_complete_answer_cost_the_connection_not_the_answer() -> None:
    answer = _fed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokgarbage\r\n\r\n")
    assert answer.ended and list(answer.body) == [b"ok"]
    assert answer.overrun and not answer.reusable


def test_a_close_before_a_byte_is_no_answer() -> None:
    with pytest.raises(NoAnswer):
        _fed(eof=True)


@pytest.mark.parametrize(
    "pieces",
    [
        [b"this is not HTTP at all\r\n\r\n"],
        [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"],
        [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"],
        [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"],
        [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n"],
        [b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n"],
        [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
        [b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * MAX_HEAD_BYTES],
    ],
    ids=[
        "garbage",
        "other-coding",
        "coding-then-chunked",
        "two-transfer-encodings",
        "conflicting-lengths",
        "switching-protocols",
        "bad-chunk-size",
        "head-too-large",
    ],
)
def test_an_answer_that_breaks_http_is_refused(pieces: list[bytes]) -> None:
    with pytest.raises(RemoteProtocolError):
        _fed(*pieces)


@pytest.mark.parametrize(
    "pieces",
    [
        [b"HTTP/1.1 200 OK\r\nContent-Len"],
        [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"],
        [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"],
    ],
    ids=["in-the-head", "short-of-its-length", "before-the-last-chunk"],
)
def test_a_close_before_the_answer_is_complete_is_refused(pieces: list[bytes]) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        _fed(*pieces, eof=True)
    assert not isinstance(caught.value, NoAnswer)


def test_a_tunnel_answer_ends_with_its_head_and_never_carries_a_request() -> None:
    answer = _fed(b"HTTP/1.1 200 Connection established\r\n\r\n", method="CONNECT")
    assert answer.ended and not answer.body and not answer.overrun
    assert not answer.reusable


_TOKEN_CHARS = "-!#$%&'*+.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_NEAR_MISSES = 'aZ9-!~:; \t\r\n\x00\x7f\u00e9"'


def _is_token(text: str) -> bool:
    return bool(text) and all(c in _TOKEN_CHARS for c in text)


def _is_field_value(text: str) -> bool:
    visible = all("\x21" <= c <= "\x7e" or c in " \t" for c in text)
    return visible and text == text.strip(" \t")


@given(
    name=st.text(alphabet=_NEAR_MISSES, max_size=5),
    value=st.text(alphabet=_NEAR_MISSES, max_size=7),
)
@example(name="x: y", value="z")
@example(name="x", value="y\r\nz: w")
@settings(max_examples=500)
def test_a_header_is_sent_exactly_when_its_name_is_a_token_and_its_value_a_field_value(
    name: str, value: str
) -> None:
    """A colon or space in a name, or a line break in a value, never passes: no header
    can forge another line of the head."""
    valid = _is_token(name) and _is_field_value(value) and name.lower() != "host"
    try:
        head = request_head("GET", "/", [("Host", "h"), (name, value)])
    except LocalProtocolError:
        assert not valid
    else:
        assert valid
        assert head.endswith(f"{name}: {value}\r\n\r\n".encode())


# -- renewal: the next answer on a connection, the parser kept ------------------------------

_ANSWERS = {
    "length": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4\r\n\r\n{}{}",
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"6\r\ndata: \r\n3\r\n1\n\n\r\n0\r\nx-trailer: t\r\n\r\n",
    "no-content": b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n",
    "interim": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
    "close": b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
    "until-close": b"HTTP/1.1 200 OK\r\n\r\nrest",
    "broken": b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
}


def _learnt(answer: Answer) -> tuple[object, ...]:
    return (
        answer.status,
        answer.headers,
        list(answer.body),
        answer.ended,
        answer.keep_alive,
        answer.overrun,
        answer.reusable,
        answer.renewable,
    )


def _read_as(answer: Answer, data: bytes, cut: int) -> tuple[object, ...]:
    try:
        for piece in (data[:cut], data[cut:]):
            if piece:
                answer.receive(piece)
    except RemoteProtocolError as exc:
        return (type(exc),)
    return _learnt(answer)


@given(
    before=st.sampled_from(["length", "chunked", "no-content", "interim"]),
    after=st.sampled_from(sorted(_ANSWERS)),
    cut=st.integers(min_value=0, max_value=200),
)
@settings(max_examples=300)
def test_a_renewed_answer_reads_the_next_answer_as_a_new_one_does(
    before: str, after: str, cut: int
) -> None:
    previous = _fed(_ANSWERS[before])
    assert previous.renewable
    renewed = previous.renew("GET")
    assert renewed is previous
    assert _read_as(renewed, _ANSWERS[after], cut) == _read_as(Answer("GET"), _ANSWERS[after], cut)


@pytest.mark.parametrize(
    ("data", "method", "close"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", "HEAD", False),
        (b"HTTP/1.1 200 Connection established\r\n\r\n", "CONNECT", False),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", "GET", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "GET", True),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", "GET", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n", "GET", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\no", "GET", False),
    ],
    ids=[
        "head",
        "tunnel",
        "answer-says-close",
        "request-said-close",
        "http-1.0",
        "overrun",
        "partial",
    ],
)
def test_an_answer_whose_parser_is_not_at_a_message_start_is_not_renewed(
    data: bytes, method: str, close: bool
) -> None:
    answer = _fed(data, method=method, close=close)
    assert not answer.renewable
    with pytest.raises(LocalProtocolError):
        answer.renew("GET")


def test_what_was_found_valid_is_kept_bounded_and_the_invalid_never() -> None:
    from transports import _http1

    for index in range(_http1._MAX_KNOWN + 10):
        request_head("GET", f"/v1/responses/resp_{index}", [("Host", "h"), (f"x-{index}", "1")])
    assert len(_http1._TARGETS) <= _http1._MAX_KNOWN
    assert len(_http1._TOKENS) <= _http1._MAX_KNOWN
    for _ in range(2):
        with pytest.raises(LocalProtocolError):
            request_head("GET", "/", [("Host", "h"), ("bad name", "1")])
        with pytest.raises(LocalProtocolError):
            request_head("GET", "/a b", [("Host", "h")])
    assert "bad name" not in _http1._TOKENS and "/a b" not in _http1._TARGETS


def test_answer_header_names_kept_lower_cased_stay_bounded() -> None:
    from transports import _http1

    for index in range(_http1._MAX_KNOWN + 10):
        answer = _fed(b"HTTP/1.1 200 OK\r\nX-Name-%d: V\r\nContent-Length: 0\r\n\r\n" % index)
        assert answer.headers == [(f"x-name-{index}", "V"), ("content-length", "0")]
    assert len(_http1._NAMES) <= _http1._MAX_KNOWN
