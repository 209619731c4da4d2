"""Reading `endpoints.json` and `clusters.json`, the seed's Django fixture format, as-is.

Pure: the caller reads the files and hands over their text, so the same checks run in
`inference-gateway check`, at server start and in tests.  Every problem is a
`ConfigurationError` naming the file, the entry (its pk) and the field, because an
operator with forty endpoints needs to know which line to fix, not that "config is bad".

The seed system keeps these entries in a database and dumps them; an operator moving
here brings those dumps, so their spellings are accepted as well as the guides' ones:

* `config` as JSON *text* (the seed's column is a text field holding `json.dumps` of the
  object; blank text is an empty object) as well as an object;
* `openai_endpoints` with the API prefix (`"/v1/chat/completions"`), normalised to the
  short form; an entry ending in `/` stays an error, as the seed's model has it;
* `tpm_model` and `tpm_user` on endpoints (tokens per minute, whole numbers, 0 disables;
  the seed's defaults when absent);
* an empty `endpoint_slug`, filled in as the seed's `save()` does: Django's `slugify` of
  `"cluster framework model"`.

Everything else stays strict: an unknown field is an error naming file, entry and field.
An endpoint's `config` is the adaptor's to read, but the keys the gateway itself shows
or acts on are checked here: the public metadata (`core._listing.PUBLIC_CONFIG_KEYS`,
each of its type) and `aliases` (a list of non-empty text), so a wrong type fails at
start, named as `config.<key>`, rather than showing or matching something odd.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Annotated, Any, Literal

import pydantic

from core._catalog import Catalog
from core._errors import ConfigurationError
from core._listing import ALIASES_KEY, PUBLIC_CONFIG_KEYS
from core._records import (
    DEFAULT_TPM_MODEL,
    DEFAULT_TPM_USER,
    ClusterRecord,
    EndpointRecord,
    OpenAIRoute,
)

__all__ = ["load_catalog", "parse_clusters", "parse_endpoints", "slugify"]

# The prefix the seed system's database spells its OpenAI routes with.
API_PREFIX = "/v1/"


def slugify(value: str) -> str:
    """Django's `django.utils.text.slugify` (allow_unicode=False), rule for rule.

    NFKD-normalise and drop what is not ASCII; lower-case; remove every character that
    is not a word character, a space or a hyphen; collapse runs of hyphens and spaces
    to one hyphen; strip hyphens and underscores from both ends.  So `.` and `/` vanish
    rather than becoming hyphens: `"sophia vllm meta-llama/Llama-3.1"` becomes
    `"sophia-vllm-meta-llamallama-31"`, as in the seed system's database.
    """
    text = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text.lower())
    return re.sub(r"[-\s]+", "-", text).strip("-_")


def _config_object(value: Any) -> Any:
    """The seed's config column is text holding `json.dumps` of the object; accept both."""
    if not isinstance(value, str):
        return value
    if not value.strip():
        return {}
    try:
        parsed = json.loads(value)
    except (json.JSONDecodeError, RecursionError) as exc:
        where = (
            f" (line {exc.lineno}, column {exc.colno}: {exc.msg})"
            if isinstance(exc, json.JSONDecodeError)
            else ""
        )
        raise ValueError(f"config text is not valid JSON{where}") from None
    if not isinstance(parsed, dict):
        raise ValueError("config text must hold a JSON object")
    return parsed


