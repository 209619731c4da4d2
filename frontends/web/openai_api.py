"""The plain OpenAI routes: the model in the body alone picks the endpoint."""

from __future__ import annotations

from quart import Blueprint, Response, request

from core import OpenAIRoute
from frontends.api_models import ModelEntry, ModelList
from frontends.stored_responses import stored_response
from frontends.web.convert import (
    current_gateway,
    current_listings,
    current_request_id,
    gateway_request,
    to_quart,
)
from frontends.web.openapi import (
    AUTH_ERRORS,
    INFERENCE_OPERATIONS,
    STORED_RESPONSE,
    Operation,
    documented,
)

__all__ = ["openai_api"]

openai_api = Blueprint("openai_api", __name__, url_prefix="/v1")


@openai_api.post("/chat/completions")
@documented(INFERENCE_OPERATIONS[OpenAIRoute.CHAT_COMPLETIONS])
async def chat_completions() -> Response:
    return await _forward(OpenAIRoute.CHAT_COMPLETIONS)


@openai_api.post("/completions")
@documented(INFERENCE_OPERATIONS[OpenAIRoute.COMPLETIONS])
async def completions() -> Response:
    return await _forward(OpenAIRoute.COMPLETIONS)


@openai_api.post("/embeddings")
@documented(INFERENCE_OPERATIONS[OpenAIRoute.EMBEDDINGS])
async def embeddings() -> Response:
    return await _forward(OpenAIRoute.EMBEDDINGS)


@openai_api.post("/responses")
@documented(INFERENCE_OPERATIONS[OpenAIRoute.RESPONSES])
async def responses() -> Response:
    """OpenAI's Responses API, relayed to backends that serve it (vLLM does)."""
    return await _forward(OpenAIRoute.RESPONSES)


@openai_api.get("/responses/<response_id>", defaults={"operation": "retrieve"})
@openai_api.delete("/responses/<response_id>", defaults={"operation": "delete"})
@openai_api.post("/responses/<response_id>/cancel", defaults={"operation": "cancel"})
@openai_api.get("/responses/<response_id>/input_items", defaults={"operation": "input_items"})
@documented(STORED_RESPONSE)
async def stored(response_id: str, operation: str) -> Response:
    """A stored response, from the endpoint that made it (only for the user it was for)."""
    answer = await stored_response(
        current_gateway(),
        current_listings(),
        request.headers.get("Authorization"),
        response_id,
        operation,
        request_id=current_request_id(),
    )
    return to_quart(answer)


@openai_api.post("/messages")
@documented(INFERENCE_OPERATIONS[OpenAIRoute.MESSAGES])
async def messages() -> Response:
    """Anthropic's Messages API (key as `x-api-key` or bearer), relayed likewise."""
    return await _forward(OpenAIRoute.MESSAGES)


@openai_api.get("/models")
@documented(Operation(summary="The models you may use.", answer=ModelList, tags=("openai",)))
async def models() -> Response:
    return to_quart(await current_listings().list_models(request.headers.get("Authorization")))


@openai_api.get("/models/<path:model>")
@documented(
    Operation(
        summary="One model you may use.",
        answer=ModelEntry,
        errors=(*AUTH_ERRORS, 404),
        tags=("openai",),
    )
)
async def retrieve_model(model: str) -> Response:
    """Model names may hold `/` (meta-llama/Llama-3.1-8B-Instruct), hence `path:`.  An
    alias answers with its model's entry, under the real id (`core.model_entry`)."""
    listings = current_listings()
    return to_quart(await listings.retrieve_model(request.headers.get("Authorization"), model))


async def _forward(route: OpenAIRoute) -> Response:
    return to_quart(await current_gateway().handle(await gateway_request(route)))
