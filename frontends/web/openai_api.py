"""The plain OpenAI routes: the model in the body alone picks the endpoint."""

from __future__ import annotations

from quart import Blueprint, Response, request

from core import OpenAIRoute
from frontends.api_models import ModelEntry, ModelList
from frontends.web.convert import current_gateway, current_listings, gateway_request, to_quart
from frontends.web.openapi import AUTH_ERRORS, INFERENCE_OPERATIONS, Operation, documented

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
    """Model names may hold `/` (meta-llama/Llama-3.1-8B-Instruct), hence `path:`."""
    listings = current_listings()
    return to_quart(await listings.retrieve_model(request.headers.get("Authorization"), model))


async def _forward(route: OpenAIRoute) -> Response:
    return to_quart(await current_gateway().handle(await gateway_request(route)))
