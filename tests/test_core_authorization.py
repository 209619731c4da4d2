"""Who may use what: the two levels of group and domain rules, and the endpoint
selection built on them.

`reference_allows` below is the rule written out as plainly as possible; the
properties check the core against it, for random identities and random rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import idna
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import (
    Allowed,
    Catalog,
    ClientError,
    ClusterRecord,
    Denied,
    EndpointRecord,
    Identity,
    Level,
    OpenAIRoute,
    Rule,
    ValidRequest,
    authorize,
    domain_allowed,
    select_endpoint,
)

# -- the rule, written plainly -----------------------------------------------------------


def reference_domain(username: str) -> str | None:
    """The part after the last `@`, lower-cased; None without `@` or with nothing after it."""
    if "@" not in username:
        return None
    after = username[username.rindex("@") + 1 :]
    if after == "":
        return None
    return after.lower()


HOSTNAME_CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789-_"


def reference_name(domain: str) -> str | None:
    """A domain as compared: lower-case, one trailing dot dropped, every label non-empty
    and made of hostname characters, non-ASCII names as their IDNA 2008 A-label; None
    for anything that is not a name."""
    name = domain.strip().lower()
    if name.endswith("."):
        name = name[: len(name) - 1]
    if name == "":
        return None
    if not all(ord(c) < 128 for c in name):
        try:
            return idna.encode(name, uts46=False).decode("ascii")
        except idna.IDNAError:
            return None
    for label in name.split("."):
        if label == "":
            return None
        for c in label:
            if c not in HOSTNAME_CHARACTERS:
                return None
    return name


def reference_domain_listed(domain: str, allowed_domains: Sequence[str]) -> bool:
    """Exactly listed, or under a `*.parent` entry (the parent itself is not)."""
    name = reference_name(domain)
    if name is None:
        return False
    for allowed in allowed_domains:
        allowed = allowed.strip()
        if allowed[:2] == "*.":
            parent = reference_name(allowed[2:])
            if parent is None or len(name) <= len(parent) + 1:
                continue
            if name[len(name) - len(parent) - 1 :] == "." + parent:
                return True
        elif reference_name(allowed) == name:
            return True
    return False


def reference_passes(
    identity: Identity, allowed_groups: Sequence[str], allowed_domains: Sequence[str]
) -> bool:
    """One level's rules: empty lists restrict nothing."""
    if len(allowed_groups) > 0:
        shares_a_group = False
        for group in allowed_groups:
            if group in identity.groups:
                shares_a_group = True
        if not shares_a_group:
            return False
    if len(allowed_domains) > 0:
        domain = reference_domain(identity.username)
        if domain is None:
            return False
        if not reference_domain_listed(domain, allowed_domains):
            return False
    return True


def reference_allows(identity: Identity, cluster: ClusterRecord, endpoint: EndpointRecord) -> bool:
    """The cluster's rules first, then the endpoint's: both must pass."""
    if not reference_passes(identity, cluster.allowed_globus_groups, cluster.allowed_domains):
        return False
    return reference_passes(identity, endpoint.allowed_globus_groups, endpoint.allowed_domains)


# -- strategies --------------------------------------------------------------------------

GROUPS = ["g1", "g2", "g3"]
DOMAINS = ["anl.gov", "ANL.gov", "Anl.Gov", "uchicago.edu", "UCHICAGO.EDU", "x.org"]
# Wildcards, subdomains, look-alikes and IDNA names: what the domain rule must get right.
TRICKY_DOMAINS = [
    "*.anl.gov",
    "cels.anl.gov",
    "CELS.ANL.gov",
    "a.b.anl.gov",
    "anl.gov.",
    "evil-anl.gov",
    "anl.gov.evil.com",
    "\u0430nl.gov",  # Cyrillic a
    "\uff41nl.gov",  # fullwidth a
    "anl.gov\u200b",  # zero-width space
    "anl..gov",
    "*.anl.gov.evil",
    "b\u00fccher.example",
    "B\u00dcCHER.example",
    "xn--bcher-kva.example",
    "*.b\u00fccher.example",
    "x.xn--bcher-kva.example",
]

