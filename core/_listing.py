"""What each listing route shows a caller: only what that caller may use."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core._catalog import Catalog
from core._errors import ClientError
from core._limits import clip
from core._records import ClusterRecord, Identity
from core._selection import usable_cluster, usable_endpoints

__all__ = ["cluster_for_jobs", "endpoint_listing", "filter_jobs", "model_entry", "model_list"]

_JOB_LISTS = (
    "running",
    "queued",
    "stopped",
    "others",
    "private_batch_running",
    "private_batch_queued",
)


def model_list(catalog: Catalog, identity: Identity) -> dict[str, Any]:
    """`GET /v1/models` in OpenAI's list shape, one entry per model name."""
    seen: dict[str, str] = {}
    for endpoint in usable_endpoints(catalog, identity):
        seen.setdefault(endpoint.model, endpoint.cluster)
    return {
        "object": "list",
        "data": [
            {"id": model, "object": "model", "created": 0, "owned_by": cluster}
            for model, cluster in seen.items()
        ],
    }


def model_entry(catalog: Catalog, identity: Identity, model: str) -> dict[str, Any] | ClientError:
    """`GET /v1/models/{model}`: the entry, or OpenAI's 404 for a model the caller cannot use."""
    for entry in model_list(catalog, identity)["data"]:
        if entry["id"] == model:
            return dict(entry)
    return ClientError(
        f"The model `{clip(model)}` does not exist or you do not have access to it.",
        status=404,
        param="model",
        code="model_not_found",
    )


def endpoint_listing(catalog: Catalog, identity: Identity) -> dict[str, Any]:
    """`GET /resource_server/list-endpoints`: usable endpoints with the URLs to call them."""
    clusters: dict[str, Any] = {}
    for endpoint in usable_endpoints(catalog, identity):
        cluster = catalog.cluster_of(endpoint)
        base = f"/resource_server/{cluster.cluster_name}/{endpoint.framework}/v1"
        entry = clusters.setdefault(cluster.cluster_name, {"frameworks": {}})
        framework = entry["frameworks"].setdefault(
            endpoint.framework,
            {
                "models": [],
                "endpoints": {route: f"{base}/{route}" for route in cluster.openai_endpoints},
            },
        )
        framework["models"].append(
            {"model": endpoint.model, "endpoint_slug": endpoint.endpoint_slug}
        )
    return {"clusters": clusters}


def cluster_for_jobs(
    catalog: Catalog, identity: Identity, name: str
) -> ClusterRecord | ClientError:
    """The cluster whose jobs a caller asked for: 404 if unknown, 403 if not theirs."""
    return usable_cluster(catalog, identity, name)


def filter_jobs(
    catalog: Catalog, identity: Identity, cluster: ClusterRecord, jobs: Mapping[str, Any]
) -> dict[str, Any]:
    """A cluster's job report cut down to the models this caller may use there."""
    usable = {
        e.model.casefold()
        for e in usable_endpoints(catalog, identity)
        if e.cluster == cluster.cluster_name
    }
    shown: dict[str, Any] = {}
    for name in _JOB_LISTS:
        shown[name] = [
            job for job in jobs.get(name) or [] if str(job.get("Models", "")).casefold() in usable
        ]
    shown["cluster_status"] = {
        **dict(jobs.get("cluster_status") or {}),
        "cluster": cluster.cluster_name,
        "total_models": sum(len(shown[n]) for n in _JOB_LISTS),
        "live_models": len(shown["running"]),
        "stopped_models": len(shown["stopped"]),
    }
    return shown
