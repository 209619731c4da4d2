"""A real OpenAI-compatible backend for tests, whose misbehaviour is chosen by model name.

It is a Quart app served over real sockets (see `servers.serve_app`), because streaming,
disconnects and time-outs only show their true behaviour through a real server.  It
records every request it receives (thread-safely: the server runs in another thread), so
tests can check what the gateway sent: the Authorization header, the exact body, how
many calls.

Models with special behaviour:

==============  ==============================================================
fail-500        HTTP 500 whose body contains "internal secret detail"
bad-json        HTTP 200 with a body that is not JSON
reject-400      an OpenAI-shaped 400 (param "temperature", code "invalid_value")
cut-stream      two chunks, then the stream ends without `data: [DONE]`
error-stream    one chunk, then `data: {"error": {...}}`
hang-stream     one chunk, then nothing until the client goes away
slow            no answer at all until the client goes away
exact-body      HTTP 200 with `EXACT_BODY`: odd spacing, escapes, key order (to
                check that a body is relayed byte for byte, not re-serialised)
gated           answers properly, but only as the test lets it through the gate
                (`allow`): the test decides how many requests are answered and
                which are held, so "mid-way" is a state, not a moment

A stream whose request says `stream_options.include_usage` ends, as OpenAI's and vLLM's
do, with a chunk that has no choices and the usage.
==============  ==============================================================

The gate starts closed; `allow(n)` lets n more gated requests through, `allow(None)`
opens it for good (teardown opens it too).  `held` lists the requests waiting at it.

`POST /v1/responses` (stored, with `GET`, `DELETE`, `.../cancel` and `.../input_items`
on `/v1/responses/{id}`) and `POST /v1/messages` are served too (`tests.support.fake_apis`).

"Until the client goes away" is observable: `stream_cancelled` (a `threading.Event`)
is set when the server sees the client leave a hanging stream or a slow request, and
`cancelled` lists the models for which that happened.  Any other model answers properly.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import attrs
from quart import Quart, Response, g, request

from tests.support.fake_apis import add_apis
from tests.support.servers import serve_app

__all__ = ["EXACT_BODY", "SECRET_DETAIL", "FakeOpenAI", "RecordedRequest", "running_fake_openai"]

SECRET_DETAIL = "internal secret detail"
EXACT_BODY = (
    b'{"object":"chat.completion",  "id":"exact-1","created":1700000000,"model":"exact-body",'
    b'"choices":[{"index":0,"finish_reason":"stop","logprobs":null,'
    b'"message":{"role":"assistant","content":"caf\\u00e9 \xc3\xbc \\"quoted\\""}}],'
    b'"usage":{"prompt_tokens":1,"completion_tokens":3,"total_tokens":4}}'
)


@attrs.frozen(kw_only=True)
class RecordedRequest:
    """One request as the server saw it; `headers` keys are lower-case."""

    method: str
    path: str
    headers: dict[str, str] = attrs.field(eq=False)
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        return json.loads(self.body)


def _error(
    status: int, message: str, type_: str, *, param: str | None = None, code: str | None = None
) -> Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return Response(json.dumps(body), status=status, content_type="application/json")


def _lowered(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Header names lower-cased; repeated headers joined as HTTP allows."""
    headers: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


async def _raw_body() -> bytes:
    data = await request.get_data(as_text=False)
    return data if isinstance(data, bytes) else data.encode()


def _sse(payload: Any) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