group_sets = st.frozensets(st.sampled_from(GROUPS), max_size=3)
group_rules = st.lists(st.sampled_from(GROUPS), max_size=2)
domain_rules = st.lists(st.sampled_from(DOMAINS + TRICKY_DOMAINS), max_size=2)

usernames = st.one_of(
    st.sampled_from(["alice", "bob", ""]),  # no @ at all
    st.builds(
        lambda local, domain: f"{local}@{domain}",
        st.sampled_from(["alice", "b"]),
        st.sampled_from([*DOMAINS, *TRICKY_DOMAINS, ""]),
    ),
    # more than one @: the domain is after the last one
    st.builds(lambda domain: f"a@anl.gov@{domain}", st.sampled_from([*DOMAINS, ""])),
)
identities = st.builds(Identity, username=usernames, groups=group_sets)


def a_cluster(
    name: str = "c0",
    *,
    groups: Sequence[str] = (),
    domains: Sequence[str] = (),
    routes: Sequence[str] = ("chat/completions", "completions", "embeddings"),
    frameworks: Sequence[str] = ("vllm",),
) -> ClusterRecord:
    return ClusterRecord(
        id=name,
        cluster_name=name,
        cluster_adapter="adaptors.clusters.demo.DemoCluster",
        frameworks=frameworks,
        openai_endpoints=routes,
        allowed_globus_groups=groups,
        allowed_domains=domains,
    )


def an_endpoint(
    cluster: str,
    model: str,
    *,
    framework: str = "vllm",
    groups: Sequence[str] = (),
    domains: Sequence[str] = (),
) -> EndpointRecord:
    return EndpointRecord(
        id=f"{cluster}-{framework}-{model}",
        endpoint_slug=f"{cluster}-{framework}-{model}",
        cluster=cluster,
        framework=framework,
        model=model,
        endpoint_adapter="adaptors.endpoints.demo.DemoEndpoint",
        allowed_globus_groups=groups,
        allowed_domains=domains,
    )


clusters = st.builds(a_cluster, groups=group_rules, domains=domain_rules)
endpoints = st.builds(
    an_endpoint, st.just("c0"), st.just("m"), groups=group_rules, domains=domain_rules
)

ROUTES = [route.value for route in OpenAIRoute]
MODELS = ["m1", "m2", "m3"]


@st.composite
def catalogs(draw: st.DrawFn) -> Catalog:
    """Up to three clusters, each serving some of three models, with random rules."""
    cluster_records = []
    endpoint_records = []
    for index in range(draw(st.integers(min_value=1, max_value=3))):
        name = f"c{index}"
        cluster_records.append(
            a_cluster(
                name,
                groups=draw(group_rules),
                domains=draw(domain_rules),
                routes=draw(st.lists(st.sampled_from(ROUTES), unique=True, max_size=3)),
            )
        )
        for model in draw(st.lists(st.sampled_from(MODELS), unique=True, max_size=3)):
            endpoint_records.append(
                an_endpoint(name, model, groups=draw(group_rules), domains=draw(domain_rules))
            )
    order = draw(st.permutations(endpoint_records))  # fixture order is the operator's
    return Catalog.build(cluster_records, order)


def a_request(model: str, route: OpenAIRoute = OpenAIRoute.CHAT_COMPLETIONS) -> ValidRequest:
    return ValidRequest(route=route, model=model, stream=False, body={"model": model})


# -- the reference itself ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("username", "domain"),
    [
        ("alice@anl.gov", "anl.gov"),
        ("alice@ANL.Gov", "anl.gov"),
        ("a@b@Uchicago.edu", "uchicago.edu"),
        ("alice", None),
        ("alice@", None),
        ("", None),
        ("@anl.gov", "anl.gov"),
    ],
)
def test_reference_domain_and_identity_domain_agree(username: str, domain: str | None) -> None:
    assert reference_domain(username) == domain
    assert Identity(username=username).domain == domain


