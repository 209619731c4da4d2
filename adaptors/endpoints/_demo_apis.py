"""The demo model's Responses API and Messages API answers, in each API's wire shape.

Same reply as the chat answer (`_demo_answers`), dressed as OpenAI's `response` object
or Anthropic's `message`, whole or streamed.  Streams carry named events (`event:
response.output_text.delta`, `event: content_block_delta`, ...) with the same `type` in
their data, as the real APIs send them, so the official clients read them unchanged.
No IO, no clock but `created_at`; ids are random, everything else follows the request.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from adaptors.endpoints._demo_answers import DemoRefusal, _count, _model, _reply, _text_of, _words

__all__ = ["message", "message_stream", "response", "response_stream", "streamed_response"]


def _event(kind: str, payload: Mapping[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **payload})}\n\n".encode()


async def _sent(events: Iterator[bytes]) -> AsyncIterator[bytes]:
    for event in events:
        yield event


# -- the Responses API ----------------------------------------------------------------------


def _response_prompt(body: Mapping[str, Any]) -> tuple[str, int]:
    """What the user said last, and the token count of the instructions and input."""
    value = body.get("input")
    instructions = body.get("instructions")
    extra = _count(instructions) if isinstance(instructions, str) else 0
    if isinstance(value, str):
        return value, _count(value) + extra
    if not isinstance(value, list):
        raise DemoRefusal("'input' must be a string or a list of input items.", "input")
    items = [i for i in value if isinstance(i, dict)]
    texts = [_text_of(i.get("content")) for i in items]
    said = next(
        (_text_of(i.get("content")) for i in reversed(items) if i.get("role") == "user"), ""
    )
    return said, sum(_count(t) for t in texts) + extra


def _response_object(body: Mapping[str, Any], default_model: str, ident: str) -> dict[str, Any]:
    """The `response` object with no output yet (as `response.created` shows it)."""
    limit = body.get("max_output_tokens")
    return {
        "id": ident,
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "model": _model(body, default_model),
        "output": [],
        "instructions": body.get("instructions"),
        "max_output_tokens": limit,
        "previous_response_id": body.get("previous_response_id"),
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "temperature": 1.0,
        "top_p": 1.0,
        "text": {"format": {"type": "text"}},
        "metadata": {},
        "error": None,
        "incomplete_details": None,
        "usage": None,
    }


def _response_parts(body: Mapping[str, Any]) -> tuple[str, str, int]:
    said, prompt_tokens = _response_prompt(body)
    text, finish = _reply(said, {"max_tokens": body.get("max_output_tokens")})
    return text, finish, prompt_tokens


def _finished(
    base: dict[str, Any], message_id: str, text: str, finish: str, prompt_tokens: int
) -> dict[str, Any]:
    output_tokens = _count(text)
    return {
        **base,
        "status": "completed" if finish == "stop" else "incomplete",
        "incomplete_details": None if finish == "stop" else {"reason": "max_output_tokens"},
        "output": [_message_item(message_id, text, "completed")],
        "usage": {
            "input_tokens": prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt_tokens + output_tokens,
        },
    }


def _message_item(message_id: str, text: str | None, status: str) -> dict[str, Any]:
    content = [] if text is None else [_text_part(text)]
    return {
        "type": "message",
        "id": message_id,
        "status": status,
        "role": "assistant",
        "content": content,
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": []}


def response(body: Mapping[str, Any], default_model: str) -> dict[str, Any]:
    text, finish, prompt_tokens = _response_parts(body)
    ident, message_id = f"resp_demo_{uuid.uuid4().hex}", f"msg_demo_{uuid.uuid4().hex}"
    base = _response_object(body, default_model, ident)
    return _finished(base, message_id, text, finish, prompt_tokens)


def response_stream(body: Mapping[str, Any], default_model: str) -> AsyncIterator[bytes]:
    """The answer as Responses API events: created, in progress, the message item and its
    text part opened, one word per `response.output_text.delta`, everything closed in
    turn, then `response.completed` (or `incomplete`) with the usage."""
    return streamed_response(body, default_model)[1]


def streamed_response(
    body: Mapping[str, Any], default_model: str
) -> tuple[dict[str, Any], AsyncIterator[bytes]]:
    """The stream of `response_stream`, and the finished `response` it ends with."""
    text, finish, prompt_tokens = _response_parts(body)
    ident, message_id = f"resp_demo_{uuid.uuid4().hex}", f"msg_demo_{uuid.uuid4().hex}"
    base = _response_object(body, default_model, ident)
    done = _finished(base, message_id, text, finish, prompt_tokens)
    return done, _sent(_response_events(base, done, message_id, text))


def _response_events(
    base: dict[str, Any], done: dict[str, Any], message_id: str, text: str
) -> Iterator[bytes]:
    sequence = iter(range(1 << 30))

    def event(kind: str, **payload: Any) -> bytes:
        return _event(kind, {**payload, "sequence_number": next(sequence)})

    where = {"item_id": message_id, "output_index": 0, "content_index": 0}
    yield event("response.created", response=base)
    yield event("response.in_progress", response=base)
    yield event(
        "response.output_item.added",
        output_index=0,
        item=_message_item(message_id, None, "in_progress"),
    )
    yield event("response.content_part.added", **where, part=_text_part(""))
    for word in _words(text):
        yield event("response.output_text.delta", **where, delta=word, logprobs=[])
    yield event("response.output_text.done", **where, text=text, logprobs=[])
    yield event("response.content_part.done", **where, part=_text_part(text))
    yield event(
        "response.output_item.done",
        output_index=0,
        item=_message_item(message_id, text, "completed"),
    )
    kind = "response.completed" if done["status"] == "completed" else "response.incomplete"
    yield event(kind, response=done)


# -- the Messages API -----------------------------------------------------------------------


def _message_prompt(body: Mapping[str, Any]) -> tuple[str, int]:
    """The last user message's text, and the token count of the system prompt and all
    messages."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise DemoRefusal("'messages' must be a list of messages.", "messages")
    system = _text_of(body.get("system"))
    items = [m for m in messages if isinstance(m, dict)]
    said = next(
        (_text_of(m.get("content")) for m in reversed(items) if m.get("role") == "user"), ""
    )
    return said, _count(system) + sum(_count(_text_of(m.get("content"))) for m in items)


