"""Choosing among several endpoints of one model (hypothesis), and the request machine's
one retry on another endpoint when a call failed before any byte reached the client.

The promises: the choice is always an endpoint the caller may use (both levels of
rules), among those whose breaker admits a call and whose model is not stopped or queued,
the one with the fewest outstanding calls; with none left, an immediate 503 with
`Retry-After` that names each endpoint's state.  A retry goes to another endpoint, at
most once, and never after a stream started.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from core import (
    AdaptorFailed,
    AdaptorReturned,
    AssessHealth,
    BackendError,
    BreakerState,
    CallAdaptor,
    Catalog,
    ChunkReceived,
    ClusterRecord,
    EndpointHealth,
    EndpointRecord,
    HealthAssessed,
    Identity,
    IdentityResolved,
    Limit,
    ModelState,
    OpenAIRoute,
    QuotaExceeded,
    QuotaPolicy,
    Refusal,
    Release,
    RequestMachine,
    RequestReceived,
    Reservation,
    Reserve,
    Reserved,
    Respond,
    Settle,
    State,
    StreamOpened,
    WriteLog,
    choose,
    model_state,
    permitted_candidates,
)
from tests.test_core_authorization import reference_allows

CHAT = OpenAIRoute.CHAT_COMPLETIONS
GROUPS = ["g1", "g2", "g3"]


def cluster(name: str, groups: tuple[str, ...] = ()) -> ClusterRecord:
    return ClusterRecord(
        id=name,
        cluster_name=name,
        cluster_adapter="adaptors.clusters.demo.DemoCluster",
        frameworks=["vllm"],
        openai_endpoints=["chat/completions"],
        allowed_globus_groups=groups,
    )


def endpoint(on: str, model: str = "m", groups: tuple[str, ...] = ()) -> EndpointRecord:
    return EndpointRecord(
        id=f"{on}-{model}",
        endpoint_slug=f"{on}-vllm-{model}",
        cluster=on,
        framework="vllm",
        model=model,
        endpoint_adapter="adaptors.endpoints.demo.DemoEndpoint",
        allowed_globus_groups=groups,
    )


def healthy(slug: str, outstanding: int = 0, **fields: Any) -> EndpointHealth:
    return EndpointHealth(slug=slug, outstanding=outstanding, **fields)


OPEN = {"breaker": BreakerState.OPEN, "admits": False, "retry_after": 7}

# -- choose, by example -----------------------------------------------------------------

A, B, C = endpoint("a"), endpoint("b"), endpoint("c")


def test_equal_loads_take_turns_from_the_driver_s_counter() -> None:
    idle = [healthy(e.endpoint_slug) for e in (A, B, C)]
    chosen = [choose([A, B, C], HealthAssessed(endpoints=idle, turn=t)) for t in range(4)]
    assert chosen == [A, B, C, A]


def test_the_least_loaded_healthy_endpoint_is_chosen_ties_in_fixture_order() -> None:
    health = HealthAssessed(
        endpoints=[
            healthy(A.endpoint_slug, 3),
            healthy(B.endpoint_slug, 1),
            healthy(C.endpoint_slug, 1),
        ]
    )
    assert choose([A, B, C], health) == B


def test_an_open_breaker_or_a_stopped_model_is_passed_over() -> None:
    health = HealthAssessed(
        endpoints=[
            healthy(A.endpoint_slug, 0, **OPEN),
            healthy(B.endpoint_slug, 0, model_state=ModelState.STOPPED),
            healthy(C.endpoint_slug, 9),
        ]
    )
    assert choose([A, B, C], health) == C


def test_nothing_healthy_is_an_immediate_503_naming_each_state_with_retry_after() -> None:
    health = HealthAssessed(
        endpoints=[
            healthy(A.endpoint_slug, **OPEN),
            healthy(B.endpoint_slug, model_state=ModelState.QUEUED, status_retry_after=4),
        ]
    )
    refusal = choose([A, B], health)
    assert isinstance(refusal, BackendError)
    assert refusal.status == 503
    assert refusal.code == "model_unavailable"
    assert ("retry-after", "4") in refusal.headers
    assert "circuit breaker is open" in refusal.message
    assert "queued on cluster 'b'" in refusal.message


def test_a_stopped_model_alone_says_so_in_its_code() -> None:
    health = HealthAssessed(
        endpoints=[healthy(A.endpoint_slug, model_state=ModelState.STOPPED, status_retry_after=10)]
    )
    refusal = choose([A], health)
    assert isinstance(refusal, BackendError)
    assert (refusal.status, refusal.code) == (503, "model_stopped")
    assert "stopped on cluster 'a'" in refusal.message
    assert ("retry-after", "10") in refusal.headers


def test_model_state_reads_the_seed_jobs_shape() -> None:
    jobs = {
        "running": [{"Models": "Up", "Framework": "vllm", "Cluster": "a"}],
        "queued": [{"Models": "starting", "Framework": "vllm", "Cluster": "a"}],
        "stopped": [{"Models": "down", "Framework": "vllm", "Cluster": "a"}, {"Models": "up"}],
    }
    assert model_state(jobs, "up") is ModelState.RUNNING  # running wins, case-insensitively
    assert model_state(jobs, "starting") is ModelState.QUEUED
    assert model_state(jobs, "down") is ModelState.STOPPED
    assert model_state(jobs, "elsewhere") is ModelState.UNKNOWN
    assert model_state(None, "up") is ModelState.UNKNOWN


# -- choose, as properties ----------------------------------------------------------------

rules = st.lists(st.sampled_from(GROUPS), max_size=2, unique=True).map(tuple)


@st.composite
def situations(draw: st.DrawFn) -> tuple[Catalog, Identity, HealthAssessed]:
    count = draw(st.integers(min_value=1, max_value=6))
    clusters = [cluster(f"c{i}", draw(rules)) for i in range(count)]
    endpoints = [endpoint(f"c{i}", "m", draw(rules)) for i in range(count)]
    endpoints.append(endpoint("c0", "other"))  # another model, always idle: never chosen
    catalog = Catalog.build(clusters, endpoints)
    identity = Identity(username="u@x.org", groups=set(draw(rules)))
    entries = [
        EndpointHealth(
            slug=e.endpoint_slug,
            outstanding=0 if e.model == "other" else draw(st.integers(0, 5)),
            admits=draw(st.booleans()),
            breaker=draw(st.sampled_from(list(BreakerState)[:3])),
            retry_after=draw(st.integers(0, 60)),
            model_state=draw(st.sampled_from(list(ModelState))),
        )
        for e in endpoints
    ]
    return catalog, identity, HealthAssessed(endpoints=entries, turn=draw(st.integers(0, 9)))


@settings(max_examples=300, deadline=None)
@given(situation=situations())
def test_choice_is_a_least_loaded_permitted_healthy_one_or_a_503(
    situation: tuple[Catalog, Identity, HealthAssessed],
) -> None:
    catalog, identity, health = situation
    permitted = [
        e for e in catalog.serving("m") if reference_allows(identity, catalog.cluster_of(e), e)
    ]
    if not permitted:
        return  # selection answers 403/404 before anything is chosen
    candidates = permitted_candidates(catalog, identity, permitted[0], CHAT, pinned=False)
    assert list(candidates) == permitted  # never one the caller may not use
    chosen = choose(candidates, health)
    usable = [
        e
        for e in permitted
        if health.of(e.endpoint_slug).admits
        and health.of(e.endpoint_slug).model_state not in (ModelState.STOPPED, ModelState.QUEUED)
    ]
    if not usable:
        assert isinstance(chosen, BackendError)
        assert chosen.status == 503
        assert int(dict(chosen.headers)["retry-after"]) >= 1
        return
    assert isinstance(chosen, EndpointRecord)
    assert chosen in usable
    assert reference_allows(identity, catalog.cluster_of(chosen), chosen)
    least = min(health.of(e.endpoint_slug).outstanding for e in usable)
    assert health.of(chosen.endpoint_slug).outstanding == least


# -- the request machine: choosing and the one retry ---------------------------------------

CATALOG = Catalog.build([cluster("a"), cluster("b"), cluster("c")], [A, B, C])
ALICE = Identity(username="alice@x.org")


def a_request(*, stream: bool = False, pinned: bool = False) -> RequestReceived:
    payload: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        payload["stream"] = True
    return RequestReceived(
        request_id="req-1",
        route=CHAT,
        body=json.dumps(payload).encode(),
        content_type="application/json",
        authorization="Bearer tok",
        cluster="b" if pinned else None,
        framework="vllm" if pinned else None,
    )


def all_healthy(effect: Any, **loads: int) -> HealthAssessed:
    assert isinstance(effect, AssessHealth)
    return HealthAssessed(endpoints=[healthy(s, loads.get(s[0], 0)) for s in effect.slugs])


def started(stream: bool = False, pinned: bool = False) -> tuple[RequestMachine, Any]:
    machine = RequestMachine(CATALOG, balanced=True)
    machine.receive(a_request(stream=stream, pinned=pinned))
    (ask,) = machine.receive(IdentityResolved(identity=ALICE))
    assert machine.state is State.CHOOSING
    return machine, ask


def test_the_machine_asks_about_every_permitted_endpoint_and_calls_the_least_loaded() -> None:
    machine, ask = started()
    assert ask == AssessHealth(slugs=(A.endpoint_slug, B.endpoint_slug, C.endpoint_slug))
    (call,) = machine.receive(all_healthy(ask, a=2, b=0, c=1))
    assert isinstance(call, CallAdaptor)
    assert call.endpoint_slug == B.endpoint_slug


def test_a_route_that_names_a_cluster_has_one_candidate() -> None:
    _, ask = started(pinned=True)
    assert ask == AssessHealth(slugs=(B.endpoint_slug,))


def test_a_lone_candidate_the_driver_has_cleared_is_called_without_asking() -> None:
    """The driver's set of endpoints with nothing against them spares a lone candidate in
    it the AssessHealth round trip; several candidates, or a lone one not in it, still
    ask."""
    cleared = {B.endpoint_slug}
    machine = RequestMachine(CATALOG, balanced=True, cleared=cleared)
    machine.receive(a_request(pinned=True))
    (call,) = machine.receive(IdentityResolved(identity=ALICE))
    assert isinstance(call, CallAdaptor) and call.endpoint_slug == B.endpoint_slug
    assert machine.state is State.AWAITING_RESULT
    machine.receive(AdaptorFailed(status=502, detail="refused"))
    assert machine.state is State.DONE  # one candidate: nowhere else to retry
    cleared.clear()  # the set is read when the machine chooses, not when it is made
    unvouched = RequestMachine(CATALOG, balanced=True, cleared=cleared)
    unvouched.receive(a_request(pinned=True))
    (ask,) = unvouched.receive(IdentityResolved(identity=ALICE))
    assert ask == AssessHealth(slugs=(B.endpoint_slug,))
    everyone = {e.endpoint_slug for e in CATALOG.endpoints}
    several = RequestMachine(CATALOG, balanced=True, cleared=everyone)
    several.receive(a_request())
    (ask,) = several.receive(IdentityResolved(identity=ALICE))
    assert isinstance(ask, AssessHealth) and len(ask.slugs) == 3


def test_a_refused_connection_is_retried_once_on_another_endpoint() -> None:
    machine, ask = started()
    (first,) = machine.receive(all_healthy(ask))
    effects = machine.receive(AdaptorReturned(error_message="could not connect", error_code=502))
    assert machine.state is State.CHOOSING
    (again,) = effects
    assert first.endpoint_slug not in again.slugs
    (second,) = machine.receive(all_healthy(again))
    assert second.endpoint_slug != first.endpoint_slug
    assert second.body == first.body
    # The second failure is final: no third try.
    effects = machine.receive(AdaptorFailed(status=504, detail="timed out"))
    assert machine.state is State.DONE
    (respond, log) = effects
    assert isinstance(respond, Respond) and respond.response.status == 504
    assert isinstance(log, WriteLog) and log.entry.endpoint_slug == second.endpoint_slug
    assert log.entry.detail is not None
    assert f"after {first.endpoint_slug} failed (502)" in log.entry.detail


def test_the_retry_finds_nothing_healthy_and_the_first_failure_stands() -> None:
    machine, ask = started()
    machine.receive(all_healthy(ask))
    (again,) = machine.receive(AdaptorFailed(status=502, detail="reset"))
    closed = HealthAssessed(endpoints=[healthy(s, **OPEN) for s in again.slugs])
    effects = machine.receive(closed)
    assert machine.state is State.DONE
    assert isinstance(effects[0], Respond) and effects[0].response.status == 502


def test_a_backend_answer_that_is_not_a_failure_is_never_retried() -> None:
    machine, ask = started()
    machine.receive(all_healthy(ask))
    machine.receive(AdaptorReturned(error_message='{"error": {"message": "no"}}', error_code=400))
    assert machine.state is State.DONE


def test_a_stream_that_failed_to_open_is_retried_but_one_that_started_never_is() -> None:
    machine, ask = started(stream=True)
    machine.receive(all_healthy(ask))
    (again,) = machine.receive(AdaptorReturned(error_message="unavailable", error_code=503))
    machine.receive(all_healthy(again))
    assert machine.state is State.AWAITING_STREAM
    machine.receive(StreamOpened())
    machine.receive(ChunkReceived(data=b'data: {"id": "x"}\n\n'))
    machine.receive(AdaptorFailed(status=502, detail="reset mid-stream"))
    assert machine.state is State.DONE


def test_an_unbalanced_machine_keeps_the_old_flow() -> None:
    machine = RequestMachine(CATALOG)
    machine.receive(a_request())
    (call,) = machine.receive(IdentityResolved(identity=ALICE))
    assert isinstance(call, CallAdaptor) and call.endpoint_slug == A.endpoint_slug
    machine.receive(AdaptorFailed(status=502, detail="refused"))
    assert machine.state is State.DONE


# -- the retry's quota: counted where the call goes -----------------------------------------

LIMITED = [attrs.evolve(e, tpm_model=10_000, tpm_user=1_000) for e in (A, B, C)]
LIMITED_CATALOG = Catalog.build([cluster("a"), cluster("b"), cluster("c")], LIMITED)


def started_with_quota() -> tuple[RequestMachine, CallAdaptor]:
    machine = RequestMachine(
        LIMITED_CATALOG, QuotaPolicy(requests_per_minute_per_user=10), balanced=True
    )
    machine.receive(a_request())
    (ask,) = machine.receive(IdentityResolved(identity=ALICE))
    (reserve,) = machine.receive(all_healthy(ask))
    assert isinstance(reserve, Reserve)
    (call,) = machine.receive(Reserved())
    assert isinstance(call, CallAdaptor)
    return machine, call


def token_keys(reservations: tuple[Reservation, ...]) -> set[str]:
    return {r.key for r in reservations if r.limit.counts_tokens}


def test_a_retry_gives_back_what_the_failed_endpoint_held_and_reserves_where_it_goes() -> None:
    machine, first = started_with_quota()
    (again,) = machine.receive(AdaptorFailed(status=502, detail="reset"))
    release, reserve = machine.receive(all_healthy(again))
    assert isinstance(release, Release) and isinstance(reserve, Reserve)
    assert machine.state is State.ADMITTING
    assert f"tpm_model:{first.endpoint_slug}" in release.keys
    (second,) = [k.split(":")[1] for k in token_keys(reserve.reservations) if "tpm_model" in k]
    assert second != first.endpoint_slug
    (call,) = machine.receive(Reserved())
    assert isinstance(call, CallAdaptor) and call.endpoint_slug == second
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    answer = json.dumps({"choices": [], "usage": usage}).encode()
    _, settle, log = machine.receive(AdaptorReturned(result=answer))
    assert isinstance(settle, Settle) and settle.used == 5
    assert set(settle.keys) == token_keys(reserve.reservations)
    assert isinstance(log, WriteLog) and log.entry.endpoint_slug == second


def test_a_retry_whose_endpoint_has_no_room_does_not_go_and_the_first_failure_stands() -> None:
    machine, first = started_with_quota()
    (again,) = machine.receive(AdaptorFailed(status=502, detail="reset"))
    machine.receive(all_healthy(again))
    effects = machine.receive(
        QuotaExceeded(refusal=Refusal(limit=Limit.USER_TOKENS, retry_after=9))
    )
    assert machine.state is State.DONE
    respond, log = effects  # nothing held any more: nothing to settle
    assert isinstance(respond, Respond) and respond.response.status == 502
    assert isinstance(log, WriteLog) and log.entry.endpoint_slug == first.endpoint_slug