@pytest.mark.parametrize(
    ("domain", "allowed", "listed"),
    [
        ("example.org", ["example.org"], True),
        ("EXAMPLE.ORG", ["example.org"], True),
        ("example.org.", ["Example.Org"], True),
        ("evil-example.org", ["example.org"], False),
        ("example.org.evil.com", ["example.org"], False),
        ("\u0435xample.org", ["example.org"], False),  # Cyrillic e
        ("\uff45xample.org", ["example.org"], False),  # fullwidth e
        ("exampIe.org", ["example.org"], False),
        ("example.org\u200b", ["example.org"], False),
        ("physics.example.org", ["example.org"], False),
        ("physics.example.org", ["*.example.org"], True),
        ("a.physics.example.org", ["*.example.org"], True),
        ("example.org", ["*.example.org"], False),
        ("evil-example.org", ["*.example.org"], False),
        ("xample.org", ["*.example.org"], False),
        ("*.example.org", ["*.example.org"], False),
        ("b\u00fccher.example", ["xn--bcher-kva.example"], True),
        ("xn--bcher-kva.example", ["B\u00dccher.example"], True),
        ("buecher.example", ["b\u00fccher.example"], False),
    ],
)
def test_domain_rules_table(domain: str, allowed: list[str], listed: bool) -> None:
    assert reference_domain_listed(domain, allowed) is listed
    assert domain_allowed(domain, allowed) is listed


# -- properties --------------------------------------------------------------------------


@given(identity=identities, cluster=clusters, endpoint=endpoints)
def test_authorize_allows_exactly_what_the_reference_allows(
    identity: Identity, cluster: ClusterRecord, endpoint: EndpointRecord
) -> None:
    decision = authorize(identity, cluster, endpoint)
    assert isinstance(decision, Allowed) == reference_allows(identity, cluster, endpoint)
    if isinstance(decision, Denied):
        cluster_refuses = not reference_passes(
            identity, cluster.allowed_globus_groups, cluster.allowed_domains
        )
        assert decision.level is (Level.CLUSTER if cluster_refuses else Level.ENDPOINT)
        assert decision.name == (
            cluster.cluster_name if cluster_refuses else endpoint.endpoint_slug
        )


@given(identity=identities, cluster=clusters, endpoint=endpoints)
def test_a_denial_names_the_broken_rule_and_never_the_allowed_values(
    identity: Identity, cluster: ClusterRecord, endpoint: EndpointRecord
) -> None:
    decision = authorize(identity, cluster, endpoint)
    if isinstance(decision, Denied):
        level = cluster if decision.level is Level.CLUSTER else endpoint
        groups_ok = reference_passes(identity, level.allowed_globus_groups, ())
        assert decision.rule is (Rule.DOMAIN if groups_ok else Rule.GROUP)
        for secret in [*GROUPS, *DOMAINS, *TRICKY_DOMAINS]:
            assert secret.lower() not in decision.message.lower()


def endpoints_the_reference_allows(
    catalog: Catalog, identity: Identity, request: ValidRequest
) -> list[EndpointRecord]:
    allowed = []
    for endpoint in catalog.endpoints:
        cluster = catalog.cluster_of(endpoint)
        if (
            endpoint.model == request.model
            and request.route.value in cluster.openai_endpoints
            and reference_allows(identity, cluster, endpoint)
        ):
            allowed.append(endpoint)
    return allowed


@given(
    catalog=catalogs(),
    identity=identities,
    model=st.sampled_from([*MODELS, "unknown"]),
    route=st.sampled_from(list(OpenAIRoute)),
)
def test_plain_route_selection_agrees_with_the_reference(
    catalog: Catalog, identity: Identity, model: str, route: OpenAIRoute
) -> None:
    request = a_request(model, route)
    chosen = select_endpoint(catalog, identity, request)
    allowed = endpoints_the_reference_allows(catalog, identity, request)
    if allowed:
        # the first one the caller may use, in fixture order
        assert chosen == allowed[0]
    else:
        assert isinstance(chosen, ClientError)
        assert chosen.status in (400, 403, 404)
    if isinstance(chosen, EndpointRecord):
        assert reference_allows(identity, catalog.cluster_of(chosen), chosen)


