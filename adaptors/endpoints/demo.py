"""`DemoEndpoint`: a model that answers inside the gateway, so `serve` works out of the box.

It never touches the transport or the network: the answers come from
`adaptors.endpoints._demo_answers`.  It is configured like any seed adaptor, so the
demo fixtures double as a template for real ones.
"""

from __future__ import annotations

import json
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
}
_STREAMS = {"chat/completions": chat_stream, "completions": completion_stream}


def _unsupported(route: str | None, streaming: bool) -> DemoRefusal:
    what = f"streaming {route}" if streaming and route else (route or "this request")
    return DemoRefusal(f"The demo model cannot answer {what}.")


class DemoEndpoint(BaseEndpoint):
    """Answers chat, completions and embeddings locally and deterministically."""

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
            return SubmitTaskResponse(result=json.dumps(answer(body, self.model)))
        except DemoRefusal as refusal:
            return SubmitTaskResponse(error_message=refusal.body(), error_code=400)

    async def submit_streaming_task(
        self, data: dict[str, Any], request_log_id: str
    ) -> SubmitStreamingTaskResponse:
        body, route = unpack_task_data(data)
        try:
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
