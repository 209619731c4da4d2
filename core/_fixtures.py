"""Reading `endpoints.json` and `clusters.json`, the seed's Django fixture format, as-is.

Pure: the caller reads the files and hands over their text, so the same checks run in
`inference-gateway check`, at server start and in tests.  Every problem is a
`ConfigurationError` naming the file, the entry (its pk) and the field, because an
operator with forty endpoints needs to know which line to fix, not that "config is bad".
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import pydantic

from core._catalog import Catalog
from core._errors import ConfigurationError
from core._records import ClusterRecord, EndpointRecord, OpenAIRoute

__all__ = ["load_catalog", "parse_clusters", "parse_endpoints"]


def _split_commas(value: Any) -> Any:
    """The seed stored group and domain lists as comma-separated text; accept both."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [] if value is None else value


StrList = Annotated[list[str], pydantic.BeforeValidator(_split_commas)]
Name = Annotated[str, pydantic.Field(min_length=1)]


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True)


class _EndpointFields(_Strict):
    endpoint_slug: Name
    cluster: Name
    framework: Name
    model: Name
    endpoint_adapter: Name
    allowed_globus_groups: StrList = []
    allowed_domains: StrList = []
    config: dict[str, Any] = {}


class _ClusterFields(_Strict):
    cluster_name: Name
    cluster_adapter: Name
    frameworks: StrList
    openai_endpoints: StrList
    allowed_globus_groups: StrList = []
    allowed_domains: StrList = []
    config: dict[str, Any] = {}


class _EndpointEntry(_Strict):
    model: Literal["resource_server_async.endpoint"]
    pk: int | str
    fields: _EndpointFields


class _ClusterEntry(_Strict):
    model: Literal["resource_server_async.cluster"]
    pk: int | str
    fields: _ClusterFields


def _entries(text: str, file: str) -> list[Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})", file=file
        ) from None
    if not isinstance(data, list):
        raise ConfigurationError("a fixture file must hold a JSON list of entries", file=file)
    return data


def _first_problem(exc: pydantic.ValidationError) -> tuple[str, str]:
    """The first broken field, named as the fixture names it, and what is wrong.

    Pydantic's location also holds list indexes and union-member tags (`pk.int`); the
    operator needs the field: the key under `fields`, or the envelope key itself.
    """
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    under_fields = len(loc) > 1 and loc[0] == "fields"
    field = loc[1] if under_fields else (loc[0] if loc else "entry")
    kind = error["type"]
    if kind == "missing":
        return field, "required field is missing"
    if kind == "extra_forbidden":
        return field, "unknown field"
    return field, str(error["msg"])


def _parse(text: str, file: str, entry_type: type[_Strict]) -> list[Any]:
    parsed = []
    seen_pks: set[str] = set()
    for index, raw in enumerate(_entries(text, file)):
        pk = raw.get("pk", f"#{index}") if isinstance(raw, dict) else f"#{index}"
        try:
            entry = entry_type.model_validate(raw)
        except pydantic.ValidationError as exc:
            field, reason = _first_problem(exc)
            raise ConfigurationError(reason, file=file, entry=pk, field=field) from None
        if str(entry.pk) in seen_pks:  # type: ignore[attr-defined]
            raise ConfigurationError("duplicate pk", file=file, entry=pk, field="pk")
        seen_pks.add(str(entry.pk))  # type: ignore[attr-defined]
        parsed.append(entry)
    return parsed


def parse_endpoints(text: str, *, file: str) -> tuple[EndpointRecord, ...]:
    """Endpoint records from the text of an `endpoints.json`; raises ConfigurationError."""
    records = []
    for entry in _parse(text, file, _EndpointEntry):
        fields = entry.fields
        if "/" in fields.endpoint_slug:
            raise ConfigurationError(
                "a slug may not contain '/' (seed rule: cluster-framework-model)",
                file=file,
                entry=entry.pk,
                field="endpoint_slug",
            )
        records.append(EndpointRecord(id=entry.pk, **fields.model_dump()))
    return tuple(records)


def parse_clusters(text: str, *, file: str) -> tuple[ClusterRecord, ...]:
    """Cluster records from the text of a `clusters.json`; raises ConfigurationError."""
    supported = [route.value for route in OpenAIRoute]
    records = []
    for entry in _parse(text, file, _ClusterEntry):
        for route in entry.fields.openai_endpoints:
            if route not in supported:
                raise ConfigurationError(
                    f"unknown OpenAI endpoint {route!r}; supported: {', '.join(supported)}",
                    file=file,
                    entry=entry.pk,
                    field="openai_endpoints",
                )
        records.append(ClusterRecord(id=entry.pk, **entry.fields.model_dump()))
    return tuple(records)


def load_catalog(
    *, clusters_text: str, endpoints_text: str, clusters_file: str, endpoints_file: str
) -> Catalog:
    """Both fixture files checked alone and against each other, as one Catalog."""
    clusters = parse_clusters(clusters_text, file=clusters_file)
    endpoints = parse_endpoints(endpoints_text, file=endpoints_file)
    return Catalog.build(
        clusters, endpoints, clusters_file=clusters_file, endpoints_file=endpoints_file
    )