class FakeOpenAI:
    """The app (`fake.app`) plus what it saw (`fake.requests`, `fake.stream_cancelled`)."""

    def __init__(self, *, models: Sequence[str] = ("fake-model",), api_key: str | None = None):
        self.models = list(models)
        self.api_key = api_key
        self.stream_cancelled = threading.Event()
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._cancelled: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._release: asyncio.Event | None = None
        self._gate: asyncio.Condition | None = None
        self._permits: int | None = 0  # None: open
        self._held: list[RecordedRequest] = []
        self.app = self._build_app()

    # -- what the tests read ----------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def cancelled(self) -> list[str]:
        with self._lock:
            return list(self._cancelled)

    @property
    def held(self) -> list[RecordedRequest]:
        """The gated requests waiting at the gate now."""
        with self._lock:
            return list(self._held)

    def allow(self, count: int | None) -> None:
        """Let `count` more gated requests through (None: every one, from now on)."""
        loop = self._loop
        assert loop is not None, "the fake is not serving"
        asyncio.run_coroutine_threadsafe(self._add_permits(count), loop).result(timeout=30)

    async def _add_permits(self, count: int | None) -> None:
        assert self._gate is not None
        async with self._gate:
            if count is None or self._permits is None:
                self._permits = None
            else:
                self._permits += count
            self._gate.notify_all()

    def release(self) -> None:
        """End every hanging request (at teardown, so the server can stop promptly)."""
        loop, event = self._loop, self._release
        if loop is not None and event is not None and not loop.is_closed():
            with suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(event.set)
                loop.call_soon_threadsafe(lambda: loop.create_task(self._add_permits(None)))

    # -- the app ----------------------------------------------------------------------------

    def _build_app(self) -> Quart:
        app = Quart("fake_openai")

        @app.before_serving
        async def remember_loop() -> None:
            self._loop = asyncio.get_running_loop()
            self._release = asyncio.Event()
            self._gate = asyncio.Condition()

        @app.after_request
        async def upstream_headers(response: Response) -> Response:
            # What a real OpenAI answer carries: a request id the gateway must relay, and
            # headers it must not (a cookie, the upstream key's rate limits, hop-by-hop).
            response.headers["x-request-id"] = f"req_fake_{len(self.requests)}"
            response.headers["set-cookie"] = "upstream-session=abc; Path=/"
            response.headers["x-ratelimit-remaining-requests"] = "4999"
            response.headers["openai-project"] = "proj_upstream_account"
            return response

        @app.before_request
        async def record_and_authorize() -> Response | None:
            body = await _raw_body()
            recorded = RecordedRequest(
                method=request.method,
                path=request.path,
                headers=_lowered(request.headers.items()),
                body=body,
            )
            with self._lock:
                self._requests.append(recorded)
            g.recorded = recorded
            if (
                self.api_key is not None
                and request.headers.get("authorization") != f"Bearer {self.api_key}"
            ):
                return _error(
                    401,
                    "Incorrect API key provided.",
                    "invalid_request_error",
                    code="invalid_api_key",
                )
            return None

        @app.get("/v1/models")
        async def list_models() -> Response:
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models
            ]
            return Response(
                json.dumps({"object": "list", "data": data}), content_type="application/json"
            )

        @app.post("/v1/chat/completions")
        async def chat() -> Response:
            return await self._answer("chat")

        @app.post("/v1/completions")
        async def completions() -> Response:
            return await self._answer("completion")

        @app.post("/v1/embeddings")
        async def embeddings() -> Response:
            return await self._answer("embedding")

        add_apis(app, _raw_body)  # the Responses and Messages APIs, as vLLM serves them
        return app

    async def _hang(self) -> None:
        """Wait "forever": until the client leaves (cancelled) or teardown releases it."""
        assert self._release is not None
        await self._release.wait()

    def _record_cancel(self, model: str) -> None:
        with self._lock:
            self._cancelled.append(model)
        self.stream_cancelled.set()

    async def _through_gate(self) -> None:
        assert self._gate is not None
        recorded: RecordedRequest = g.recorded
        with self._lock:
            self._held.append(recorded)
        try:
            async with self._gate:
                await self._gate.wait_for(lambda: self._permits is None or self._permits > 0)
                if self._permits is not None:
                    self._permits -= 1
        finally:
            with self._lock:
                self._held.remove(recorded)

    async def _answer(self, kind: str) -> Response:
        try:
            body = json.loads(await _raw_body())
        except ValueError:
            return _error(400, "The body is not JSON.", "invalid_request_error")
        if not isinstance(body, dict):
            return _error(400, "The body is not a JSON object.", "invalid_request_error")
        model = str(body.get("model", ""))
        if model == "fail-500":
            return Response(
                f"Traceback: {SECRET_DETAIL} at db=10.0.0.7", status=500, content_type="text/plain"
            )
        if model == "bad-json":
            return Response(
                "<html>this is not json</html>", status=200, content_type="application/json"
            )
        if model == "exact-body":
            return Response(EXACT_BODY, status=200, content_type="application/json")
        if model == "reject-400":
            return _error(
                400,
                "temperature must be between 0 and 2",
                "invalid_request_error",
                param="temperature",
                code="invalid_value",
            )
        if model == "gated":
            await self._through_gate()
        if model == "slow":
            try:
                await self._hang()
            except asyncio.CancelledError:
                self._record_cancel(model)
                raise
        if body.get("stream") is True and kind != "embedding":
            response = Response(self._stream(kind, model, body), content_type="text/event-stream")
            response.timeout = None
            return response
        return Response(json.dumps(_whole(kind, model, body)), content_type="application/json")

    async def _stream(self, kind: str, model: str, body: dict[str, Any]) -> AsyncIterator[bytes]:
        words = _reply(body).split(" ")
        chunks = [
            _chunk(kind, model, w if i == 0 else f" {w}", first=i == 0) for i, w in enumerate(words)
        ]
        if model == "cut-stream":
            for chunk in chunks[:2]:
                yield _sse(chunk)
            return
        if model == "error-stream":
            yield _sse(chunks[0])
            yield _sse(
                {
                    "error": {
                        "message": "the model crashed",
                        "type": "server_error",
                        "param": None,
                        "code": None,
                    }
                }
            )
            return
        if model == "hang-stream":
            try:
                yield _sse(chunks[0])
                await self._hang()
            except (asyncio.CancelledError, GeneratorExit):
                # Cancelled while waiting, or closed at the yield: either way, gone.
                self._record_cancel(model)
                raise
            return
        for chunk in chunks:
            yield _sse(chunk)
        yield _sse(_chunk(kind, model, "", finish_reason="stop"))
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage") is True:
            # As OpenAI and vLLM do: one last chunk with no choices and the usage.
            usage_chunk = {
                **_chunk(kind, model, ""),
                "choices": [],
                "usage": _usage(body, _reply(body)),
            }
            yield _sse(usage_chunk)
        yield b"data: [DONE]\n\n"


