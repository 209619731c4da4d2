"""The demo model's answers: OpenAI-shaped payloads computed locally, with no IO at all.

Everything but `id` and `created` is a function of the request, so tests (and users
trying the gateway out) get the same answer every time.  Each payload is exactly what the
official `openai` types describe; a stream is a plain async generator of SSE events,
one word per chunk, so it runs under any loop and needs no timer.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

__all__ = [
    "DEFAULT_DIMENSIONS",
    "DemoRefusal",
    "chat_completion",
    "chat_stream",
    "completion",
    "completion_stream",
    "embeddings",
    "unit_vector",
]

DEFAULT_DIMENSIONS = 16
MAX_DIMENSIONS = 4096
GREETING = "Hello from the demo model!"


class DemoRefusal(Exception):
    """A request the demo model cannot answer; `param` names the field to fix."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def body(self) -> str:
        """The OpenAI error body, so the core passes the 400 through unchanged."""
        return json.dumps(
            {
                "error": {
                    "message": self.message,
                    "type": "invalid_request_error",
                    "param": self.param,
                    "code": "invalid_value",
                }
            }
        )


def _words(text: str) -> list[str]:
    """Pieces that join back to `text`, each one word with its leading whitespace."""
    return re.findall(r"\s*\S+", text)


def _count(text: str) -> int:
    return len(text.split())


def _text_of(content: object) -> str:
    """A message's text, whether a string or a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        return " ".join(p for p in parts if isinstance(p, str))
    return ""


def _limit(body: Mapping[str, Any]) -> int | None:
    value = body.get("max_completion_tokens", body.get("max_tokens"))
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _reply(said: str, body: Mapping[str, Any]) -> tuple[str, str]:
    """The reply text and finish reason, cut to the request's token limit."""
    said = " ".join(said.split())
    text = f"{GREETING} You said: {said}" if said else f"{GREETING} You said nothing."
    pieces = _words(text)
    limit = _limit(body)
    if limit is not None and len(pieces) > limit:
        return "".join(pieces[:limit]), "length"
    return text, "stop"


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _model(body: Mapping[str, Any], default: str) -> str:
    model = body.get("model")
    return model if isinstance(model, str) and model else default


