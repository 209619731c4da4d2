"""HTTP/1.1 for the client side, Sans-IO: a request head written here, an answer parsed
by httptools (llhttp, in C).

Theory of operation.  A call sends one request on one connection and receives one
answer.  `request_head` turns the method, target and headers into the bytes of the head,
refusing (with `LocalProtocolError`, before any IO) anything that is not valid HTTP: a
method or header name that is not a token, a target or header value with a control
character, space (target) or non-ASCII character in it, no `Host` or two.  The caller
adds the body and frames it (`Content-Length`).

`Answer` is the receiving side of one exchange: it is fed what the socket gives
(`receive`, b"" for the peer's end) and keeps what it has learnt: the status and headers
of the final answer (1xx interim answers are skipped), the body pieces not yet taken (one
per piece llhttp reports: a chunk of a chunked body, or what one read held), whether the
answer has ended, and whether the connection may carry another request.  It does no IO,
reads no clock and holds no socket.  Each exchange gets an `Answer` of its own state: a
new one, or the connection's last one `renew`ed, which is allowed only when that answer
ended exactly where llhttp completed its message and llhttp keeps the connection alive
(not after HEAD or CONNECT, whose ends are told here): llhttp is then back at the start
of a message, as a new parser is, and making a parser cost as much as parsing a small
answer.

Framing, as RFC 9112 section 6.3 has it (and as llhttp applies it): no body after a
HEAD, a 1xx, a 204, a 304 or a 2xx to CONNECT; else `Transfer-Encoding: chunked`, else
`Content-Length`, else the body runs until the peer closes.  llhttp does not know which
method was asked, so an answer to HEAD (or a 2xx to CONNECT) ends here as soon as its
head is complete.  Refused as the peer's fault (`RemoteProtocolError`): what llhttp
refuses (a broken status line or header, `Content-Length` given twice or beside
`Transfer-Encoding`, a bad chunk), a transfer coding other than `chunked` alone, a head
larger than `MAX_HEAD_BYTES`, a 101 (no upgrade is ever asked for), and an end of
stream before the answer's framing says it is complete; `NoAnswer`, a kind of it, when
the peer closed without sending a byte.

Reuse: the connection may carry another request only when the answer ended by its own
framing (not by the close), both sides kept the connection alive (HTTP/1.1 or later,
no `Connection: close` from either), and nothing followed the answer in what was read
(`overrun`: bytes past its end are never parsed as the next answer, and they cost the
connection, not the answer already complete).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import httptools

__all__ = [
    "MAX_HEAD_BYTES",
    "Answer",
    "LocalProtocolError",
    "NoAnswer",
    "RemoteProtocolError",
    "request_head",
]

# The most bytes an answer's head (with any interim answers before it) may take.
MAX_HEAD_BYTES = 64 * 1024

# RFC 9110 section 5.6.2 (token) and 5.5 (field-value: visible characters, with single
# spaces or tabs only between them); a request-target here is visible characters only.
_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(r"(?:[\x21-\x7e]+(?:[ \t]+[\x21-\x7e]+)*)?")
_TARGET = re.compile(r"[\x21-\x7e]+")
_NO_BODY_STATUSES = frozenset({204, 304})
# Methods and header names, and targets, already matched by their pattern: a gateway
# sends the same few again and again, and the patterns were a third of a head's cost.
# Bounded (emptied when full): a target may hold an id.
_TOKENS: set[str] = set()
_TARGETS: set[str] = set()
_MAX_KNOWN = 1024
# Answer header names as received, lower-cased: a backend sends the same few each time.
_NAMES: dict[bytes, str] = {}


class LocalProtocolError(Exception):
    """The request cannot be sent as valid HTTP (the message names nothing of it)."""


class RemoteProtocolError(Exception):
    """The peer broke HTTP."""


class NoAnswer(RemoteProtocolError):
    """The peer closed the connection without sending a byte of an answer."""


def request_head(method: str, target: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """The head of an HTTP/1.1 request, `Host` first; exactly one `Host` is required."""
    if not (
        (method in _TOKENS or _matches(_TOKEN, method, _TOKENS))
        and (target in _TARGETS or _matches(_TARGET, target, _TARGETS))
    ):
        raise LocalProtocolError("the request line is not valid HTTP")
    host = ""
    lines = []
    for name, value in headers:
        # A value of printable ASCII (no tab, no control) with no space at either end is
        # one the pattern accepts; such values, nearly all, are told by three string
        # methods, and the pattern decides the rest (a tab, or a value it refuses).
        if not (
            (name in _TOKENS or _matches(_TOKEN, name, _TOKENS))
            and (
                (value.isascii() and value.isprintable() and value[:1] != " " != value[-1:])
                or _FIELD_VALUE.fullmatch(value)
            )
        ):
            raise LocalProtocolError("a header is not valid HTTP")
        if name.lower() == "host":
            if host:
                raise LocalProtocolError("more than one Host header")
            host = f"{name}: {value}\r\n"
        else:
            lines.append(f"{name}: {value}\r\n")
    if not host:
        raise LocalProtocolError("no Host header")
    # The patterns admit ASCII only, so this cannot fail.
    return f"{method} {target} HTTP/1.1\r\n{host}{''.join(lines)}\r\n".encode("ascii")


def _matches(pattern: re.Pattern[str], text: str, known: set[str]) -> bool:
    """Whether `pattern` matches all of `text`, which is then kept in `known`."""
    if pattern.fullmatch(text) is None:
        return False
    if len(known) >= _MAX_KNOWN:
        known.clear()
    known.add(text)
    return True


class Answer:
    """The answer to one request, as it is received (see the module's docstring).

    `method` is the request's (it decides whether a body may follow); `close` says the
    request itself asked for `Connection: close`.
    """

    __slots__ = (
        "_chunked",
        "_clean",
        "_close",
        "_connection_close",
        "_head_bytes",
        "_interim",
        "_length",
        "_method",
        "_parser",
        "_received",
        "_transfer_encodings",
        "_until_close",
        "body",
        "ended",
        "has_head",
        "headers",
        "keep_alive",
        "overrun",
        "status",
    )

    def __init__(self, method: str, *, close: bool = False) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._start(method, close)

    def renew(self, method: str, *, close: bool = False) -> Answer:
        """This answer, made new for the next request on its connection, its parser
        kept; only when `renewable`."""
        if not self.renewable:
            raise LocalProtocolError("this answer's parser is not at the start of a message")
        self._start(method, close)
        return self

    def _start(self, method: str, close: bool) -> None:
        self._method = method
        self._close = close
        self._received = False
        self._head_bytes = 0
        self._interim = False
        self._chunked = False
        self._length = False
        self._transfer_encodings = 0
        self._connection_close = False
        self._until_close = False
        self._clean = False  # llhttp completed the final message and keeps the connection
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.has_head = False  # the final answer's head is complete
        # Body pieces received and not yet taken: a list, not a deque, because an open
        # stream keeps its answer for its whole life and an empty deque is 760 bytes (a
        # list, 56); it holds a piece or two between takes.
        self.body: list[bytes] = []
        self.ended = False  # the whole answer is in
        self.keep_alive = False
        self.overrun = False  # bytes came after the answer's end

    @property
    def reusable(self) -> bool:
        """Whether the connection may carry another request once this answer is taken."""
        return self.ended and self.keep_alive and not self.overrun

    @property
    def renewable(self) -> bool:
        """Whether `renew` may serve the connection's next request: reusable, and llhttp
        is at the start of the next message."""
        return self._clean and self.ended and self.keep_alive and not self.overrun

    def receive(self, data: bytes) -> None:
        """Feed what the connection gave; b"" is the peer's end of stream."""
        if not data:
            self._end_of_stream()
            return
        self._received = True
        if not self.has_head:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if not self.ended:
                raise RemoteProtocolError("the peer switched protocols") from None
            self.overrun = True
        except httptools.HttpParserError:
            if not self.ended:
                raise RemoteProtocolError("the peer broke HTTP") from None
            self.overrun = True  # what follows a complete answer only costs the connection
        if not self.has_head and self._head_bytes > MAX_HEAD_BYTES:
            raise RemoteProtocolError("the answer's head is too large")

    def _end_of_stream(self) -> None:
        if self.ended:
            return
        if not self._received:
            raise NoAnswer("the peer closed without answering")
        if self.has_head and self._until_close:
            self.ended = True
            self.keep_alive = False
            return
        raise RemoteProtocolError("the peer closed before the answer was complete")

    # llhttp's callbacks, through httptools.

    def on_message_begin(self) -> None:
        if self.ended:
            self.overrun = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.has_head:
            return  # a chunked body's trailers: not kept
        lowered = _NAMES.get(name)
        if lowered is None:
            lowered = name.decode("latin-1").lower()
            if len(_NAMES) >= _MAX_KNOWN:
                _NAMES.clear()
            _NAMES[name] = lowered
        text = value.decode("latin-1").rstrip(" \t")
        if lowered == "transfer-encoding":
            self._transfer_encodings += 1
            self._chunked = text.lower() == "chunked"
        elif lowered == "content-length":
            self._length = True
        elif lowered == "connection":
            tokens = text.lower()
            # Split only when it may hold the token: "keep-alive", the usual value, never.
            if "close" in tokens:
                self._connection_close |= "close" in (t.strip() for t in tokens.split(","))
        self.headers.append((lowered, text))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            if status == 101:
                raise RemoteProtocolError("the peer switched protocols")
            self._interim = True  # skipped: its message completes with no body
            self.headers = []
            self._transfer_encodings = 0
            self._chunked = self._length = self._connection_close = False
            return
        if self._transfer_encodings and (self._transfer_encodings > 1 or not self._chunked):
            raise RemoteProtocolError("a transfer coding other than chunked")
        self.status = status
        self.has_head = True
        tunnel = self._method == "CONNECT" and status < 300
        self.keep_alive = not (
            self._close
            or self._connection_close
            or tunnel
            or self._parser.get_http_version() < "1.1"
        )
        if self._method == "HEAD" or tunnel:
            self.ended = True  # llhttp would wait for the body the headers announce
        elif not (self._chunked or self._length or status in _NO_BODY_STATUSES):
            self._until_close = True
            self.keep_alive = False

    def on_body(self, data: bytes) -> None:
        if self.ended:
            self.overrun = True
        else:
            self.body.append(data)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
        elif self.has_head:
            self._clean = not self.ended and self._parser.should_keep_alive()
            self.ended = True
