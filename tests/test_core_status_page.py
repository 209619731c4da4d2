"""What the status page shows and to whom (`core._status_page`): the public view never
names a restricted model, a caller sees what they may use, and the figures are the
medians and throughput of the samples given."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import (
    Catalog,
    ClusterRecord,
    EndpointRecord,
    Figures,
    Identity,
    ModelState,
    Sample,
    endpoint_figures,
    public_endpoints,
    remaining_tokens,
    status_summary,
    usable_endpoints,
    visible_endpoints,
)


def _cluster(name: str, **rules: Any) -> ClusterRecord:
    return ClusterRecord(
        id=name, cluster_name=name, cluster_adapter="a", frameworks=("vllm",), **rules
    )


def _endpoint(cluster: str, model: str, **rules: Any) -> EndpointRecord:
    return EndpointRecord(
        id=f"{cluster}-{model}",
        endpoint_slug=f"{cluster}-vllm-{model}",
        cluster=cluster,
        framework="vllm",
        model=model,
        endpoint_adapter="a",
        **rules,
    )


GROUPS = {"allowed_globus_groups": ("g-physics",)}
DOMAINS = {"allowed_domains": ("example.org",)}


@pytest.mark.parametrize(
    ("cluster_rules", "endpoint_rules", "public"),
    [
        ({}, {}, True),
        (GROUPS, {}, False),
        (DOMAINS, {}, False),
        ({}, GROUPS, False),
        ({}, DOMAINS, False),
        (GROUPS, DOMAINS, False),
    ],
)
def test_only_endpoints_without_any_rule_are_public(
    cluster_rules: dict[str, Any], endpoint_rules: dict[str, Any], public: bool
) -> None:
    catalog = Catalog.build(
        [_cluster("c", **cluster_rules)], [_endpoint("c", "m", **endpoint_rules)]
    )
    assert bool(public_endpoints(catalog)) is public
    assert visible_endpoints(catalog, None) == public_endpoints(catalog)


RULES = st.sampled_from([{}, GROUPS, DOMAINS])
IDENTITIES = st.sampled_from(
    [
        Identity(username="alice@example.org", groups=frozenset({"g-physics"})),
        Identity(username="bob@elsewhere.net"),
        Identity(username="carol@example.org"),
    ]
)


@st.composite
def catalogs(draw: st.DrawFn) -> Catalog:
    clusters = [_cluster(f"c{i}", **draw(RULES)) for i in range(draw(st.integers(1, 3)))]
    endpoints = [
        _endpoint(cluster.cluster_name, f"m{i}", **draw(RULES))
        for cluster in clusters
        for i in range(draw(st.integers(0, 3)))
    ]
    return Catalog.build(clusters, endpoints)


def _summary(catalog: Catalog, identity: Identity | None) -> dict[str, Any]:
    endpoints = visible_endpoints(catalog, identity)
    return status_summary(
        catalog,
        endpoints,
        states={},
        figures={},
        window_seconds=900,
        identity=identity,
        usage={} if identity else None,
        remaining={},
        usage_since="2026-11-25T00:00:00+00:00" if identity else None,
    )


@given(catalogs())
def test_a_visitor_without_a_key_is_never_shown_a_restricted_endpoint(catalog: Catalog) -> None:
    text = json.dumps(_summary(catalog, None))
    public = set(public_endpoints(catalog))
    for endpoint in catalog.endpoints:
        assert (f'"{endpoint.endpoint_slug}"' in text) is (endpoint in public)
    assert '"usage"' not in text and "remaining" not in text


@given(catalogs(), IDENTITIES)
def test_a_caller_sees_exactly_what_they_may_use(catalog: Catalog, identity: Identity) -> None:
    summary = _summary(catalog, identity)
    shown = [m["endpoint_slug"] for c in summary["clusters"] for m in c["models"]]
    assert sorted(shown) == sorted(e.endpoint_slug for e in usable_endpoints(catalog, identity))
    assert summary["user"] == identity.username


def test_states_figures_usage_and_quota_land_on_their_model() -> None:
    catalog = Catalog.build(
        [_cluster("a"), _cluster("b")],
        [_endpoint("a", "m1", tpm_user=1000), _endpoint("b", "m2", tpm_user=0)],
    )
    alice = Identity(username="alice")
    figures = Figures(
        requests=3, latency_p50=0.25, first_token_p50=None, output_tokens_per_second=42.04
    )
    summary = status_summary(
        catalog,
        catalog.endpoints,
        states={"a-vllm-m1": ModelState.QUEUED},
        figures={"a-vllm-m1": figures},
        window_seconds=60,
        identity=alice,
        usage={"m1": {"requests": 2, "total_tokens": 30}},
        remaining={"a-vllm-m1": 970, "b-vllm-m2": None},
        usage_since="2026-11-25T00:00:00+00:00",
    )
    [a, b] = summary["clusters"]
    [m1], [m2] = a["models"], b["models"]
    assert (m1["state"], m2["state"]) == ("queued", "unknown")
    assert m1["figures"] == {
        "requests": 3,
        "latency_p50_seconds": 0.25,
        "first_token_p50_seconds": None,
        "output_tokens_per_second": 42.0,
    }
    assert m2["figures"]["requests"] == 0
    assert m1["usage"] == {"requests": 2, "total_tokens": 30}
    assert m2["usage"]["requests"] == 0
    assert (m1["tokens_per_minute_per_user"], m1["remaining_tokens_per_minute"]) == (1000, 970)
    assert (m2["tokens_per_minute_per_user"], m2["remaining_tokens_per_minute"]) == (None, None)


def test_without_a_request_log_there_are_no_figures() -> None:
    catalog = Catalog.build([_cluster("a")], [_endpoint("a", "m")])
    summary = status_summary(catalog, catalog.endpoints, states={}, figures=None, window_seconds=9)
    assert summary["request_log"] is False
    assert summary["clusters"][0]["models"][0]["figures"] is None


def _sample(latency: float, **extra: Any) -> Sample:
    return Sample(slug="E", latency=latency, generating=extra.pop("generating", latency), **extra)


@pytest.mark.parametrize(
    ("samples", "latency", "first_token", "throughput"),
    [
        ([_sample(1.0)], 1.0, None, None),
        ([_sample(3.0), _sample(1.0), _sample(2.0)], 2.0, None, None),
        ([_sample(1.0), _sample(4.0)], 2.5, None, None),
        (
            [
                _sample(2.0, first_token=0.5, generating=1.5, output_tokens=30),
                _sample(1.0, output_tokens=10),
                _sample(9.0),  # no tokens reported: not in the throughput
            ],
            2.0,
            0.5,
            40 / 2.5,
        ),
        ([_sample(0.0, output_tokens=5)], 0.0, None, None),  # no time: no rate
    ],
)
def test_figures_are_medians_and_token_weighted_throughput(
    samples: list[Sample], latency: float, first_token: float | None, throughput: float | None
) -> None:
    figures = endpoint_figures(samples)
    assert figures == {
        "e": Figures(
            requests=len(samples),
            latency_p50=latency,
            first_token_p50=first_token,
            output_tokens_per_second=throughput,
        )
    }


def test_a_negative_duration_cannot_be_a_sample() -> None:
    with pytest.raises(ValueError, match="latency"):
        Sample(slug="e", latency=-1.0, generating=0.0)
    with pytest.raises(ValueError, match="first_token"):
        Sample(slug="e", latency=1.0, first_token=-0.1, generating=0.0)


@pytest.mark.parametrize(
    ("tpm_user", "capacity", "used", "left"),
    [
        (1000, 1000, 0, 1000),
        (1000, 1000, 250, 750),
        (1000, 500, 700, 0),  # over (a reservation larger than what it settled to): none
        (1000, None, 10, None),  # quotas not counted
        (1000, 1000, None, None),  # the counter could not be read
        (0, 0, 0, None),  # the limit is off
    ],
)
def test_remaining_tokens(
    tpm_user: int, capacity: int | None, used: int | None, left: int | None
) -> None:
    assert remaining_tokens(_endpoint("c", "m", tpm_user=tpm_user), capacity, used) == left
