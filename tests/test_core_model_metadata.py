"""Model metadata and aliases in the core, case by case.

* The fixture rules: the public config keys have their types, `aliases` is a list of
  non-empty names, an alias names one model and no other model's name; every mistake
  fails at start naming file, entry, field (and both entries, when two disagree).
* What the listings show: the allow-listed keys, the aliases and the quotas that are
  on; never any other config key (a URL, a key, a note).
* Selection by an alias is selection by the model's name, and the body sent on differs
  from the client's in `model` only (and not at all when the client named the model).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import (
    CallAdaptor,
    Catalog,
    ClientError,
    ConfigurationError,
    EndpointRecord,
    Identity,
    IdentityResolved,
    OpenAIRoute,
    RequestMachine,
    RequestReceived,
    cluster_models,
    model_entry,
    model_list,
    public_clusters,
    select_endpoint,
    validate_request,
)
from tests.test_core_fixtures import cluster_entry, endpoint_entry, load

CHAT = OpenAIRoute.CHAT_COMPLETIONS
ALICE = Identity(username="alice@example.org", groups={"team"})
BOB = Identity(username="bob@elsewhere.net")

# Config keys an operator keeps for the adaptor: none may ever reach a caller.
PRIVATE = {
    "api_key": "sk-PRIVATE-do-not-show",
    "base_url": "https://private-backend.example.test/v1",
    "api_url": "https://private-backend.example.test/v1/chat/completions",
    "api_key_env_name": "PRIVATE_KEY_ENV",
    "internal_note": "PRIVATE: rack 7, ask Bob",
}
CAPABILITIES = {
    "schema_version": 1,
    "api_protocols": ["chat_completions", "responses"],
    "context_window_tokens": 131072,
    "streaming": True,
    "tool_calling": {"supported": True},
}
PUBLIC = {
    "display_name": "Llama 3.1 8B",
    "description": "A small model for quick answers.",
    "capabilities": CAPABILITIES,
}


# -- the fixture rules ------------------------------------------------------------------

# name, endpoint entries, pk and field named, words the message must hold
BAD = [
    ("aliases as text", [endpoint_entry(1, config={"aliases": "m"})], 1, "config.aliases", []),
    (
        "an empty alias",
        [endpoint_entry(1, config={"aliases": ["ok", ""]})],
        1,
        "config.aliases",
        [],
    ),
    ("a blank alias", [endpoint_entry(1, config={"aliases": ["  "]})], 1, "config.aliases", []),
    ("an alias not text", [endpoint_entry(1, config={"aliases": [7]})], 1, "config.aliases", []),
    (
        "aliases an object",
        [endpoint_entry(1, config={"aliases": {"a": 1}})],
        1,
        "config.aliases",
        [],
    ),
    (
        "aliases in the seed's config text",
        [endpoint_entry(1, config=json.dumps({"aliases": [None]}))],
        1,
        "config.aliases",
        [],
    ),
    (
        "display_name not text",
        [endpoint_entry(1, config={"display_name": 3})],
        1,
        "config.display_name",
        ["text"],
    ),
    (
        "description not text",
        [endpoint_entry(1, config={"description": ["a"]})],
        1,
        "config.description",
        ["text"],
    ),
    (
        "capabilities not an object",
        [endpoint_entry(1, config={"capabilities": ["chat"]})],
        1,
        "config.capabilities",
        ["JSON object"],
    ),
    (
        "one alias for two models",
        [
            endpoint_entry(1, config={"aliases": ["fast"]}),
            endpoint_entry(2, config={"aliases": ["fast"]}),
        ],
        2,
        "config.aliases",
        ["'fast'", "pk=1", "pk=2", "'model-1'", "'model-2'"],
    ),
    (
        "one alias for two models, spelled apart",
        [
            endpoint_entry(1, config={"aliases": ["Fast"]}),
            endpoint_entry(2, config={"aliases": ["fast"]}),
        ],
        2,
        "config.aliases",
        ["pk=1", "pk=2"],
    ),
    (
        "an alias that is another model's name",
        [endpoint_entry(1), endpoint_entry(2, config={"aliases": ["model-1"]})],
        2,
        "config.aliases",
        ["'model-1'", "pk=1"],
    ),
    (
        "an alias that is a later model's name",
        [endpoint_entry(1, config={"aliases": ["MODEL-2"]}), endpoint_entry(2)],
        1,
        "config.aliases",
        ["'MODEL-2'", "pk=2"],
    ),
]


@pytest.mark.parametrize(
    ("endpoints", "pk", "field", "words"),
    [case[1:] for case in BAD],
    ids=[case[0] for case in BAD],
)
def test_a_wrong_alias_or_metadata_fails_at_start_naming_where(
    endpoints: list[dict[str, Any]], pk: int, field: str, words: list[str]
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        load([cluster_entry(1)], endpoints)
    error = raised.value
    assert (error.file, str(error.entry), error.field) == ("endpoints.json", str(pk), field)
    assert f"entry pk={pk}" in str(error) and f"field '{field}'" in str(error)
    for word in words:
        assert word in str(error)


GOOD = [
    ("no metadata at all", [endpoint_entry(1)]),
    ("metadata and aliases", [endpoint_entry(1, config={**PUBLIC, "aliases": ["a", "b"]})]),
    ("an empty list of aliases", [endpoint_entry(1, config={"aliases": []})]),
    ("an alias that is its own model's name", [endpoint_entry(1, config={"aliases": ["Model-1"]})]),
    (
        "one model on two clusters, one alias",
        [
            endpoint_entry(1, model="m", config={"aliases": ["fast"]}),
            endpoint_entry(2, model="m", cluster="sophia", config={"aliases": ["fast"]}),
        ],
    ),
    ("metadata in the seed's config text", [endpoint_entry(1, config=json.dumps(PUBLIC))]),
]


@pytest.mark.parametrize("endpoints", [c[1] for c in GOOD], ids=[c[0] for c in GOOD])
def test_good_aliases_and_metadata_load(endpoints: list[dict[str, Any]]) -> None:
    clusters = [cluster_entry(1), cluster_entry(2, cluster_name="sophia", frameworks=["vllm"])]
    assert len(load(clusters, endpoints).endpoints) == len(endpoints)


# -- what the listings show ---------------------------------------------------------------


def endpoint(
    cluster: str,
    model: str,
    config: dict[str, Any] | None = None,
    *,
    groups: tuple[str, ...] = (),
    framework: str = "vllm",
    tpm_model: int = 0,
    tpm_user: int = 0,
) -> EndpointRecord:
    return EndpointRecord(
        id=f"{cluster}-{framework}-{model}",
        endpoint_slug=f"{cluster}-{framework}-{model}",
        cluster=cluster,
        framework=framework,
        model=model,
        endpoint_adapter="adaptors.endpoints.demo.DemoEndpoint",
        allowed_globus_groups=groups,
        config=config or {},
        tpm_model=tpm_model,
        tpm_user=tpm_user,
    )


def catalog_of(*endpoints: EndpointRecord, locked: bool = False) -> Catalog:
    from core import ClusterRecord

    def cluster(name: str, **rules: Any) -> ClusterRecord:
        return ClusterRecord(
            id=name,
            cluster_name=name,
            cluster_adapter="adaptors.clusters.demo.DemoCluster",
            frameworks=["vllm", "sglang"],
            openai_endpoints=[route.value for route in OpenAIRoute],
            **rules,
        )

    clusters = [
        cluster("open"),
        cluster("second"),
        cluster("staff", allowed_globus_groups=["staff"]),
    ]
    clusters.append(cluster("anl", allowed_domains=["anl.gov"]))
    return Catalog.build(clusters, endpoints)


CATALOG = catalog_of(
    endpoint(
        "open", "llama", {**PUBLIC, **PRIVATE, "aliases": ["fast", "Llama-3.1-8B"]}, tpm_model=9000
    ),
    endpoint("second", "llama", {"aliases": ["fast"], **PRIVATE}, tpm_user=300),
    endpoint("open", "mixtral", {"description": "team only", **PRIVATE}, groups=("team",)),
    endpoint("open", "qwen", PRIVATE, framework="sglang", tpm_model=5, tpm_user=6),
    endpoint("staff", "secret-model", {**PUBLIC, **PRIVATE}),
)


def all_answers(identity: Identity) -> list[Any]:
    answers: list[Any] = [model_list(CATALOG, identity)]
    for name in ("llama", "fast", "FAST", "mixtral", "qwen", "secret-model"):
        answers.append(model_entry(CATALOG, identity, name))
    for cluster in ("open", "second", "staff", "nowhere"):
        answers.append(cluster_models(CATALOG, identity, cluster))
        answers.append(cluster_models(CATALOG, identity, cluster, "fast"))
    return answers


@pytest.mark.parametrize("identity", [ALICE, BOB], ids=["alice", "bob"])
def test_no_private_config_key_or_value_is_ever_shown(identity: Identity) -> None:
    shown = json.dumps(
        [a if not isinstance(a, ClientError) else a.message for a in all_answers(identity)]
    )
    for key, value in PRIVATE.items():
        assert key not in shown
        assert value not in shown


def test_a_cluster_lists_its_usable_models_with_their_public_metadata() -> None:
    assert cluster_models(CATALOG, ALICE, "open") == [
        {
            "id": "llama",
            "object": "model",
            "cluster": "open",
            "framework": "vllm",
            **PUBLIC,
            "aliases": ["fast", "Llama-3.1-8B"],
            "rate_limit_token_per_minute": 9000,
        },
        {
            "id": "mixtral",
            "object": "model",
            "cluster": "open",
            "framework": "vllm",
            "description": "team only",
        },
        {
            "id": "qwen",
            "object": "model",
            "cluster": "open",
            "framework": "sglang",
            "rate_limit_token_per_minute": 5,
            "rate_limit_token_per_minute_per_user": 6,
        },
    ]
    # Bob is not in the team: mixtral is not his to see.
    assert [m["id"] for m in cluster_models(CATALOG, BOB, "open")] == ["llama", "qwen"]  # type: ignore[index]


# cluster, model_id, who, status (None: found), ids found
ONE_MODEL = [
    ("open", "llama", ALICE, None, ["llama"]),
    ("open", "fast", ALICE, None, ["llama"]),
    ("open", "LLAMA-3.1-8b", ALICE, None, ["llama"]),
    ("second", "fast", BOB, None, ["llama"]),
    ("open", "mixtral", BOB, 404, []),
    ("open", "nothing", ALICE, 404, []),
    ("second", "qwen", ALICE, 404, []),
    ("staff", "secret-model", ALICE, 403, []),
    ("nowhere", "llama", ALICE, 404, []),
]


@pytest.mark.parametrize(("cluster", "model_id", "who", "status", "ids"), ONE_MODEL)
def test_model_id_names_one_model_of_the_cluster(
    cluster: str, model_id: str, who: Identity, status: int | None, ids: list[str]
) -> None:
    answer = cluster_models(CATALOG, who, cluster, model_id)
    if status is None:
        assert isinstance(answer, list) and [m["id"] for m in answer] == ids
    else:
        assert isinstance(answer, ClientError) and answer.status == status
        assert "team only" not in answer.message


def test_v1_models_carry_the_same_metadata_and_an_alias_answers_with_the_real_id() -> None:
    listed = {m["id"]: m for m in model_list(CATALOG, ALICE)["data"]}
    assert listed["llama"] == {
        "id": "llama",
        "object": "model",
        "created": 0,
        "owned_by": "open",
        **PUBLIC,
        "aliases": ["fast", "Llama-3.1-8B"],
        "rate_limit_token_per_minute": 9000,
    }
    for name in ("llama", "fast", "Fast", "llama-3.1-8b"):
        assert model_entry(CATALOG, ALICE, name) == listed["llama"]
    refused = model_entry(CATALOG, BOB, "mixtral")
    assert isinstance(refused, ClientError) and refused.status == 404


def test_the_public_status_covers_only_clusters_open_to_everyone() -> None:
    assert [c.cluster_name for c in public_clusters(CATALOG)] == ["open", "second"]


def test_metadata_shown_is_a_copy_the_caller_cannot_change_the_catalog_through() -> None:
    shown = cluster_models(CATALOG, ALICE, "open", "llama")
    assert isinstance(shown, list)
    shown[0]["capabilities"]["streaming"] = False
    again = cluster_models(CATALOG, ALICE, "open", "llama")
    assert isinstance(again, list) and again[0]["capabilities"]["streaming"] is True


# -- selection and the body sent ----------------------------------------------------------

names = st.sampled_from(["llama", "fast", "Llama-3.1-8B", "FAST", "mixtral", "qwen"])
who = st.sampled_from([ALICE, BOB])
places = st.sampled_from([(None, None), ("open", "vllm"), ("second", "vllm"), ("open", "sglang")])


def _valid(model: str) -> Any:
    raw = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})
    return validate_request(CHAT, "application/json", raw.encode())


@given(names, who, places)
def test_selection_by_an_alias_is_selection_by_the_real_name(
    name: str, identity: Identity, place: tuple[str | None, str | None]
) -> None:
    cluster, framework = place
    chosen = select_endpoint(CATALOG, identity, _valid(name), cluster=cluster, framework=framework)
    if isinstance(chosen, ClientError):
        return
    again = select_endpoint(
        CATALOG, identity, _valid(chosen.model), cluster=cluster, framework=framework
    )
    assert again == chosen
    assert (
        name == chosen.model
        or name.casefold() == chosen.model.casefold()
        or any(name.casefold() == a.casefold() for a in chosen.aliases)
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
extras = st.dictionaries(
    st.text(max_size=8).filter(lambda k: k not in {"model", "messages", "stream"}),
    json_values,
    max_size=4,
)


def _forwarded(raw: bytes) -> CallAdaptor | None:
    machine = RequestMachine(CATALOG)
    machine.receive(
        RequestReceived(
            request_id="req-1",
            route=CHAT,
            body=raw,
            content_type="application/json",
            authorization="Bearer tok-anything",
        )
    )
    effects = machine.receive(IdentityResolved(identity=ALICE))
    calls = [e for e in effects if isinstance(e, CallAdaptor)]
    return calls[0] if calls else None


@given(st.sampled_from(["fast", "FAST", "Llama-3.1-8B", "llama"]), extras, st.booleans())
def test_the_body_sent_differs_from_the_clients_in_model_only(
    name: str, extra: dict[str, Any], spaced: bool
) -> None:
    client = {"model": name, "messages": [{"role": "user", "content": "hi"}], **extra}
    raw = json.dumps(client, indent=1 if spaced else None).encode()
    call = _forwarded(raw)
    assert call is not None
    if name == "llama":
        assert call.body == raw  # the real name: not one byte changed
    else:
        assert json.loads(call.body) == {**client, "model": "llama"}


def test_the_readme_s_endpoint_example_is_the_example_file_which_loads() -> None:
    root = Path(__file__).resolve().parent.parent
    blocks = re.findall(r"```json\n(.*?)```", (root / "README.md").read_text(), re.S)
    [shown] = [json.loads(b) for b in blocks if '"aliases"' in b and "endpoint_adapter" in b]
    examples = root / "fixtures" / "examples"
    assert [shown] == json.loads((examples / "endpoints.json").read_text())
    catalog = load(
        (examples / "clusters.json").read_text(), (examples / "endpoints.json").read_text()
    )
    [entry] = model_list(catalog, ALICE)["data"]
    assert entry["aliases"] == ["llama-3.1-8b"] and "api_url" not in entry
    assert catalog.serving("llama-3.1-8b") == catalog.endpoints
