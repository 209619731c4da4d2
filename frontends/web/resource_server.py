"""The ALCF-compatible routes: cluster and framework in the URL, as the seed gateway has them."""

from __future__ import annotations

from quart import Blueprint, Response, request
from werkzeug.exceptions import NotFound

from core import OpenAIRoute
from frontends.web.convert import current_gateway, current_listings, gateway_request, to_quart

__all__ = ["resource_server"]

resource_server = Blueprint("resource_server", __name__, url_prefix="/resource_server")


@resource_server.post("/<cluster>/<framework>/v1/<path:operation>")
async def inference(cluster: str, framework: str, operation: str) -> Response:
    route = OpenAIRoute.from_path(operation)
    if route is None:
        raise NotFound()
    answer = await current_gateway().handle(
        await gateway_request(route, cluster=cluster, framework=framework)
    )
    return to_quart(answer)


@resource_server.get("/list-endpoints")
async def list_endpoints() -> Response:
    return to_quart(await current_listings().list_endpoints(request.headers.get("Authorization")))


@resource_server.get("/<cluster>/jobs")
async def jobs(cluster: str) -> Response:
    return to_quart(await current_listings().jobs(request.headers.get("Authorization"), cluster))


@resource_server.get("/whoami")
async def whoami() -> Response:
    return to_quart(await current_listings().whoami(request.headers.get("Authorization")))


@resource_server.get("/health")
async def health() -> Response:
    return to_quart(current_listings().health())