@given(
    catalog=catalogs(),
    identity=identities,
    model=st.sampled_from([*MODELS, "unknown"]),
    route=st.sampled_from(list(OpenAIRoute)),
    cluster=st.sampled_from(["c0", "c1", "c2", "nowhere"]),
)
def test_alcf_route_selection_agrees_with_the_reference(
    catalog: Catalog, identity: Identity, model: str, route: OpenAIRoute, cluster: str
) -> None:
    request = a_request(model, route)
    chosen = select_endpoint(catalog, identity, request, cluster=cluster, framework="vllm")
    allowed = [
        e
        for e in endpoints_the_reference_allows(catalog, identity, request)
        if e.cluster == cluster
    ]
    if allowed:
        assert chosen == allowed[0]
    else:
        assert isinstance(chosen, ClientError)
        assert chosen.status in (400, 403, 404)


# -- the ALCF route, case by case --------------------------------------------------------

SECRET_GROUP = "5f0c1b2e-group-secret"
SECRET_ENDPOINT_GROUP = "9a8b7c6d-endpoint-group"

CATALOG = Catalog.build(
    [
        a_cluster("sophia", groups=[SECRET_GROUP], routes=["chat/completions", "completions"]),
        a_cluster("polaris", frameworks=["vllm", "sglang"]),
        a_cluster("metis", domains=["anl.gov"], frameworks=["api"], routes=["chat/completions"]),
    ],
    [
        an_endpoint("polaris", "open-model"),
        an_endpoint("polaris", "group-model", groups=[SECRET_ENDPOINT_GROUP]),
        an_endpoint("polaris", "domain-model", domains=["uchicago.edu"]),
        an_endpoint("polaris", "fast-model", framework="sglang"),
        an_endpoint("sophia", "sophia-model"),
        an_endpoint("metis", "metis-model", framework="api"),
    ],
)
SECRETS = [SECRET_GROUP, SECRET_ENDPOINT_GROUP, "anl.gov", "uchicago.edu"]

OUTSIDER = Identity(username="eve@example.com")
NO_DOMAIN = Identity(username="dave")
INSIDER = Identity(username="alice@ANL.gov", groups={SECRET_GROUP, SECRET_ENDPOINT_GROUP})
UCHICAGO = Identity(username="carol@UChicago.edu")


def select_on(
    cluster: str,
    framework: str,
    model: str,
    identity: Identity = OUTSIDER,
    route: OpenAIRoute = OpenAIRoute.CHAT_COMPLETIONS,
) -> EndpointRecord | ClientError:
    return select_endpoint(
        CATALOG, identity, a_request(model, route), cluster=cluster, framework=framework
    )


def test_unknown_cluster_is_404_cluster_not_found() -> None:
    result = select_on("aurora", "vllm", "open-model")
    assert isinstance(result, ClientError)
    assert (result.status, result.code) == (404, "cluster_not_found")
    assert "aurora" in result.message


def test_framework_not_on_the_cluster_is_400_naming_the_supported_ones() -> None:
    result = select_on("polaris", "llama.cpp", "open-model")
    assert isinstance(result, ClientError)
    assert result.status == 400
    assert "llama.cpp" in result.message
    assert "vllm" in result.message and "sglang" in result.message


def test_route_not_on_the_cluster_is_400_naming_the_supported_ones() -> None:
    result = select_on("sophia", "vllm", "sophia-model", INSIDER, OpenAIRoute.EMBEDDINGS)
    assert isinstance(result, ClientError)
    assert result.status == 400
    assert "embeddings" in result.message
    assert "chat/completions" in result.message and "completions" in result.message


def test_unknown_model_is_404_listing_only_models_the_caller_may_use() -> None:
    result = select_on("polaris", "vllm", "no-such-model")
    assert isinstance(result, ClientError)
    assert (result.status, result.code, result.param) == (404, "model_not_found", "model")
    assert "open-model" in result.message
    assert "group-model" not in result.message
    assert "domain-model" not in result.message
    assert "fast-model" not in result.message  # another framework: not callable here