def _stop_reason(finish: str) -> str:
    return "end_turn" if finish == "stop" else "max_tokens"


def _message_base(body: Mapping[str, Any], default_model: str) -> dict[str, Any]:
    return {
        "id": f"msg_demo_{uuid.uuid4().hex}",
        "type": "message",
        "role": "assistant",
        "model": _model(body, default_model),
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
    }


def message(body: Mapping[str, Any], default_model: str) -> dict[str, Any]:
    said, prompt_tokens = _message_prompt(body)
    text, finish = _reply(said, {"max_tokens": body.get("max_tokens")})
    return {
        **_message_base(body, default_model),
        "content": [{"type": "text", "text": text}],
        "stop_reason": _stop_reason(finish),
        "usage": {"input_tokens": prompt_tokens, "output_tokens": _count(text)},
    }


def message_stream(body: Mapping[str, Any], default_model: str) -> AsyncIterator[bytes]:
    """The answer as Messages API events: `message_start` (with the input's usage), one
    text block opened, one word per `content_block_delta`, closed, `message_delta` with
    the stop reason and the output's usage, `message_stop`."""
    said, prompt_tokens = _message_prompt(body)
    text, finish = _reply(said, {"max_tokens": body.get("max_tokens")})
    base = _message_base(body, default_model)
    return _sent(_message_events(base, text, finish, prompt_tokens))


def _message_events(
    base: dict[str, Any], text: str, finish: str, prompt_tokens: int
) -> Iterator[bytes]:
    start = {**base, "usage": {"input_tokens": prompt_tokens, "output_tokens": 1}}
    yield _event("message_start", {"message": start})
    yield _event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
    yield _event("ping", {})
    for word in _words(text):
        yield _event(
            "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": word}}
        )
    yield _event("content_block_stop", {"index": 0})
    yield _event(
        "message_delta",
        {
            "delta": {"stop_reason": _stop_reason(finish), "stop_sequence": None},
            "usage": {"output_tokens": _count(text)},
        },
    )
    yield _event("message_stop", {})
