"""The seed system's batch routes under /resource_server; the logic is
`frontends.seed_batches.SeedBatches`, over the same batches as /v1/batches."""

from __future__ import annotations

from quart import Blueprint, Response, current_app, request

from frontends.api_models import (
    SeedBatchCreate,
    SeedBatchCreated,
    SeedBatchesQuery,
    SeedBatchList,
    SeedBatchResult,
    SeedBatchStatus,
)
from frontends.batches import Batches
from frontends.seed_batches import SeedBatches
from frontends.web.batches_api import BATCHES_KEY
from frontends.web.convert import to_quart
from frontends.web.openapi import AUTH_ERRORS, Operation, documented

__all__ = ["seed_batches_api"]

SEED_BATCHES_KEY = "inference_gateway_seed_batches"

TAGS = ("seed batches",)

seed_batches_api = Blueprint("seed_batches_api", __name__, url_prefix="/resource_server")


def _seed() -> SeedBatches:
    """The app's seed routes, made once over the app's `Batches`."""
    made = current_app.extensions.get(SEED_BATCHES_KEY)
    if not isinstance(made, SeedBatches):
        batches: Batches = current_app.extensions[BATCHES_KEY]
        made = current_app.extensions[SEED_BATCHES_KEY] = SeedBatches(batches)
    return made


def _authorization() -> str | None:
    return request.headers.get("Authorization")


@seed_batches_api.post("/<cluster>/<framework>/v1/batches")
@documented(
    Operation(
        summary="Submit a batch the seed system's way (delegated, or from a /v1/files id).",
        body=SeedBatchCreate,
        answer=SeedBatchCreated,
        errors=(400, 403, 404, 429, *AUTH_ERRORS),
        tags=TAGS,
    )
)
async def create_batch(cluster: str, framework: str) -> Response:
    body = await request.get_data(cache=True, as_text=False, parse_form_data=False)
    return to_quart(await _seed().create(_authorization(), cluster, framework, body))


@seed_batches_api.get("/v1/batches")
@documented(
    Operation(
        summary="Your batches, in the seed system's shape.",
        query=SeedBatchesQuery,
        answer=SeedBatchList,
        errors=(400, *AUTH_ERRORS),
        tags=TAGS,
    )
)
async def list_batches() -> Response:
    return to_quart(await _seed().list_batches(_authorization(), request.args.get("status")))


@seed_batches_api.get("/v1/batches/<batch_id>")
@documented(
    Operation(
        summary="A batch's status.",
        answer=SeedBatchStatus,
        errors=(404, *AUTH_ERRORS),
        tags=TAGS,
    )
)
async def batch_status(batch_id: str) -> Response:
    return to_quart(await _seed().status(_authorization(), batch_id))


@seed_batches_api.get("/v1/batches/<batch_id>/result")
@documented(
    Operation(
        summary="A completed batch's result; a 400 until there is one.",
        answer=SeedBatchResult,
        errors=(400, 404, *AUTH_ERRORS),
        tags=TAGS,
    )
)
async def batch_result(batch_id: str) -> Response:
    return to_quart(await _seed().result(_authorization(), batch_id))