def test_unknown_model_listing_grows_with_the_callers_rights() -> None:
    result = select_on("polaris", "vllm", "no-such-model", UCHICAGO)
    assert isinstance(result, ClientError)
    assert "open-model" in result.message and "domain-model" in result.message
    assert "group-model" not in result.message


def test_plain_route_unknown_model_lists_only_usable_models_everywhere() -> None:
    result = select_endpoint(CATALOG, NO_DOMAIN, a_request("no-such-model"))
    assert isinstance(result, ClientError)
    assert (result.status, result.code) == (404, "model_not_found")
    for usable in ["open-model", "fast-model"]:
        assert usable in result.message
    for hidden in ["group-model", "domain-model", "sophia-model", "metis-model"]:
        assert hidden not in result.message


def test_model_is_matched_case_insensitively_and_the_real_record_returned() -> None:
    result = select_on("polaris", "vllm", "Open-Model")
    assert isinstance(result, EndpointRecord)
    assert result.model == "open-model"


def test_cluster_denial_is_403_even_when_the_endpoint_is_unrestricted() -> None:
    result = select_on("sophia", "vllm", "sophia-model")
    assert isinstance(result, ClientError)
    assert (result.status, result.code, result.type) == (
        403,
        "permission_denied",
        "permission_error",
    )
    assert "sophia" in result.message
    sophia, endpoint = CATALOG.cluster("sophia"), CATALOG.endpoint("sophia-vllm-sophia-model")
    assert sophia is not None and endpoint is not None
    assert endpoint.allowed_globus_groups == () and endpoint.allowed_domains == ()
    decision = authorize(OUTSIDER, sophia, endpoint)
    assert isinstance(decision, Denied) and decision.level is Level.CLUSTER


def test_cluster_denial_comes_before_the_framework_and_model_checks() -> None:
    # An outsider learns nothing about what a closed cluster runs.
    for framework, model in [("nope", "sophia-model"), ("vllm", "no-such-model")]:
        result = select_on("sophia", framework, model)
        assert isinstance(result, ClientError)
        assert result.status == 403


def test_endpoint_denial_is_403() -> None:
    result = select_on("polaris", "vllm", "group-model")
    assert isinstance(result, ClientError)
    assert result.status == 403
    assert "polaris-vllm-group-model" in result.message


@pytest.mark.parametrize(
    ("cluster", "framework", "model", "allowed"),
    [
        ("polaris", "vllm", "open-model", True),  # no domain rule anywhere
        ("polaris", "sglang", "fast-model", True),
        ("metis", "api", "metis-model", False),  # cluster restricts domains
        ("polaris", "vllm", "domain-model", False),  # endpoint restricts domains
    ],
)
def test_a_user_without_domain_is_refused_only_where_domains_are_restricted(
    cluster: str, framework: str, model: str, allowed: bool
) -> None:
    result = select_on(cluster, framework, model, NO_DOMAIN)
    if allowed:
        assert isinstance(result, EndpointRecord) and result.model == model
    else:
        assert isinstance(result, ClientError) and result.status == 403


def test_domains_compare_case_insensitively() -> None:
    result = select_on("metis", "api", "metis-model", INSIDER)  # alice@ANL.gov
    assert isinstance(result, EndpointRecord)


@pytest.mark.parametrize(
    ("cluster", "framework", "model", "identity"),
    [
        ("sophia", "vllm", "sophia-model", OUTSIDER),
        ("sophia", "vllm", "sophia-model", NO_DOMAIN),
        ("metis", "api", "metis-model", OUTSIDER),
        ("metis", "api", "metis-model", NO_DOMAIN),
        ("polaris", "vllm", "group-model", UCHICAGO),
        ("polaris", "vllm", "domain-model", OUTSIDER),
    ],
)
def test_a_403_never_shows_the_allowed_groups_or_domains(
    cluster: str, framework: str, model: str, identity: Identity
) -> None:
    result = select_on(cluster, framework, model, identity)
    assert isinstance(result, ClientError) and result.status == 403
    shown: Any = result.message + repr(result.param) + repr(result.code)
    for secret in SECRETS:
        assert secret.lower() not in shown.lower()
