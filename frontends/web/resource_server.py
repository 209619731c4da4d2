"""The ALCF-compatible routes: cluster and framework in the URL, as the seed gateway has them."""

from __future__ import annotations

import json

from quart import Blueprint, Response, request
from werkzeug.exceptions import NotFound

from core import BackendError, OpenAIRoute, error_response
from frontends.api_models import (
    ClusterModels,
    ClusterModelsQuery,
    EndpointListing,
    Health,
    JobsAnswer,
    PublicStatus,
    UsageAnswer,
    UsageQuery,
    Whoami,
)
from frontends.gateway import GatewayResponse
from frontends.usage import usage_answer
from frontends.web.convert import (
    current_gateway,
    current_listings,
    current_operators,
    current_request_log,
    gateway_request,
    to_quart,
)
from frontends.web.openapi import AUTH_ERRORS, INFERENCE_OPERATIONS, Operation, documented

__all__ = ["resource_server"]

resource_server = Blueprint("resource_server", __name__, url_prefix="/resource_server")


@resource_server.post("/<cluster>/<framework>/v1/<path:operation>")
@documented(per_value={route.value: INFERENCE_OPERATIONS[route] for route in OpenAIRoute})
async def inference(cluster: str, framework: str, operation: str) -> Response:
    route = OpenAIRoute.from_path(operation)
    if route is None:
        raise NotFound()
    answer = await current_gateway().handle(
        await gateway_request(route, cluster=cluster, framework=framework)
    )
    return to_quart(answer)


@resource_server.get("/list-endpoints")
@documented(Operation(summary="The endpoints you may use.", answer=EndpointListing))
async def list_endpoints() -> Response:
    return to_quart(await current_listings().list_endpoints(request.headers.get("Authorization")))


@resource_server.get("/<cluster>/jobs")
@documented(
    Operation(
        summary="Which models run on a cluster, cut to those you may use.",
        answer=JobsAnswer,
        errors=(*AUTH_ERRORS, 403, 404, 502, 504),
    )
)
async def jobs(cluster: str) -> Response:
    return to_quart(await current_listings().jobs(request.headers.get("Authorization"), cluster))


@resource_server.get("/<cluster>/models")
@documented(
    Operation(
        summary="The models of a cluster you may use, with their public metadata.",
        query=ClusterModelsQuery,
        answer=ClusterModels,
        errors=(*AUTH_ERRORS, 403, 404),
    )
)
async def cluster_models(cluster: str) -> Response:
    listings = current_listings()
    authorization = request.headers.get("Authorization")
    model_id = request.args.get("model_id")
    return to_quart(await listings.cluster_models(authorization, cluster, model_id))


@resource_server.get("/status")
@documented(
    Operation(
        summary="Which clusters open to everyone are up.",
        auth="none",
        answer=PublicStatus,
        errors=(),
        description=(
            "No key needed.  For each cluster that restricts its users by neither group "
            "nor domain: true when its status service answered the gateway's last "
            "reading with a job report, false when that reading failed.  Answered from "
            "the gateway's cached cluster status."
        ),
    )
)
async def public_status() -> Response:
    return to_quart(await current_listings().public_status())


@resource_server.get("/whoami")
@documented(Operation(summary="Who the gateway thinks you are.", answer=Whoami))
async def whoami() -> Response:
    return to_quart(await current_listings().whoami(request.headers.get("Authorization")))


@resource_server.get("/usage")
@documented(
    Operation(
        summary="Requests and tokens from the request log.",
        query=UsageQuery,
        answer=UsageAnswer,
        errors=(400, *AUTH_ERRORS, 403),
    )
)
async def usage() -> Response:
    """The caller's usage from the request log (see `frontends.usage`)."""
    listings = current_listings()
    identity = await listings.authenticate(request.headers.get("Authorization"))
    if isinstance(identity, GatewayResponse):
        return to_quart(identity)
    request_log = current_request_log()
    if request_log is None:
        refusal = BackendError(
            "This gateway keeps no request log.", status=503, code="request_log_disabled"
        )
        return to_quart(error_response(refusal))
    params = dict(request.args.items())
    return to_quart(await usage_answer(request_log.store, identity, params, current_operators()))


@resource_server.get("/health")
@documented(Operation(summary="Liveness.", auth="none", answer=Health, errors=()))
async def health() -> Response:
    answer = current_listings().health()
    request_log = current_request_log()
    if request_log is None:
        return to_quart(answer)
    payload = {**json.loads(answer.body), "request_log": request_log.status()}
    body = json.dumps(payload).encode()
    return to_quart(GatewayResponse(status=answer.status, headers=answer.headers, body=body))
