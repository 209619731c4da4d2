"""The plain OpenAI routes: the model in the body alone picks the endpoint."""

from __future__ import annotations

from quart import Blueprint, Response, request

from core import OpenAIRoute
from frontends.web.convert import current_gateway, current_listings, gateway_request, to_quart

__all__ = ["openai_api"]

openai_api = Blueprint("openai_api", __name__, url_prefix="/v1")


@openai_api.post("/chat/completions")
async def chat_completions() -> Response:
    return await _forward(OpenAIRoute.CHAT_COMPLETIONS)


@openai_api.post("/completions")
async def completions() -> Response:
    return await _forward(OpenAIRoute.COMPLETIONS)


@openai_api.post("/embeddings")
async def embeddings() -> Response:
    return await _forward(OpenAIRoute.EMBEDDINGS)


@openai_api.get("/models")
async def models() -> Response:
    return to_quart(await current_listings().list_models(request.headers.get("Authorization")))


@openai_api.get("/models/<path:model>")
async def retrieve_model(model: str) -> Response:
    """Model names may hold `/` (meta-llama/Llama-3.1-8B-Instruct), hence `path:`."""
    listings = current_listings()
    return to_quart(await listings.retrieve_model(request.headers.get("Authorization"), model))


async def _forward(route: OpenAIRoute) -> Response:
    return to_quart(await current_gateway().handle(await gateway_request(route)))
