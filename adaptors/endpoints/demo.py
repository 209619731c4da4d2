"""`DemoEndpoint`: a model that answers inside the gateway, so `serve` works out of the box.

It never touches the transport or the network: the answers come from
`adaptors.endpoints._demo_answers`.  It is configured like any seed adaptor, so the
demo fixtures double as a template for real ones.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from adaptors.endpoints._demo_answers import (
    DemoRefusal,
    chat_completion,
    chat_stream,
    completion,
    completion_stream,
    embeddings,
)
from adaptors.endpoints._demo_apis import message, message_stream, response, streamed_response
from adaptors.endpoints.endpoint import (
    BaseEndpoint,
    StreamingResponse,
    SubmitStreamingTaskResponse,
    SubmitTaskResponse,
    unpack_task_data,
)

__all__ = ["DemoEndpoint"]

_ANSWERS: dict[str, Callable[[Mapping[str, Any], str], dict[str, Any]]] = {
    "chat/completions": chat_completion,
    "completions": completion,
    "embeddings": embeddings,
    "responses": response,
    "messages": message,
}
_STREAMS = {
    "chat/completions": chat_stream,
    "completions": completion_stream,
    "messages": message_stream,
}
# How many of its Responses API answers the demo keeps for `GET /v1/responses/{id}`.
_STORED = 256


def _unsupported(route: str | None, streaming: bool) -> DemoRefusal:
    what = f"streaming {route}" if streaming and route else (route or "this request")
    return DemoRefusal(f"The demo model cannot answer {what}.")


class DemoEndpoint(BaseEndpoint):
    """Answers chat, completions, embeddings, the Responses API and the Messages API
    locally and deterministically; keeps its last Responses answers, as a backend that
    stores them would."""

    def __init__(
        self,
        id: str,
        endpoint_slug: str,
        cluster: str,
        framework: str,
        model: str,
        endpoint_adapter: str,
        allowed_globus_groups: str | Iterable[str] | None = None,
        allowed_domains: str | Iterable[str] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.config = dict(config or {})
        self._stored: OrderedDict[str, str] = OrderedDict()
        super().__init__(
            id,
            endpoint_slug,
            cluster,
            framework,
            model,
            endpoint_adapter,
            allowed_globus_groups,
            allowed_domains,
        )

    async def submit_task(self, data: dict[str, Any]) -> SubmitTaskResponse:
        body, route = unpack_task_data(data)
        try:
            answer = _ANSWERS.get(route or "")
            if answer is None:
                raise _unsupported(route, streaming=False)
            payload = answer(body, self.model)
            if route == "responses":
                self._store(payload, body)
            return SubmitTaskResponse(result=json.dumps(payload))
        except DemoRefusal as refusal:
            return SubmitTaskResponse(error_message=refusal.body(), error_code=400)

    async def submit_streaming_task(
        self, data: dict[str, Any], request_log_id: str
    ) -> SubmitStreamingTaskResponse:
        body, route = unpack_task_data(data)
        try:
            if route == "responses":
                final, content = streamed_response(body, self.model)
                self._store(final, body)
            else:
                stream = _STREAMS.get(route or "")
                if stream is None:
                    raise _unsupported(route, streaming=True)
                content = stream(body, self.model)
        except DemoRefusal as refusal:
            return SubmitStreamingTaskResponse(error_message=refusal.body(), error_code=400)
        return SubmitStreamingTaskResponse(
            response=StreamingResponse(
                content=content, headers={"content-type": "text/event-stream"}
            ),
            task_id=request_log_id,
        )

    def _store(self, payload: Mapping[str, Any], body: Mapping[str, Any]) -> None:
        if body.get("store") is False:  # the client asked that it not be kept
            return
        self._stored[str(payload["id"])] = json.dumps(payload)
        while len(self._stored) > _STORED:
            self._stored.popitem(last=False)

    async def stored_response(
        self, response_id: str, operation: str, request_id: str
    ) -> SubmitTaskResponse:
        """A Responses API answer this demo gave, retrieved or deleted (it has nothing
        left to cancel, and keeps no input items)."""
        stored = self._stored.get(response_id)
        if stored is None:
            refusal = DemoRefusal(f"Response with id '{response_id}' not found.")
            return SubmitTaskResponse(error_message=refusal.body(), error_code=404)
        if operation == "retrieve":
            return SubmitTaskResponse(result=stored)
        if operation == "delete":
            del self._stored[response_id]
            deleted = {"id": response_id, "object": "response", "deleted": True}
            return SubmitTaskResponse(result=json.dumps(deleted))
        refusal = DemoRefusal(f"The demo model cannot answer {operation} on a response.")
        return SubmitTaskResponse(error_message=refusal.body(), error_code=400)
