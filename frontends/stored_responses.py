"""The Responses API's calls on a stored response (`GET` and `DELETE /v1/responses/{id}`,
`POST .../cancel`, `GET .../input_items`), relayed to the endpoint whose backend holds it.

Only the user the response was made for can find it: to anyone else, as for an id the
gateway never saw, it does not exist (404).  The caller must still pass both levels of
rules for that endpoint, and the endpoint's adaptor must know how (the Direct API and
demo adaptors do: `stored_response(response_id, operation, request_id)`).  The answer is
shaped as the machine shapes any backend answer: the backend's bytes on success, its
failures as the gateway's own errors, never its URL or key.
"""

from __future__ import annotations

import logging
import uuid

import anyio

from core import (
    Allowed,
    ClientError,
    OpenAIRoute,
    authorize,
    error_response,
    redact,
    response_not_found,
    shape_failure,
    shape_result,
)
from frontends.gateway import Gateway, GatewayResponse
from frontends.listings import Listings

__all__ = ["OPERATIONS", "stored_response"]

# What may be asked of a stored response (the Direct API adaptor's STORED_OPERATIONS).
OPERATIONS = frozenset({"retrieve", "cancel", "delete", "input_items"})

log = logging.getLogger("inference_gateway")


def _answer(error: ClientError) -> GatewayResponse:
    response = error_response(error)
    return GatewayResponse(status=response.status, headers=response.headers, body=response.body)


async def stored_response(
    gateway: Gateway,
    listings: Listings,
    authorization: str | None,
    response_id: str,
    operation: str = "retrieve",
    *,
    request_id: str | None = None,
) -> GatewayResponse:
    if operation not in OPERATIONS:
        raise ValueError(f"unknown operation on a stored response: {operation!r}")
    identity = await listings.authenticate(authorization)
    if isinstance(identity, GatewayResponse):
        return identity
    slug = await gateway.responses.endpoint_for(response_id, identity.username)
    endpoint = None if slug is None else gateway.catalog.endpoint(slug)
    if endpoint is None:
        return _answer(response_not_found(response_id))
    where = gateway.catalog.cluster_of(endpoint)
    allowed = isinstance(authorize(identity, where, endpoint), Allowed)
    adaptor = gateway.adaptor(endpoint.endpoint_slug)
    fetch = getattr(adaptor, "stored_response", None)
    if not allowed or not where.accepts(OpenAIRoute.RESPONSES) or fetch is None:
        return _answer(response_not_found(response_id))
    try:
        answer = await fetch(response_id, operation, request_id or uuid.uuid4().hex)
    except anyio.get_cancelled_exc_class():
        raise
    except Exception as exc:
        log.warning("adaptor %s raised", endpoint.endpoint_slug, exc_info=True)
        shaped = shape_failure(endpoint, 502, redact(f"{type(exc).__name__}: {exc}"))
    else:
        body = answer.body() if hasattr(answer, "body") else None
        shaped = shape_result(
            endpoint,
            result=body if body is not None else getattr(answer, "result", None),
            error_message=getattr(answer, "error_message", None),
            error_code=getattr(answer, "error_code", None),
            headers=tuple(
                (str(k), str(v)) for k, v in (getattr(answer, "headers", None) or {}).items()
            ),
        )
    response = shaped.response
    if operation == "delete" and response.status == 200:
        await gateway.responses.forget(response_id)
    return GatewayResponse(status=response.status, headers=response.headers, body=response.body)
