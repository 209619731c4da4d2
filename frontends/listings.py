"""The read-only routes beside the driver: who am I, models, endpoints, jobs, health.

They answer from the catalog and the cluster adaptors, never through the request
machine, but they decide who the caller is exactly as the machine does (the core's
`credentials` then `caller`, on what `resolve_caller` heard from the provider), and every
error they give is the core's, in OpenAI's shape.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from adaptors.clusters.cluster import BaseCluster
from core import (
    JSON_HEADERS,
    BackendError,
    Catalog,
    ClientError,
    GatewayError,
    Identity,
    caller,
    cluster_for_jobs,
    cluster_models,
    credentials,
    endpoint_listing,
    error_response,
    filter_jobs,
    model_entry,
    model_list,
    public_clusters,
)
from frontends.caller import resolve_caller
from frontends.endpoint_health import HealthBook
from frontends.gateway import Gateway, GatewayResponse
from frontends.identity import IdentityProvider
from frontends.quota import QuotaCounters

__all__ = ["Listings"]

log = logging.getLogger("inference_gateway")


def _respond(error: GatewayError) -> GatewayResponse:
    response = error_response(error)
    return GatewayResponse(status=response.status, headers=response.headers, body=response.body)


def _json(payload: Any, status: int = 200) -> GatewayResponse:
    return GatewayResponse(status=status, headers=JSON_HEADERS, body=json.dumps(payload).encode())


class Listings:
    """The listing routes over one catalog, its cluster adaptors and an identity provider."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        clusters: Mapping[str, BaseCluster],
        identity: IdentityProvider,
        quota: QuotaCounters | None = None,
        health: HealthBook | None = None,
    ) -> None:
        self.catalog = catalog
        self._clusters = dict(clusters)
        self._identity = identity
        self._quota = quota
        # Cluster status is read through the health book's cache: one way for all.
        self._health = health or HealthBook(catalog, clusters)

    @classmethod
    def of(cls, gateway: Gateway) -> Listings:
        """The listings of what this gateway serves, to the callers it accepts."""
        return cls(
            catalog=gateway.catalog,
            clusters=gateway.clusters,
            identity=gateway.identity,
            quota=gateway.quota,
            health=gateway.health,
        )

    async def authenticate(self, authorization: str | None) -> Identity | GatewayResponse:
        """The caller of a listing route, or the 401/403/503 to answer them with: the
        core's one decision (`credentials`, then `caller`), as the request machine makes it."""
        token = credentials(authorization)
        if isinstance(token, ClientError):
            return _respond(token)
        identity = caller(await resolve_caller(self._identity, token))
        return _respond(identity) if isinstance(identity, GatewayError) else identity

    async def whoami(self, authorization: str | None) -> GatewayResponse:
        """The caller's identity as the gateway sees it; never the credentials."""
        identity = await self.authenticate(authorization)
        if isinstance(identity, GatewayResponse):
            return identity
        return _json(
            {
                "username": identity.username,
                "subject": identity.subject,
                "domain": identity.domain,
                "groups": sorted(identity.groups),
                "provider": identity.provider,
                "expires_at": identity.expires_at,
            }
        )

    async def list_models(self, authorization: str | None) -> GatewayResponse:
        identity = await self.authenticate(authorization)
        if isinstance(identity, GatewayResponse):
            return identity
        return _json(model_list(self.catalog, identity))

    async def retrieve_model(self, authorization: str | None, model: str) -> GatewayResponse:
        identity = await self.authenticate(authorization)
        if isinstance(identity, GatewayResponse):
            return identity
        entry = model_entry(self.catalog, identity, model)
        return _respond(entry) if isinstance(entry, ClientError) else _json(entry)

    async def list_endpoints(self, authorization: str | None) -> GatewayResponse:
        identity = await self.authenticate(authorization)
        if isinstance(identity, GatewayResponse):
            return identity
        return _json(endpoint_listing(self.catalog, identity))

    async def jobs(self, authorization: str | None, cluster_name: str) -> GatewayResponse:
        identity = await self.authenticate(authorization)
        if isinstance(identity, GatewayResponse):
            return identity
        cluster = cluster_for_jobs(self.catalog, identity, cluster_name)
        if isinstance(cluster, ClientError):
            return _respond(cluster)
        answer = await self._health.jobs(cluster.cluster_name)
        if answer is None or answer.jobs is None:
            status = answer.error_code if answer and answer.error_code in (503, 504) else 502
            return _respond(
                BackendError(
                    f"The status of cluster '{cluster_name}' could not be read.",
                    status=status,
                    code="cluster_status_unavailable",
                )
            )
        return _json(filter_jobs(self.catalog, identity, cluster, answer.jobs.model_dump()))

    async def cluster_models(
        self, authorization: str | None, cluster_name: str, model_id: str | None
    ) -> GatewayResponse:
        """The models of a cluster the caller may use, with their public metadata."""
        identity = await self.authenticate(authorization)
        if isinstance(identity, GatewayResponse):
            return identity
        models = cluster_models(self.catalog, identity, cluster_name, model_id)
        return _respond(models) if isinstance(models, ClientError) else _json(models)

    async def public_status(self) -> GatewayResponse:
        """`{cluster: up}` for the clusters open to everyone, with no key: true when the
        cluster's status service answered its last reading with a job report (the
        seed's "up"; its "down" is a cluster under maintenance, which here is one whose
        status cannot be read).  From the health book's cache, never a read per call."""
        names = [c.cluster_name for c in public_clusters(self.catalog)]
        return _json(await self._health.up(names))

    def health(self) -> GatewayResponse:
        """Up; `clusters`: per cluster its status report, per endpoint its breaker,
        outstanding calls and model state; and, when quotas apply, what counts them
        (`quota`): "in-process", "redis", or "redis-unreachable, using in-process"
        (requests are served in every case); and how cluster status is shared
        (`cluster_status`: "redis", "folder", or "...-unreachable, fetching locally"),
        when it is."""
        payload: dict[str, Any] = {"status": "ok", "clusters": self._health.report()}
        if self._quota is not None:
            payload["quota"] = str(self._quota.status()["backend"])
        sharing = self._health.sharing()
        if sharing is not None:
            payload["cluster_status"] = sharing
        return _json(payload)