def _sse(payload: Mapping[str, Any]) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def _include_usage(body: Mapping[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


# -- chat ---------------------------------------------------------------------------------


def _chat_prompt(body: Mapping[str, Any]) -> tuple[str, int]:
    """The last user message's text, and the token count of all messages."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise DemoRefusal("'messages' must be a list of messages.", "messages")
    texts = [_text_of(m.get("content")) for m in messages if isinstance(m, dict)]
    said = next(
        (
            _text_of(m.get("content"))
            for m in reversed(messages)
            if isinstance(m, dict) and m.get("role") == "user"
        ),
        "",
    )
    return said, sum(_count(t) for t in texts)


def chat_completion(body: Mapping[str, Any], default_model: str) -> dict[str, Any]:
    said, prompt_tokens = _chat_prompt(body)
    text, finish = _reply(said, body)
    return {
        "id": f"chatcmpl-demo-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": _model(body, default_model),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish,
                "logprobs": None,
            }
        ],
        "usage": _usage(prompt_tokens, _count(text)),
    }


def chat_stream(body: Mapping[str, Any], default_model: str) -> AsyncIterator[bytes]:
    """The chat answer as SSE: role first, one word per chunk, finish, usage, [DONE].

    The request is checked here, before the generator exists, so a refusal is an
    error answer rather than a stream that fails on its first read.
    """
    said, prompt_tokens = _chat_prompt(body)
    text, finish = _reply(said, body)
    base = {
        "id": f"chatcmpl-demo-{uuid.uuid4().hex}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": _model(body, default_model),
    }
    usage = _usage(prompt_tokens, _count(text)) if _include_usage(body) else None
    return _chat_events(base, text, finish, usage)


async def _chat_events(
    base: dict[str, Any], text: str, finish: str, usage: dict[str, int] | None
) -> AsyncIterator[bytes]:
    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return _sse({**base, "choices": [choice]})

    yield chunk({"role": "assistant", "content": ""})
    for word in _words(text):
        yield chunk({"content": word})
    yield chunk({}, finish)
    if usage is not None:
        yield _sse({**base, "choices": [], "usage": usage})
    yield b"data: [DONE]\n\n"


# -- completions --------------------------------------------------------------------------


def _prompts(body: Mapping[str, Any]) -> list[tuple[str, int]]:
    """Each prompt's text (token arrays shown as numbers) and its token count."""
    prompt = body.get("prompt", "")
    if isinstance(prompt, str):
        return [(prompt, _count(prompt))]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return [(p, _count(p)) for p in prompt]
    if isinstance(prompt, list) and prompt and all(_is_int(t) for t in prompt):
        return [(" ".join(map(str, prompt)), len(prompt))]
    if (
        isinstance(prompt, list)
        and prompt
        and all(isinstance(p, list) and all(_is_int(t) for t in p) for p in prompt)
    ):
        return [(" ".join(map(str, p)), len(p)) for p in prompt]
    raise DemoRefusal(
        "'prompt' must be a string, a list of strings, a token array or a list of them.",
        "prompt",
    )


def completion(body: Mapping[str, Any], default_model: str) -> dict[str, Any]:
    prompts = _prompts(body)
    choices = []
    completion_tokens = 0
    for index, (said, _) in enumerate(prompts):
        text, finish = _reply(said, body)
        completion_tokens += _count(text)
        choices.append({"index": index, "text": text, "finish_reason": finish, "logprobs": None})
    return {
        "id": f"cmpl-demo-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": _model(body, default_model),
        "choices": choices,
        "usage": _usage(sum(n for _, n in prompts), completion_tokens),
    }


def completion_stream(body: Mapping[str, Any], default_model: str) -> AsyncIterator[bytes]:
    """The completion as SSE: per prompt one word per chunk then its finish; usage; [DONE]."""
    prompts = _prompts(body)
    base = {
        "id": f"cmpl-demo-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": _model(body, default_model),
    }
    replies = [_reply(said, body) for said, _ in prompts]
    usage = None
    if _include_usage(body):
        usage = _usage(sum(n for _, n in prompts), sum(_count(t) for t, _ in replies))
    return _completion_events(base, replies, usage)


async def _completion_events(
    base: dict[str, Any], replies: list[tuple[str, str]], usage: dict[str, int] | None
) -> AsyncIterator[bytes]:
    def chunk(index: int, text: str, finish_reason: str | None = None) -> bytes:
        choice = {"index": index, "text": text, "finish_reason": finish_reason, "logprobs": None}
        return _sse({**base, "choices": [choice]})

    for index, (text, finish) in enumerate(replies):
        for word in _words(text):
            yield chunk(index, word)
        yield chunk(index, "", finish)
    if usage is not None:
        yield _sse({**base, "choices": [], "usage": usage})
    yield b"data: [DONE]\n\n"


# -- embeddings ---------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def unit_vector(key: bytes, dimensions: int) -> list[float]:
    """A deterministic unit vector: sha256 of `key` stretched to `dimensions` floats."""
    stream = b""
    counter = 0
    while len(stream) < 4 * dimensions:
        stream += hashlib.sha256(key + counter.to_bytes(4, "big")).digest()
        counter += 1
    raw = struct.unpack(f">{dimensions}I", stream[: 4 * dimensions])
    values = [r / 0xFFFFFFFF * 2.0 - 1.0 for r in raw]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return [v / norm for v in values]


def _inputs(body: Mapping[str, Any]) -> list[tuple[bytes, int]]:
    """Each input's hashing key and token count."""
    value = body.get("input")
    if isinstance(value, str):
        return [(value.encode(), _count(value))]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return [(v.encode(), _count(v)) for v in value]
    if isinstance(value, list) and value and all(_is_int(v) for v in value):
        return [(json.dumps(value).encode(), len(value))]
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, list) and v and all(_is_int(t) for t in v) for v in value)
    ):
        return [(json.dumps(v).encode(), len(v)) for v in value]
    raise DemoRefusal(
        "'input' must be a string, a list of strings, a token array or a list of them.",
        "input",
    )


def _dimensions(body: Mapping[str, Any]) -> int:
    value = body.get("dimensions")
    if value is None:
        return DEFAULT_DIMENSIONS
    if not _is_int(value) or not 1 <= value <= MAX_DIMENSIONS:
        raise DemoRefusal(
            f"'dimensions' must be an integer from 1 to {MAX_DIMENSIONS}.", "dimensions"
        )
    return int(value)


def _encode(vector: list[float], encoding_format: object) -> list[float] | str:
    if encoding_format in (None, "float"):
        return vector
    if encoding_format == "base64":
        # As OpenAI does: little-endian float32, base64.
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    raise DemoRefusal("'encoding_format' must be 'float' or 'base64'.", "encoding_format")


def embeddings(body: Mapping[str, Any], default_model: str) -> dict[str, Any]:
    inputs = _inputs(body)
    dimensions = _dimensions(body)
    encoding_format = body.get("encoding_format")
    data = [
        {
            "object": "embedding",
            "index": index,
            "embedding": _encode(unit_vector(key, dimensions), encoding_format),
        }
        for index, (key, _) in enumerate(inputs)
    ]
    tokens = sum(n for _, n in inputs)
    return {
        "object": "list",
        "data": data,
        "model": _model(body, default_model),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
