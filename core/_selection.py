"""Which endpoint serves a request, among those the caller may use.

Two ways in, as the seed has them: the ALCF route names the cluster and framework in the
URL and the body names the model; the plain OpenAI route names only the model, and a
model served on several clusters is picked among the ones the caller may use, in
fixture order.  Every refusal is a ClientError that says what the caller *can* do.
"""

from __future__ import annotations

from collections.abc import Iterable

from core._authorization import Allowed, Denied, authorize, may_use_cluster
from core._catalog import Catalog, named
from core._errors import ClientError
from core._limits import clip
from core._records import ClusterRecord, EndpointRecord, Identity, OpenAIRoute
from core._validation import ValidRequest

__all__ = ["select_batch_endpoint", "select_endpoint", "usable_cluster", "usable_endpoints"]

_MAX_LISTED = 50


def usable_endpoints(catalog: Catalog, identity: Identity) -> tuple[EndpointRecord, ...]:
    """Every endpoint the identity passes both levels of rules for, in fixture order."""
    return tuple(
        e
        for e in catalog.endpoints
        if isinstance(authorize(identity, catalog.cluster_of(e), e), Allowed)
    )


def _listing(models: Iterable[str]) -> str:
    names = sorted(set(models))
    if not names:
        return "You have access to no models here."
    shown = ", ".join(names[:_MAX_LISTED])
    more = f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    return f"Models you may use: {shown}{more}."


def _denied(denial: Denied) -> ClientError:
    return ClientError(
        denial.message, status=403, type="permission_error", code="permission_denied"
    )


def usable_cluster(catalog: Catalog, identity: Identity, name: str) -> ClusterRecord | ClientError:
    """The cluster a caller named in a URL: 404 if there is none, 403 if it is not theirs."""
    cluster = catalog.cluster(name)
    if cluster is None:
        return ClientError(
            f"Cluster '{clip(name)}' does not exist.", status=404, code="cluster_not_found"
        )
    denial = may_use_cluster(identity, cluster)
    return cluster if denial is None else _denied(denial)


def _model_not_found(model: str, where: str, usable: Iterable[EndpointRecord]) -> ClientError:
    return ClientError(
        f"The model `{clip(model)}` does not exist{where} or you do not have access to it. "
        + _listing(e.model for e in usable),
        status=404,
        param="model",
        code="model_not_found",
    )


def _match(candidates: Iterable[EndpointRecord], model: str) -> EndpointRecord | None:
    """The endpoint a model name or alias means among these (`core._catalog.named`)."""
    return next(iter(named(candidates, model)), None)


def select_endpoint(
    catalog: Catalog,
    identity: Identity,
    request: ValidRequest,
    *,
    cluster: str | None = None,
    framework: str | None = None,
) -> EndpointRecord | ClientError:
    if cluster is not None:
        return _select_on_cluster(catalog, identity, request, cluster, framework or "")
    return _select_by_model(catalog, identity, request)


def _select_on_cluster(
    catalog: Catalog, identity: Identity, request: ValidRequest, name: str, framework: str
) -> EndpointRecord | ClientError:
    return _on_cluster(catalog, identity, name, framework, request.model, request.route)


def select_batch_endpoint(
    catalog: Catalog,
    identity: Identity,
    *,
    cluster: str,
    framework: str,
    model: str,
    route: OpenAIRoute | None = None,
) -> EndpointRecord | ClientError:
    """The endpoint the seed's batch route names (cluster and framework in the URL, the
    model in the body), with both levels of rules checked.  `route` is the operation the
    batch's lines call, when the gateway runs them; a batch its adaptor runs whole has
    none to check."""
    return _on_cluster(catalog, identity, cluster, framework, model, route)


def _on_cluster(
    catalog: Catalog,
    identity: Identity,
    name: str,
    framework: str,
    model: str,
    route: OpenAIRoute | None,
) -> EndpointRecord | ClientError:
    cluster = usable_cluster(catalog, identity, name)
    if isinstance(cluster, ClientError):
        return cluster
    if framework not in cluster.frameworks:
        return ClientError(
            f"Framework '{clip(framework)}' is not available on cluster '{name}'; "
            f"supported: {', '.join(cluster.frameworks)}.",
            code="unsupported_framework",
        )
    if route is not None and not cluster.accepts(route):
        return ClientError(
            f"'{route.value}' is not supported on cluster '{name}'; "
            f"supported: {', '.join(cluster.openai_endpoints)}.",
            code="unsupported_endpoint",
        )
    here = catalog.on_cluster(name, framework)
    endpoint = _match(here, model)
    if endpoint is None:
        usable = [e for e in here if isinstance(authorize(identity, cluster, e), Allowed)]
        return _model_not_found(model, f" on {name}/{clip(framework)}", usable)
    decision = authorize(identity, cluster, endpoint)
    return _denied(decision) if isinstance(decision, Denied) else endpoint


def _select_by_model(
    catalog: Catalog, identity: Identity, request: ValidRequest
) -> EndpointRecord | ClientError:
    candidates = catalog.serving(request.model)
    if not candidates:
        return _model_not_found(request.model, "", usable_endpoints(catalog, identity))
    routed = [e for e in candidates if catalog.cluster_of(e).accepts(request.route)]
    if not routed:
        supported = sorted({r for e in candidates for r in catalog.cluster_of(e).openai_endpoints})
        return ClientError(
            f"'{request.route.value}' is not supported for model '{clip(request.model)}'; "
            f"supported: {', '.join(supported)}.",
            code="unsupported_endpoint",
        )
    first_denial: Denied | None = None
    for endpoint in routed:
        decision = authorize(identity, catalog.cluster_of(endpoint), endpoint)
        if isinstance(decision, Allowed):
            return endpoint
        first_denial = first_denial or decision
    assert first_denial is not None
    return _denied(first_denial)
