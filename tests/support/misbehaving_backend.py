"""A backend that misbehaves on command, on real sockets, and counts its connections.

Unlike `fake_openai` (a Quart app under Hypercorn, which decides framing and flushing for
itself), this server writes raw bytes from plain threads, so it can do what a broken or
overloaded backend does: accept and never answer, send half a body and vanish, drip one
byte per second, send 50 MB.  It runs beside any event loop (the gateway's, asyncio or
trio, in this process or another) because it has none of its own.

The behaviour is the first segment of the request path, so one server can be many
backends: an endpoint configured with `backend.url_for("silent")` as its `api_url`
(`http://127.0.0.1:PORT/silent/v1`) meets a backend that never answers.  Options follow
the name, comma-separated: `url_for("drip", every=0.5)` is `/drip,every=0.5/v1`.

==============  ===========================================================================
ok              a proper chat completion (a stream if the body asks for one); `delay`
                seconds before answering
silent          accepts, reads the request, never answers until the client goes away
status          HTTP `code` (default 500): an OpenAI error body for 4xx (429 with
                `Retry-After: 1`), a text body for 5xx
invalid-json    HTTP 200, `application/json`, a body that is not JSON; a stream: one
                event, then one that is not JSON, then `[DONE]`
wrong-shape     HTTP 200, a JSON object that is not a chat completion
cut             a stream: two events, then the connection closes mid-body; a whole
                answer: a tenth of its announced `Content-Length`, then the close
hang            a stream: one event, then nothing until the client goes away; a whole
                answer: the head and a few bytes, then nothing
drip            the head at once, then the body one byte every `every` seconds (default 1)
huge            HTTP 200 with a JSON body of `bytes` bytes (default 50 MB), sent as fast as
                the client reads; with `chunked=1` chunked, so no Content-Length warns
slow-stream     a healthy stream: `chunks` events (default 6), one every `every` seconds
                (default 0.5), then `[DONE]`
reset           reads the request, then resets the connection (RST)
==============  ===========================================================================

Every answer says `Connection: close` and the server closes its side once it has sent
it, so after a test no connection should stay open: `open_connections` counts them
(accepted and not yet closed by either side) and `wait_until_idle` waits for zero.  A
behaviour that waits for the client notices it leaving at once (a readable socket that
reads empty), and a sending one at its next write.  `refused_url()` names a port nothing
listens on, for the backend that refuses connections; `unaccepting_url()` one whose
connections are never accepted, for a connect timeout.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import h11

__all__ = [
    "BEHAVIOURS",
    "MisbehavingBackend",
    "refused_url",
    "running_misbehaving_backend",
    "unaccepting_url",
]

BEHAVIOURS = (
    "ok",
    "silent",
    "status",
    "invalid-json",
    "wrong-shape",
    "cut",
    "hang",
    "drip",
    "huge",
    "slow-stream",
    "reset",
)
_READ = 64 * 1024


class _ClientGone(Exception):
    """The client closed or reset the connection."""


def refused_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (the OS picked the port, and it was
    closed again), so a connection to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/refused/v1"


@contextmanager
def unaccepting_url() -> Iterator[str]:
    """An http URL on 127.0.0.1 whose listener never accepts and whose accept queue is
    full, so the kernel drops further SYNs and a connect hangs until the client's own
    connect timeout.  The premise (that this kernel drops them) is checked once, with a
    probe that must not connect within 0.3 s."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    fillers: list[socket.socket] = []
    try:
        for _ in range(4):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            filler.connect_ex(address)
            fillers.append(filler)
        _, connected, _ = select.select([], [fillers[-1]], [], 0.3)
        if connected:
            raise RuntimeError("this kernel accepts connections past a full accept queue")
        yield f"http://127.0.0.1:{address[1]}/unaccepting/v1"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def _completion(model: str, text: str = "Hello from a misbehaving backend.") -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-misbehaving",
            "object": "chat.completion",
            "created": 1700000000,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": text},
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9},
        }
    ).encode()


def _event(model: str, index: int, content: str) -> bytes:
    chunk = {
        "id": "chatcmpl-misbehaving",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
    }
    return f"data: {json.dumps(chunk)}\n\n".encode()


def _head(status: int, content_type: str, *, length: int | None, extra: str = "") -> bytes:
    framing = f"content-length: {length}\r\n" if length is not None else ""
    if length is None:
        framing = "transfer-encoding: chunked\r\n"
    reason = {200: "OK", 429: "Too Many Requests"}.get(status, "Status")
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\n{framing}"
        f"{extra}connection: close\r\n\r\n"
    ).encode()


