"""Fixtures exactly as the seed system writes them: its database dumps spell some fields
differently from its guides, and an operator moving here brings those dumps.

Each accepted spelling is a row here; so is each near-miss that must stay an error
naming file, entry and field.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from core import ConfigurationError, parse_clusters, parse_endpoints, slugify
from tests.test_core_fixtures import CLUSTERS, ENDPOINTS, cluster_entry, endpoint_entry, load

# -- Django's slugify, rule for rule ------------------------------------------------------

# Expected values are what django.utils.text.slugify (allow_unicode=False) returns.
SLUGS = [
    (
        "sophia vllm meta-llama/Meta-Llama-3-70B-Instruct",
        "sophia-vllm-meta-llamameta-llama-3-70b-instruct",
    ),
    ("polaris vllm Qwen/Qwen2.5-7B-Instruct", "polaris-vllm-qwenqwen25-7b-instruct"),
    ("metis api gpt-oss-120b-131072", "metis-api-gpt-oss-120b-131072"),
    ("your-cluster api Your-Model-70B", "your-cluster-api-your-model-70b"),
    ("Sophia  VLLM   model", "sophia-vllm-model"),
    ("a - b -- c", "a-b-c"),
    ("-_lead and trail_-", "lead-and-trail"),
    ("keep_under_scores inside", "keep_under_scores-inside"),
    ("Crème brûlée Ünïcode", "creme-brulee-unicode"),
    ("ﬁne ligature", "fine-ligature"),
    ("日本語 model", "model"),
    ("tab\there\nnewline", "tab-here-newline"),
    ("dots.and,commas;semi:colons", "dotsandcommassemicolons"),
    ("!!! ?? //", ""),
    ("", ""),
]


@pytest.mark.parametrize(("text", "slug"), SLUGS, ids=[s or "<empty>" for s, _ in SLUGS])
def test_slugify_is_djangos(text: str, slug: str) -> None:
    assert slugify(text) == slug


def test_a_filled_in_slug_has_the_guides_shape_cluster_framework_model() -> None:
    # connecting-direct-api-backend.md: "endpoint_slug ... format: cluster-framework-model"
    assert slugify("your-cluster api Your-Model-70B") == "your-cluster-api-your-model-70b"


# -- the spellings that load --------------------------------------------------------------

ENDPOINT_CONFIG = {
    "api_url": "https://api.example.org/v1/chat/completions",
    "api_key_env_name": "K",
}

# name, endpoint fields, the record's attribute, its expected value
SEED_SPELLINGS: list[tuple[str, dict[str, Any], str, Any]] = [
    ("config as JSON text", {"config": json.dumps(ENDPOINT_CONFIG)}, "config", ENDPOINT_CONFIG),
    ("config as an object", {"config": ENDPOINT_CONFIG}, "config", ENDPOINT_CONFIG),
    ("config as blank text", {"config": ""}, "config", {}),
    ("config as whitespace", {"config": "  \n"}, "config", {}),
    ("config as text of {}", {"config": "{}"}, "config", {}),
    (
        "config text with nested values",
        {"config": '{"a": {"b": [1, 2]}, "c": null}'},
        "config",
        {"a": {"b": [1, 2]}, "c": None},
    ),
    ("tpm fields absent: the seed's defaults", {}, "tpm_model", 100_000),
    ("tpm_user absent: the seed's default", {}, "tpm_user", 60_000),
    ("tpm_model given", {"tpm_model": 250_000}, "tpm_model", 250_000),
    ("tpm_user given", {"tpm_user": 1_000}, "tpm_user", 1_000),
    ("tpm_model 0 disables", {"tpm_model": 0}, "tpm_model", 0),
    ("tpm_user 0 disables", {"tpm_user": 0}, "tpm_user", 0),
    (
        "empty slug filled in",
        {"endpoint_slug": "", "model": "meta-llama/Meta-Llama-3.1-8B-Instruct"},
        "endpoint_slug",
        "polaris-vllm-meta-llamameta-llama-31-8b-instruct",
    ),
    (
        "empty slug filled in, upper case and dots",
        {"endpoint_slug": "", "model": "Some.Model_V2"},
        "endpoint_slug",
        "polaris-vllm-somemodel_v2",
    ),
    ("given slug kept as given", {"endpoint_slug": "My-Slug"}, "endpoint_slug", "My-Slug"),
]


@pytest.mark.parametrize(
    ("fields", "attribute", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in SEED_SPELLINGS],
)
def test_the_seed_systems_endpoint_spellings_load(
    fields: dict[str, Any], attribute: str, expected: Any
) -> None:
    (record,) = parse_endpoints(json.dumps([endpoint_entry(1, **fields)]), file=ENDPOINTS)
    value = getattr(record, attribute)
    assert (dict(value) if attribute == "config" else value) == expected


# name, cluster fields, expected openai_endpoints, expected config
CLUSTER_SPELLINGS: list[tuple[str, dict[str, Any], tuple[str, ...], dict[str, Any]]] = [
    (
        "routes with the API prefix",
        {"openai_endpoints": ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]},
        ("chat/completions", "completions", "embeddings"),
        {},
    ),
    (
        "prefixed and short mixed, duplicates once",
        {"openai_endpoints": ["/v1/chat/completions", "chat/completions", "/v1/completions"]},
        ("chat/completions", "completions"),
        {},
    ),
    (
        "prefixed routes as comma-separated text",
        {"openai_endpoints": "/v1/chat/completions, /v1/completions"},
        ("chat/completions", "completions"),
        {},
    ),
    (
        "config as JSON text",
        {"config": json.dumps({"status_url": "https://status.example.org/jobs"})},
        ("chat/completions", "completions", "embeddings"),
        {"status_url": "https://status.example.org/jobs"},
    ),
    ("config as blank text", {"config": ""}, ("chat/completions", "completions", "embeddings"), {}),
]


@pytest.mark.parametrize(
    ("fields", "routes", "config"),
    [pytest.param(*case[1:], id=case[0]) for case in CLUSTER_SPELLINGS],
)
def test_the_seed_systems_cluster_spellings_load(
    fields: dict[str, Any], routes: tuple[str, ...], config: dict[str, Any]
) -> None:
    (record,) = parse_clusters(json.dumps([cluster_entry(1, **fields)]), file=CLUSTERS)
    assert record.openai_endpoints == routes
    assert dict(record.config) == config


# -- near misses: still errors naming file, entry and field -------------------------------

# name, file, entries (endpoints or clusters), entry, field, words in the reason
STILL_BROKEN: list[tuple[str, str, list[dict[str, Any]], Any, str, str]] = [
    (
        "config text not JSON",
        ENDPOINTS,
        [endpoint_entry(3, config="{api_url: x}")],
        3,
        "config",
        "not valid JSON",
    ),
    (
        "config text a list",
        ENDPOINTS,
        [endpoint_entry(3, config="[1, 2]")],
        3,
        "config",
        "JSON object",
    ),
    (
        "config text a number",
        ENDPOINTS,
        [endpoint_entry(3, config="5")],
        3,
        "config",
        "JSON object",
    ),
    (
        "config text a string",
        ENDPOINTS,
        [endpoint_entry(3, config='"x"')],
        3,
        "config",
        "JSON object",
    ),
    (
        "cluster config text not JSON",
        CLUSTERS,
        [cluster_entry(4, config="{")],
        4,
        "config",
        "not valid JSON",
    ),
    ("config a number", ENDPOINTS, [endpoint_entry(3, config=5)], 3, "config", ""),
    (
        "route ending in /",
        CLUSTERS,
        [cluster_entry(4, openai_endpoints=["/v1/chat/completions/"])],
        4,
        "openai_endpoints",
        "end in '/'",
    ),
    (
        "short route ending in /",
        CLUSTERS,
        [cluster_entry(4, openai_endpoints=["completions/"])],
        4,
        "openai_endpoints",
        "end in '/'",
    ),
    (
        "the bare prefix",
        CLUSTERS,
        [cluster_entry(4, openai_endpoints=["/v1/"])],
        4,
        "openai_endpoints",
        "unknown",
    ),
    (
        "another API version",
        CLUSTERS,
        [cluster_entry(4, openai_endpoints=["/v2/chat/completions"])],
        4,
        "openai_endpoints",
        "unknown",
    ),
    (
        "prefix without its slash",
        CLUSTERS,
        [cluster_entry(4, openai_endpoints=["v1/chat/completions"])],
        4,
        "openai_endpoints",
        "unknown",
    ),
    (
        "unknown prefixed route",
        CLUSTERS,
        [cluster_entry(4, openai_endpoints=["/v1/audio/speech"])],
        4,
        "openai_endpoints",
        "unknown",
    ),
    ("tpm_model negative", ENDPOINTS, [endpoint_entry(5, tpm_model=-1)], 5, "tpm_model", ""),
    ("tpm_user as text", ENDPOINTS, [endpoint_entry(5, tpm_user="60000")], 5, "tpm_user", ""),
    ("tpm_user a fraction", ENDPOINTS, [endpoint_entry(5, tpm_user=1.5)], 5, "tpm_user", ""),
    ("tpm_model a boolean", ENDPOINTS, [endpoint_entry(5, tpm_model=True)], 5, "tpm_model", ""),
    ("tpm_model null", ENDPOINTS, [endpoint_entry(5, tpm_model=None)], 5, "tpm_model", ""),
    ("slug null", ENDPOINTS, [endpoint_entry(5, endpoint_slug=None)], 5, "endpoint_slug", ""),
    (
        "unknown endpoint field",
        ENDPOINTS,
        [endpoint_entry(6, tpm_models=5)],
        6,
        "tpm_models",
        "unknown field",
    ),
    (
        "tpm on a cluster",
        CLUSTERS,
        [cluster_entry(6, tpm_model=5)],
        6,
        "tpm_model",
        "unknown field",
    ),
    (
        "unknown field beside text config",
        ENDPOINTS,
        [endpoint_entry(6, config="{}", api_url="x")],
        6,
        "api_url",
        "unknown field",
    ),
]


@pytest.mark.parametrize(
    ("file", "entries", "entry", "field", "words"),
    [pytest.param(*case[1:], id=case[0]) for case in STILL_BROKEN],
)
def test_near_misses_stay_errors_naming_file_entry_and_field(
    file: str, entries: list[dict[str, Any]], entry: Any, field: str, words: str
) -> None:
    parse = parse_endpoints if file == ENDPOINTS else parse_clusters
    with pytest.raises(ConfigurationError) as caught:
        parse(json.dumps(entries), file=file)
    error = caught.value
    assert (error.file, error.entry, error.field) == (file, entry, field)
    assert str(error).startswith(f"{file}, entry pk={entry}, field '{field}': ")
    assert words in error.reason


# -- a filled-in slug must be unique ------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoints", "entry", "other"),
    [
        pytest.param(
            [
                endpoint_entry(1, endpoint_slug="polaris-vllm-llama-31"),
                endpoint_entry(2, endpoint_slug="", model="Llama-3.1"),
            ],
            2,
            1,
            id="filled in after a given slug",
        ),
        pytest.param(
            [
                endpoint_entry(1, endpoint_slug="", model="Llama-3.1"),
                endpoint_entry(2, endpoint_slug="POLARIS-vllm-llama-31"),
            ],
            1,
            2,
            id="filled in before a given slug, other case",
        ),
        pytest.param(
            [
                endpoint_entry(7, endpoint_slug="", model="Llama-3.1"),
                endpoint_entry(8, endpoint_slug="", model="llama 3.1"),
            ],
            8,
            7,
            id="two filled-in slugs",
        ),
    ],
)
def test_a_filled_in_slug_that_collides_names_both_entries(
    endpoints: list[dict[str, Any]], entry: int, other: int
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load([cluster_entry(1)], endpoints)
    error = caught.value
    assert (error.file, error.entry, error.field) == (ENDPOINTS, str(entry), "endpoint_slug")
    assert f"pk={other}" in error.reason
    assert "polaris-vllm-llama-31" in error.reason


def test_a_whole_seed_dump_loads() -> None:
    """One cluster and two endpoints as the seed system's `dumpdata` writes them."""
    clusters = [
        {
            "model": "resource_server_async.cluster",
            "pk": 1,
            "fields": {
                "cluster_name": "sophia",
                "frameworks": ["vllm"],
                "openai_endpoints": ["/v1/chat/completions", "/v1/completions"],
                "cluster_adapter": "adaptors.clusters.demo.DemoCluster",
                "allowed_globus_groups": [],
                "allowed_domains": [],
                "config": json.dumps({"status_url": "https://status.example.org"}),
            },
        }
    ]
    endpoints = [
        {
            "model": "resource_server_async.endpoint",
            "pk": pk,
            "fields": {
                "endpoint_slug": "",
                "cluster": "sophia",
                "framework": "vllm",
                "model": model,
                "endpoint_adapter": "adaptors.endpoints.demo.DemoEndpoint",
                "allowed_globus_groups": [],
                "allowed_domains": [],
                "tpm_model": 100000,
                "tpm_user": 60000,
                "config": "",
            },
        }
        for pk, model in [(1, "meta-llama/Meta-Llama-3-70B-Instruct"), (2, "mistralai/Mistral-7B")]
    ]
    catalog = load(clusters, endpoints)
    assert catalog.clusters[0].openai_endpoints == ("chat/completions", "completions")
    assert [e.endpoint_slug for e in catalog.endpoints] == [
        "sophia-vllm-meta-llamameta-llama-3-70b-instruct",
        "sophia-vllm-mistralaimistral-7b",
    ]
    assert catalog.endpoint("sophia-vllm-mistralaimistral-7b") is catalog.endpoints[1]
