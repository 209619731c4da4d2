"""What the gateway serves: clusters and endpoints, indexed for selection.

Built once at start; every cross-entry rule (clusters exist, slugs unique, one endpoint
per cluster/framework/model, an alias names one model and is no other model's name) is
checked here so a running gateway never meets an ambiguous or dangling fixture.

A model is found by its name as the fixture spells it, else case-insensitively, else by
one of its endpoint's `aliases` (exactly, else case-insensitively): `named` is that one
rule, for selection by model and on a cluster, and for the listings.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from core._errors import ConfigurationError
from core._records import ClusterRecord, EndpointRecord

__all__ = ["Catalog", "named"]


def named(candidates: Iterable[EndpointRecord], name: str) -> tuple[EndpointRecord, ...]:
    """The candidates a client's model name means, in their order: those whose model is
    `name` exactly, else case-insensitively, else whose aliases hold it exactly, else
    case-insensitively.  The first rule that finds any wins."""
    candidates = tuple(candidates)
    folded = name.casefold()
    rules = (
        lambda e: e.model == name,
        lambda e: e.model.casefold() == folded,
        lambda e: name in e.aliases,
        lambda e: any(alias.casefold() == folded for alias in e.aliases),
    )
    for rule in rules:
        found = tuple(e for e in candidates if rule(e))
        if found:
            return found
    return ()


_NameIndex = dict[str, tuple[EndpointRecord, ...]]


def _name_indexes(endpoints: tuple[EndpointRecord, ...]) -> tuple[_NameIndex, ...]:
    """For each of `named`'s rules in its order (model, model case-folded, alias, alias
    case-folded), the endpoints each name finds by that rule, in the catalog's order."""
    indexes: tuple[dict[str, list[EndpointRecord]], ...] = ({}, {}, {}, {})
    for endpoint in endpoints:
        keys = (
            (endpoint.model,),
            (endpoint.model.casefold(),),
            endpoint.aliases,
            tuple(alias.casefold() for alias in endpoint.aliases),
        )
        for index, names in zip(indexes, keys, strict=True):
            for name in dict.fromkeys(names):  # an endpoint once per name
                index.setdefault(name, []).append(endpoint)
    return tuple({name: tuple(found) for name, found in index.items()} for index in indexes)


def _check_aliases(endpoints: tuple[EndpointRecord, ...], endpoints_file: str) -> None:
    """An alias means one model: it is no other model's real name, and no endpoint of
    another model claims it too (compared case-insensitively, as selection matches).
    The same model on several clusters may list the same alias."""
    models: dict[str, EndpointRecord] = {}
    for endpoint in endpoints:
        models.setdefault(endpoint.model.casefold(), endpoint)
    claimed: dict[str, EndpointRecord] = {}
    for endpoint in endpoints:
        for alias in endpoint.aliases:
            key = alias.casefold()
            named_so = models.get(key)
            if named_so is not None and named_so.model != endpoint.model:
                raise ConfigurationError(
                    f"alias {alias!r} is the model name of entry pk={named_so.id} "
                    f"({named_so.model!r}); an alias may not name another model",
                    file=endpoints_file,
                    entry=endpoint.id,
                    field="config.aliases",
                )
            other = claimed.setdefault(key, endpoint)
            if other.model != endpoint.model:
                raise ConfigurationError(
                    f"alias {alias!r} is claimed by entry pk={other.id} for model "
                    f"{other.model!r} and by entry pk={endpoint.id} for model "
                    f"{endpoint.model!r}; an alias names one model",
                    file=endpoints_file,
                    entry=endpoint.id,
                    field="config.aliases",
                )