def _chunk(data: bytes) -> bytes:
    """One piece of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


class _Exchange:
    """One connection's request, and the means to answer it badly."""

    def __init__(self, sock: socket.socket, backend: MisbehavingBackend) -> None:
        self.sock = sock
        self.backend = backend
        self.behaviour = ""
        self.options: dict[str, str] = {}
        self.body: dict[str, Any] = {}

    # -- reading ------------------------------------------------------------------------

    def read_request(self) -> bool:
        """Read one whole request; False if the client left first."""
        machine = h11.Connection(h11.SERVER)
        target = b""
        body = bytearray()
        while True:
            event = machine.next_event()
            if event is h11.NEED_DATA:
                data = self.sock.recv(_READ)
                if not data:
                    return False
                machine.receive_data(data)
            elif isinstance(event, h11.Request):
                target = bytes(event.target)
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        first, _, _ = target.decode("latin-1").lstrip("/").partition("/")
        name, *pairs = first.split(",")
        self.behaviour = name
        self.options = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
        with suppress(ValueError):
            parsed = json.loads(body or b"{}")
            self.body = parsed if isinstance(parsed, dict) else {}
        return True

    @property
    def stream(self) -> bool:
        return self.body.get("stream") is True

    @property
    def model(self) -> str:
        return str(self.body.get("model", "misbehaving"))

    def number(self, name: str, default: float) -> float:
        return float(self.options.get(name, default))

    # -- writing and waiting --------------------------------------------------------------

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            raise _ClientGone from None

    def pause(self, seconds: float) -> None:
        """Wait `seconds`, unless the client leaves first (then `_ClientGone`); it sleeps
        in `select`, so a thousand waiting connections cost no CPU."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([self.sock], [], [], left)
            if readable:
                try:
                    if not self.sock.recv(_READ):  # the client closed (or we stopped)
                        raise _ClientGone
                except OSError:
                    raise _ClientGone from None
        if self.backend.stopping.is_set():
            raise _ClientGone

    def wait_for_client_to_leave(self) -> None:
        """Block until the client closes its side (or the server stops: it shuts every
        connection down, which reads as a close); whatever it sends is dropped."""
        with suppress(OSError):
            while self.sock.recv(_READ):
                pass

    # -- behaviours -----------------------------------------------------------------------

    def answer(self) -> None:
        getattr(self, "_" + self.behaviour.replace("-", "_"), self._unknown)()

    def _unknown(self) -> None:
        body = b"unknown behaviour"
        self.send(_head(404, "text/plain", length=len(body)) + body)

    def _ok(self) -> None:
        self.pause(self.number("delay", 0))
        if not self.stream:
            body = _completion(self.model)
            self.send(_head(200, "application/json", length=len(body)) + body)
            return
        self.send(_head(200, "text/event-stream", length=None))
        for index, word in enumerate(("Hello", " from", " a stream.")):
            self.send(_chunk(_event(self.model, index, word)))
        self.send(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")

    def _silent(self) -> None:
        self.wait_for_client_to_leave()

    def _status(self) -> None:
        code = int(self.options.get("code", "500"))
        if code < 500:
            error = {"message": f"refused with {code}", "type": "rate_limit_error", "param": None}
            body = json.dumps({"error": {**error, "code": "rate_limited"}}).encode()
            extra = "retry-after: 1\r\n" if code == 429 else ""
            self.send(_head(code, "application/json", length=len(body), extra=extra) + body)
        else:
            body = b"upstream exploded: internal secret detail"
            self.send(_head(code, "text/plain", length=len(body)) + body)

    def _invalid_json(self) -> None:
        if self.stream:
            self.send(_head(200, "text/event-stream", length=None))
            self.send(_chunk(_event(self.model, 0, "Hello")))
            self.send(_chunk(b'data: {"id": "chatcmpl-1", "choices": [\n\n'))
            self.send(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
            return
        body = b'{"id": "chatcmpl-1", "choices": [{"message": '
        self.send(_head(200, "application/json", length=len(body)) + body)

    def _wrong_shape(self) -> None:
        body = b'{"unexpected": true}'
        self.send(_head(200, "application/json", length=len(body)) + body)

    def _cut(self) -> None:
        if self.stream:
            self.send(_head(200, "text/event-stream", length=None))
            self.send(
                _chunk(_event(self.model, 0, "Hello")) + _chunk(_event(self.model, 1, " wor"))
            )
            return  # closed mid-body: no last chunk, no [DONE]
        body = _completion(self.model)
        self.send(_head(200, "application/json", length=len(body)) + body[: len(body) // 10])

    def _hang(self) -> None:
        if self.stream:
            self.send(_head(200, "text/event-stream", length=None))
            self.send(_chunk(_event(self.model, 0, "Hello")))
        else:
            body = _completion(self.model)
            self.send(_head(200, "application/json", length=len(body)) + body[:8])
        self.wait_for_client_to_leave()

    def _drip(self) -> None:
        every = self.number("every", 1.0)
        if self.stream:
            self.send(_head(200, "text/event-stream", length=None))
            for byte in _event(self.model, 0, "drip") + b"data: [DONE]\n\n":
                self.pause(every)
                self.send(_chunk(bytes([byte])))
            self.send(b"0\r\n\r\n")
            return
        body = _completion(self.model)
        self.send(_head(200, "application/json", length=len(body)))
        for byte in body:
            self.pause(every)
            self.send(bytes([byte]))

    def _huge(self) -> None:
        size = int(self.number("bytes", 50 * 1024 * 1024))
        chunked = self.options.get("chunked") == "1"  # no Content-Length to warn the reader
        frame = _chunk if chunked else bytes
        opening, closing = b'{"padding": "', b'"}'
        filler = size - len(opening) - len(closing)
        self.send(_head(200, "application/json", length=None if chunked else size))
        self.send(frame(opening))
        piece = b"x" * _READ
        while filler > 0:
            self.send(frame(piece[: min(filler, len(piece))]))
            filler -= len(piece)
        self.send(frame(closing) + (b"0\r\n\r\n" if chunked else b""))

    def _slow_stream(self) -> None:
        every, chunks = self.number("every", 0.5), int(self.number("chunks", 6))
        self.send(_head(200, "text/event-stream", length=None))
        for index in range(chunks):
            if index:
                self.pause(every)
            self.send(_chunk(_event(self.model, index, f" word{index}")))
        self.send(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")

    def _reset(self) -> None:
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class MisbehavingBackend:
    """The server: `url`, `url_for(behaviour, **options)`, and its connection counts."""

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1024)
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.stopping = threading.Event()
        self._changed = threading.Condition()
        self._open: set[socket.socket] = set()
        self.accepted = 0
        self.requests: Counter[str] = Counter()  # behaviour -> requests read
        self._acceptor = threading.Thread(
            target=self._accept_loop, name=f"misbehaving-{self.port}", daemon=True
        )
        self._acceptor.start()

    def url_for(self, behaviour: str, **options: object) -> str:
        """The `api_url` of an endpoint whose backend behaves so (see the module's table)."""
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {behaviour!r}; known: {', '.join(BEHAVIOURS)}")
        segment = ",".join([behaviour, *(f"{k}={v}" for k, v in options.items())])
        return f"{self.url}/{segment}/v1"

    @property
    def open_connections(self) -> int:
        with self._changed:
            return len(self._open)

    @property
    def seen(self) -> int:
        """Requests read so far, whatever their behaviour."""
        with self._changed:
            return sum(self.requests.values())

    def wait_for_requests(self, count: int, timeout: float) -> bool:
        """Whether `count` requests in all have been read within `timeout` seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: sum(self.requests.values()) >= count, timeout)

    def wait_for_connections(self, count: int, timeout: float) -> bool:
        """Whether at least `count` connections are open within `timeout` seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self._open) >= count, timeout)

    def wait_until_idle(self, timeout: float) -> bool:
        """Whether every connection is closed within `timeout` seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._open, timeout)

    def close(self) -> None:
        """Stop accepting, end every behaviour that waits, close every connection."""
        self.stopping.set()
        with suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._changed:
            for sock in list(self._open):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self._acceptor.join(5)

    def _accept_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self._changed:
                self._open.add(sock)
                self.accepted += 1
                self._changed.notify_all()
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        exchange = _Exchange(sock, self)
        try:
            if exchange.read_request():
                with self._changed:
                    self.requests[exchange.behaviour] += 1
                    self._changed.notify_all()
                exchange.answer()
        except (_ClientGone, OSError, h11.RemoteProtocolError):
            pass
        finally:
            with suppress(OSError):
                sock.close()
            with self._changed:
                self._open.discard(sock)
                self._changed.notify_all()


@contextmanager
def running_misbehaving_backend() -> Iterator[MisbehavingBackend]:
    backend = MisbehavingBackend()
    try:
        yield backend
    finally:
        backend.close()