def _reply(body: dict[str, Any]) -> str:
    said = _last_user_text(body) if "messages" in body else str(body.get("prompt", ""))
    return f"fake reply to: {said}" if said else "fake reply"


def _usage(body: dict[str, Any], reply: str) -> dict[str, int]:
    prompt = len(
        json.dumps(body.get("messages", body.get("prompt", body.get("input", "")))).split()
    )
    completion = len(reply.split())
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _whole(kind: str, model: str, body: dict[str, Any]) -> dict[str, Any]:
    created = int(time.time())
    if kind == "embedding":
        inputs = body.get("input")
        items = (
            inputs
            if isinstance(inputs, list) and all(isinstance(i, str) for i in inputs)
            else [inputs]
        )
        data = [
            {"object": "embedding", "index": i, "embedding": _vector(json.dumps(item))}
            for i, item in enumerate(items)
        ]
        tokens = sum(len(str(item).split()) for item in items)
        return {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    reply = _reply(body)
    if kind == "chat":
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": reply},
            "finish_reason": "stop",
            "logprobs": None,
        }
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": reply, "finish_reason": "stop", "logprobs": None}
        obj = "text_completion"
    return {
        "id": f"fake-{created}",
        "object": obj,
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": _usage(body, reply),
    }


def _chunk(
    kind: str, model: str, text: str, *, finish_reason: str | None = None, first: bool = False
) -> dict[str, Any]:
    if kind == "chat":
        delta: dict[str, Any] = {"content": text} if finish_reason is None else {}
        if first:
            delta["role"] = "assistant"
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}
        obj = "text_completion"
    return {"id": "fake-stream", "object": obj, "created": 0, "model": model, "choices": [choice]}


def _vector(key: str, dimensions: int = 8) -> list[float]:
    digest = hashlib.sha256(key.encode()).digest()
    values = [b / 255.0 - 0.5 for b in digest[:dimensions]]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return [v / norm for v in values]


@contextmanager
def running_fake_openai(
    models: Sequence[str] = ("fake-model",), api_key: str | None = None, *, port: int = 0
) -> Iterator[tuple[FakeOpenAI, str]]:
    """A `FakeOpenAI` served on a local port (a free one unless `port` names it); yields
    (fake, base URL without /v1)."""
    fake = FakeOpenAI(models=models, api_key=api_key)
    with serve_app(fake.app, port=port) as base_url:
        try:
            yield fake, base_url
        finally:
            fake.release()