@attrs.frozen
class Catalog:
    clusters: tuple[ClusterRecord, ...]
    endpoints: tuple[EndpointRecord, ...]
    _clusters_by_name: dict[str, ClusterRecord] = attrs.field(init=False, repr=False, eq=False)
    _endpoints_by_slug: dict[str, EndpointRecord] = attrs.field(init=False, repr=False, eq=False)
    # `named`'s four rules over every endpoint, as four indexes (see `serving`).
    _by_name: tuple[_NameIndex, ...] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_clusters_by_name", {c.cluster_name: c for c in self.clusters})
        object.__setattr__(
            self, "_endpoints_by_slug", {e.endpoint_slug.lower(): e for e in self.endpoints}
        )
        object.__setattr__(self, "_by_name", _name_indexes(self.endpoints))

    @classmethod
    def build(
        cls,
        clusters: Iterable[ClusterRecord],
        endpoints: Iterable[EndpointRecord],
        *,
        clusters_file: str = "clusters.json",
        endpoints_file: str = "endpoints.json",
    ) -> Catalog:
        """A catalog whose entries agree with each other; raises ConfigurationError."""
        clusters = tuple(clusters)
        endpoints = tuple(endpoints)
        names: dict[str, ClusterRecord] = {}
        for cluster in clusters:
            if cluster.cluster_name in names:
                raise ConfigurationError(
                    f"cluster name {cluster.cluster_name!r} is already used by entry "
                    f"pk={names[cluster.cluster_name].id}",
                    file=clusters_file,
                    entry=cluster.id,
                    field="cluster_name",
                )
            names[cluster.cluster_name] = cluster
        slugs: dict[str, EndpointRecord] = {}
        triples: dict[tuple[str, str, str], EndpointRecord] = {}
        for endpoint in endpoints:
            home = names.get(endpoint.cluster)
            if home is None:
                raise ConfigurationError(
                    f"cluster {endpoint.cluster!r} is not defined in {clusters_file}",
                    file=endpoints_file,
                    entry=endpoint.id,
                    field="cluster",
                )
            if endpoint.framework not in home.frameworks:
                raise ConfigurationError(
                    f"framework {endpoint.framework!r} is not among cluster "
                    f"{home.cluster_name!r}'s frameworks ({', '.join(home.frameworks)})",
                    file=endpoints_file,
                    entry=endpoint.id,
                    field="framework",
                )
            slug = endpoint.endpoint_slug.lower()
            if slug in slugs:
                raise ConfigurationError(
                    f"slug {endpoint.endpoint_slug!r} collides with entry pk={slugs[slug].id}",
                    file=endpoints_file,
                    entry=endpoint.id,
                    field="endpoint_slug",
                )
            slugs[slug] = endpoint
            triple = (endpoint.cluster, endpoint.framework, endpoint.model)
            if triple in triples:
                raise ConfigurationError(
                    f"model {endpoint.model!r} is already served on {endpoint.cluster}/"
                    f"{endpoint.framework} by entry pk={triples[triple].id}",
                    file=endpoints_file,
                    entry=endpoint.id,
                    field="model",
                )
            triples[triple] = endpoint
        _check_aliases(endpoints, endpoints_file)
        return cls(clusters, endpoints)

    def cluster(self, name: str) -> ClusterRecord | None:
        return self._clusters_by_name.get(name)

    def endpoint(self, slug: str) -> EndpointRecord | None:
        return self._endpoints_by_slug.get(slug.lower())

    def cluster_of(self, endpoint: EndpointRecord) -> ClusterRecord:
        return self._clusters_by_name[endpoint.cluster]

    def serving(self, model: str) -> tuple[EndpointRecord, ...]:
        """Endpoints serving a model name or alias, by `named`'s rule: read from its
        indexes, made once (the catalog never changes), not a scan of every endpoint by
        every rule on every request."""
        folded = model.casefold()
        exact, folded_names, aliases, folded_aliases = self._by_name
        return (
            exact.get(model)
            or folded_names.get(folded)
            or aliases.get(model)
            or folded_aliases.get(folded)
            or ()
        )

    def on_cluster(self, cluster: str, framework: str | None = None) -> tuple[EndpointRecord, ...]:
        return tuple(
            e
            for e in self.endpoints
            if e.cluster == cluster and (framework is None or e.framework == framework)
        )