def _split_commas(value: Any) -> Any:
    """The seed stored group and domain lists as comma-separated text; accept both."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [] if value is None else value


StrList = Annotated[list[str], pydantic.BeforeValidator(_split_commas)]
Name = Annotated[str, pydantic.Field(min_length=1)]
Config = Annotated[dict[str, Any], pydantic.BeforeValidator(_config_object)]
TokensPerMinute = Annotated[int, pydantic.Field(ge=0)]


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True)


class _EndpointFields(_Strict):
    endpoint_slug: str  # empty: filled in from cluster, framework and model
    cluster: Name
    framework: Name
    model: Name
    endpoint_adapter: Name
    allowed_globus_groups: StrList = []
    allowed_domains: StrList = []
    config: Config = {}
    tpm_model: TokensPerMinute = DEFAULT_TPM_MODEL
    tpm_user: TokensPerMinute = DEFAULT_TPM_USER


class _ClusterFields(_Strict):
    cluster_name: Name
    cluster_adapter: Name
    frameworks: StrList
    openai_endpoints: StrList
    allowed_globus_groups: StrList = []
    allowed_domains: StrList = []
    config: Config = {}


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


_TYPE_NAMES: dict[type, str] = {str: "text", dict: "a JSON object"}


def _check_public_config(config: dict[str, Any], *, file: str, entry: object) -> None:
    """The config keys the gateway shows or matches on have the types it expects."""
    for key, kind in PUBLIC_CONFIG_KEYS.items():
        if key in config and not isinstance(config[key], kind):
            raise ConfigurationError(
                f"must be {_TYPE_NAMES.get(kind, kind.__name__)} (it is shown to users "
                "as the model's metadata)",
                file=file,
                entry=entry,
                field=f"config.{key}",
            )
    if ALIASES_KEY not in config:
        return
    aliases = config[ALIASES_KEY]
    if not isinstance(aliases, list) or not all(
        isinstance(alias, str) and alias.strip() for alias in aliases
    ):
        raise ConfigurationError(
            "must be a list of non-empty model names (other names clients use for it)",
            file=file,
            entry=entry,
            field=f"config.{ALIASES_KEY}",
        )


def parse_endpoints(text: str, *, file: str) -> tuple[EndpointRecord, ...]:
    """Endpoint records from the text of an `endpoints.json`; raises ConfigurationError."""
    records = []
    filled: set[str] = set()  # pks whose slug was filled in
    for entry in _parse(text, file, _EndpointEntry):
        fields = entry.fields
        _check_public_config(fields.config, file=file, entry=entry.pk)
        values = fields.model_dump()
        if not fields.endpoint_slug:
            values["endpoint_slug"] = slugify(
                " ".join((fields.cluster, fields.framework, fields.model))
            )
            if not values["endpoint_slug"]:
                raise ConfigurationError(
                    "the slug is empty and cluster, framework and model give no slug to "
                    "fill in (no letters or digits)",
                    file=file,
                    entry=entry.pk,
                    field="endpoint_slug",
                )
            filled.add(str(entry.pk))
        elif "/" in fields.endpoint_slug:
            raise ConfigurationError(
                "a slug may not contain '/' (seed rule: cluster-framework-model)",
                file=file,
                entry=entry.pk,
                field="endpoint_slug",
            )
        records.append(EndpointRecord(id=entry.pk, **values))
    _filled_slugs_are_unique(records, filled, file)
    return tuple(records)


def _filled_slugs_are_unique(records: list[EndpointRecord], filled: set[str], file: str) -> None:
    """A filled-in slug must not meet another entry's slug; the error names both entries.

    Checked here, where it is known which slugs were filled in, so the message can say
    where the slug came from; the catalog checks given slugs against each other.
    """
    seen: dict[str, EndpointRecord] = {}
    for record in records:
        slug = record.endpoint_slug.lower()
        other = seen.get(slug)
        if other is not None and filled & {record.id, other.id}:
            derived = record if record.id in filled else other
            given = other if derived is record else record
            how = "filled in" if given.id in filled else "given"
            raise ConfigurationError(
                f"the empty slug was filled in as {derived.endpoint_slug!r} (slug of "
                f"cluster, framework and model), which collides with the slug {how} for "
                f"entry pk={given.id}",
                file=file,
                entry=derived.id,
                field="endpoint_slug",
            )
        seen.setdefault(slug, record)


def _short_route(route: str) -> str | None:
    """The short form of an OpenAI route as the seed's database spells it, else None."""
    short = route[len(API_PREFIX) :] if route.startswith(API_PREFIX) else route
    return short if short in {r.value for r in OpenAIRoute} else None


def parse_clusters(text: str, *, file: str) -> tuple[ClusterRecord, ...]:
    """Cluster records from the text of a `clusters.json`; raises ConfigurationError."""
    supported = [route.value for route in OpenAIRoute]
    records = []
    for entry in _parse(text, file, _ClusterEntry):
        routes = []
        for route in entry.fields.openai_endpoints:
            short = _short_route(route)
            if short is None:
                ending = " (an entry may not end in '/')" if route.endswith("/") else ""
                raise ConfigurationError(
                    f"unknown OpenAI endpoint {route!r}{ending}; supported: "
                    f"{', '.join(supported)}, or each with the prefix {API_PREFIX!r}",
                    file=file,
                    entry=entry.pk,
                    field="openai_endpoints",
                )
            if short not in routes:
                routes.append(short)
        values = {**entry.fields.model_dump(), "openai_endpoints": routes}
        records.append(ClusterRecord(id=entry.pk, **values))
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
