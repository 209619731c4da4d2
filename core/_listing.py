"""What each listing route shows a caller: only what that caller may use.

A model's public metadata is what the seed gateway publishes of an endpoint: the keys
of its fixture `config` named in `PUBLIC_CONFIG_KEYS` (and of the type named there,
checked when fixtures load), its `aliases`, and its token quotas when they are on
(`rate_limit_token_per_minute`, `rate_limit_token_per_minute_per_user`).  Nothing else
of the config is ever shown: it holds URLs, key names and whatever else an operator
keeps there.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from core._catalog import Catalog, named
from core._errors import ClientError
from core._limits import clip
from core._records import ClusterRecord, EndpointRecord, Identity
from core._selection import usable_cluster, usable_endpoints

__all__ = [
    "ALIASES_KEY",
    "GATEWAY_CONFIG_KEYS",
    "PUBLIC_CONFIG_KEYS",
    "cluster_for_jobs",
    "cluster_models",
    "endpoint_listing",
    "filter_jobs",
    "model_details",
    "model_entry",
    "model_list",
    "public_clusters",
]

# The config keys shown to the callers who may use an endpoint, with the JSON type each
# must have (the seed's `MODEL_DETAILS_KEYS`).
PUBLIC_CONFIG_KEYS: Mapping[str, type] = {
    "display_name": str,
    "description": str,
    "capabilities": dict,
}
# Other names clients use for the model: a list of non-empty text, shown as it is.
ALIASES_KEY = "aliases"
# The config keys that are the gateway's, not the adaptor's: adaptors are built without
# them (`adaptors.loading`), so a strict adaptor config need not know them.
GATEWAY_CONFIG_KEYS = frozenset({*PUBLIC_CONFIG_KEYS, ALIASES_KEY})

_JOB_LISTS = (
    "running",
    "queued",
    "stopped",
    "others",
    "private_batch_running",
    "private_batch_queued",
)


def _metadata(endpoint: EndpointRecord) -> dict[str, Any]:
    """An endpoint's public metadata (see the module's docstring); copies, never the
    catalog's own values."""
    shown: dict[str, Any] = {
        key: copy.deepcopy(endpoint.config[key])
        for key, kind in PUBLIC_CONFIG_KEYS.items()
        if isinstance(endpoint.config.get(key), kind)
    }
    if endpoint.aliases:
        shown[ALIASES_KEY] = list(endpoint.aliases)
    if endpoint.tpm_model > 0:
        shown["rate_limit_token_per_minute"] = endpoint.tpm_model
    if endpoint.tpm_user > 0:
        shown["rate_limit_token_per_minute_per_user"] = endpoint.tpm_user
    return shown


def model_details(endpoint: EndpointRecord) -> dict[str, Any]:
    """One entry of `GET /resource_server/{cluster}/models`, as the seed spells it."""
    return {
        "id": endpoint.model,
        "object": "model",
        "cluster": endpoint.cluster,
        "framework": endpoint.framework,
        **_metadata(endpoint),
    }


def model_list(catalog: Catalog, identity: Identity) -> dict[str, Any]:
    """`GET /v1/models` in OpenAI's list shape, one entry per model name: the first
    usable endpoint of each model (in fixture order) gives its owner and metadata."""
    seen: dict[str, EndpointRecord] = {}
    for endpoint in usable_endpoints(catalog, identity):
        seen.setdefault(endpoint.model, endpoint)
    return {
        "object": "list",
        "data": [
            {
                "id": model,
                "object": "model",
                "created": 0,
                "owned_by": endpoint.cluster,
                **_metadata(endpoint),
            }
            for model, endpoint in seen.items()
        ],
    }


def _no_model(model: str, where: str, param: str) -> ClientError:
    return ClientError(
        f"The model `{clip(model)}` does not exist{where} or you do not have access to it.",
        status=404,
        param=param,
        code="model_not_found",
    )


def model_entry(catalog: Catalog, identity: Identity, model: str) -> dict[str, Any] | ClientError:
    """`GET /v1/models/{model}`: the entry, or OpenAI's 404 for a model the caller cannot
    use.  An alias (or another spelling selection accepts) answers with the entry of the
    model it means, under the model's real id: the name the gateway sends, logs and
    counts."""
    found = named(usable_endpoints(catalog, identity), model)
    if found:
        real = found[0].model
        for entry in model_list(catalog, identity)["data"]:
            if entry["id"] == real:
                return dict(entry)
    return _no_model(model, "", "model")


def cluster_models(
    catalog: Catalog, identity: Identity, name: str, model_id: str | None = None
) -> list[dict[str, Any]] | ClientError:
    """`GET /resource_server/{cluster}/models[?model_id=]`: the models of a cluster the
    caller may use, sorted by name as the seed sorts them; 404 for an unknown cluster,
    403 for one not theirs (the jobs route's decision).  `model_id` (a name or an alias)
    narrows the list to that model: 404 if the caller may not use it there."""
    cluster = usable_cluster(catalog, identity, name)
    if isinstance(cluster, ClientError):
        return cluster
    here = tuple(
        e for e in usable_endpoints(catalog, identity) if e.cluster == cluster.cluster_name
    )
    if model_id is not None:
        here = named(here, model_id)
        if not here:
            return _no_model(model_id, f" on cluster '{cluster.cluster_name}'", "model_id")
    ordered = sorted(here, key=lambda e: (e.model.lower(), e.framework))
    return [model_details(e) for e in ordered]


def public_clusters(catalog: Catalog) -> tuple[ClusterRecord, ...]:
    """The clusters anyone may see the status of (`GET /resource_server/status`): those
    that restrict their users by neither group nor domain, as the seed decides it."""
    return tuple(
        c for c in catalog.clusters if not c.allowed_globus_groups and not c.allowed_domains
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
