"""The Responses API and the Messages API on the fake backend, as vLLM serves them.

Registered on `FakeOpenAI`'s app (`add_apis`): `POST /v1/responses` (stored, so
`previous_response_id`, and `GET`, `DELETE`, `.../cancel` and `.../input_items` on
`/v1/responses/{id}` work, an unknown id being a 404),
and `POST /v1/messages` (errors in Anthropic's shape).  Each answers whole or streamed,
with named SSE events, written here independently of the gateway's demo model so the
two can be compared with the official clients.  The reply is "fake reply to: <last
user text>"; usage counts words (input: the JSON of the prompt fields split on spaces).

Models with special behaviour: `reject-400` (the API's own 400), `fail-500` (a 500
holding `SECRET_DETAIL`), `cut-stream` (the stream stops after two events).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from quart import Quart, Response

__all__ = ["add_apis", "fake_reply"]

SECRET_DETAIL = "internal secret detail"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _last_user(items: Any) -> str:
    if isinstance(items, str):
        return items
    for item in reversed(items if isinstance(items, list) else []):
        if isinstance(item, dict) and item.get("role") == "user":
            return _text(item.get("content"))
    return ""


def fake_reply(said: str) -> str:
    return f"fake reply to: {said}" if said else "fake reply"


def _words(*values: Any) -> int:
    return sum(len(json.dumps(v).split()) for v in values if v is not None)


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, content_type="application/json")


def _events(events: Iterator[tuple[str, dict[str, Any]]], cut: bool) -> Response:
    async def body() -> AsyncIterator[bytes]:
        for index, (kind, data) in enumerate(events):
            if cut and index == 2:
                return
            yield f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()

    response = Response(body(), content_type="text/event-stream")
    response.timeout = None
    return response


def _openai_error(status: int, message: str, param: str | None, code: str | None) -> Response:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return _json({"error": error}, status)


def _anthropic_error(status: int, kind: str, message: str) -> Response:
    return _json({"type": "error", "error": {"type": kind, "message": message}}, status)


class _Responses:
    """The Responses API with its store (ids made in order: resp_fake_1, ...)."""

    def __init__(self) -> None:
        self.stored: dict[str, dict[str, Any]] = {}
        self.inputs: dict[str, str] = {}  # what the user said last, per stored response
        self._ids = itertools.count(1)

    def make(self, body: dict[str, Any]) -> dict[str, Any]:
        reply = fake_reply(_last_user(body.get("input")))
        prompt = _words(body.get("input"), body.get("instructions"))
        output = len(reply.split())
        answer = {
            "id": f"resp_fake_{next(self._ids)}",
            "object": "response",
            "created_at": 1_700_000_000,
            "status": "completed",
            "model": body.get("model"),
            "previous_response_id": body.get("previous_response_id"),
            "output": [
                {
                    "type": "message",
                    "id": "msg_fake",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": reply, "annotations": []}],
                }
            ],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": {
                "input_tokens": prompt,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": output,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": prompt + output,
            },
        }
        if body.get("store") is not False:
            self.stored[answer["id"]] = answer
            self.inputs[answer["id"]] = _last_user(body.get("input"))
        return answer

    def events(self, answer: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        sequence = itertools.count()
        started = {**answer, "status": "in_progress", "output": [], "usage": None}
        yield "response.created", {"response": started, "sequence_number": next(sequence)}
        text = answer["output"][0]["content"][0]["text"]
        where = {"item_id": "msg_fake", "output_index": 0, "content_index": 0}
        for i, word in enumerate(text.split(" ")):
            delta = word if i == 0 else f" {word}"
            yield (
                "response.output_text.delta",
                {**where, "delta": delta, "logprobs": [], "sequence_number": next(sequence)},
            )
        yield (
            "response.output_text.done",
            {**where, "text": text, "logprobs": [], "sequence_number": next(sequence)},
        )
        yield "response.completed", {"response": answer, "sequence_number": next(sequence)}


def _message(body: dict[str, Any]) -> dict[str, Any]:
    reply = fake_reply(_last_user(body.get("messages")))
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": body.get("model"),
        "content": [{"type": "text", "text": reply}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": _words(body.get("messages"), body.get("system")),
            "output_tokens": len(reply.split()),
        },
    }


def _message_events(answer: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    usage = answer["usage"]
    start = {**answer, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    yield "message_start", {"message": start}
    yield "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}
    text = answer["content"][0]["text"]
    for i, word in enumerate(text.split(" ")):
        delta = {"type": "text_delta", "text": word if i == 0 else f" {word}"}
        yield "content_block_delta", {"index": 0, "delta": delta}
    yield "content_block_stop", {"index": 0}
    yield (
        "message_delta",
        {
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": usage["output_tokens"]},
        },
    )
    yield "message_stop", {}


def add_apis(app: Quart, raw_body: Callable[[], Any]) -> None:
    """Serve both APIs on `app` (`raw_body()` reads the request's bytes)."""
    responses = _Responses()

    @app.post("/v1/responses")
    async def create_response() -> Response:
        body = json.loads(await raw_body())
        model = body.get("model")
        if model == "reject-400":
            return _openai_error(400, "temperature must be between 0 and 2", "temperature", None)
        if model == "fail-500":
            return Response(f"Traceback: {SECRET_DETAIL}", status=500)
        previous = body.get("previous_response_id")
        if previous is not None and previous not in responses.stored:
            return _openai_error(
                404,
                f"Previous response with id '{previous}' not found.",
                "previous_response_id",
                "previous_response_not_found",
            )
        answer = responses.make(body)
        if body.get("stream") is True:
            return _events(responses.events(answer), cut=model == "cut-stream")
        return _json(answer)

    @app.get("/v1/responses/<response_id>")
    async def get_response(response_id: str) -> Response:
        stored = responses.stored.get(response_id)
        if stored is None:
            return _openai_error(404, f"Response with id '{response_id}' not found.", None, None)
        return _json(stored)

    @app.delete("/v1/responses/<response_id>")
    async def delete_response(response_id: str) -> Response:
        if responses.stored.pop(response_id, None) is None:
            return _openai_error(404, f"Response with id '{response_id}' not found.", None, None)
        return _json({"id": response_id, "object": "response", "deleted": True})

    @app.post("/v1/responses/<response_id>/cancel")
    async def cancel_response(response_id: str) -> Response:
        stored = responses.stored.get(response_id)
        if stored is None:
            return _openai_error(404, f"Response with id '{response_id}' not found.", None, None)
        return _json({**stored, "status": "cancelled"})

    @app.get("/v1/responses/<response_id>/input_items")
    async def input_items(response_id: str) -> Response:
        stored = responses.stored.get(response_id)
        if stored is None:
            return _openai_error(404, f"Response with id '{response_id}' not found.", None, None)
        item = {
            "id": "msg_input",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_text", "text": responses.inputs[response_id]}],
        }
        return _json(
            {
                "object": "list",
                "data": [item],
                "first_id": "msg_input",
                "last_id": "msg_input",
                "has_more": False,
            }
        )

    @app.post("/v1/messages")
    async def create_message() -> Response:
        body = json.loads(await raw_body())
        model = body.get("model")
        if model == "reject-400":
            return _anthropic_error(400, "invalid_request_error", "temperature: out of range")
        if model == "fail-500":
            return Response(f"Traceback: {SECRET_DETAIL}", status=500)
        answer = _message(body)
        if body.get("stream") is True:
            return _events(_message_events(answer), cut=model == "cut-stream")
        return _json(answer)
