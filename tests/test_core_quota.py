"""Quota admission in the core: what a request reserves, and the ledger's promises.

The ledger is checked against a reference model written out here (a plain list of what
each reservation holds and when it was made), for any interleaving of reserve, settle,
release and the passing of time: it admits exactly when everything fits in the sliding
minute, all or nothing, and never leaves a limit over capacity by admitting.
"""

from __future__ import annotations

import gc
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from core import (
    WINDOW_MS,
    ClientError,
    EndpointRecord,
    Identity,
    Ledger,
    Limit,
    QuotaPolicy,
    Refusal,
    Reservation,
    estimate_prompt_tokens,
    plan,
    quota_refusal,
)

KEYS = ("a", "b", "c")
CAPACITY = {"a": 10, "b": 25, "c": 3}


def reservation(key: str, amount: int) -> Reservation:
    return Reservation(limit=Limit.USER_TOKENS, key=key, amount=amount, capacity=CAPACITY[key])


class LedgerAgainstAModel(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.ledger = Ledger()
        self.now = 1_000_000
        self.model: list[dict[str, Any]] = []  # {"id", "key", "at", "amount"}
        self.ids = 0

    def held(self, key: str) -> int:
        horizon = self.now - WINDOW_MS
        return sum(e["amount"] for e in self.model if e["key"] == key and e["at"] > horizon)

    @rule(
        keys=st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique=True),
        amount=st.integers(0, 12),
    )
    def reserve(self, keys: list[str], amount: int) -> None:
        self.ids += 1
        rid = f"r{self.ids}"
        fits = all(self.held(k) + amount <= CAPACITY[k] for k in keys)
        before = {k: self.ledger.used(k, self.now) for k in KEYS}
        refusal = self.ledger.reserve(rid, [reservation(k, amount) for k in keys], self.now)
        assert (refusal is None) == fits
        if refusal is None:
            self.model.extend({"id": rid, "key": k, "at": self.now, "amount": amount} for k in keys)
            for k in keys:
                assert self.ledger.used(k, self.now) <= CAPACITY[k], "admitted beyond the limit"
        else:
            first = next(k for k in keys if self.held(k) + amount > CAPACITY[k])
            assert refusal.limit is Limit.USER_TOKENS
            assert 1 <= refusal.retry_after <= WINDOW_MS // 1000
            assert {k: self.ledger.used(k, self.now) for k in KEYS} == before, "not all-or-none"
            assert self.held(first) + amount > CAPACITY[first]

    @precondition(lambda self: self.model)
    @rule(data=st.data(), used=st.integers(0, 15))
    def settle(self, data: st.DataObject, used: int) -> None:
        rid = data.draw(st.sampled_from(sorted({e["id"] for e in self.model})))
        keys = [e["key"] for e in self.model if e["id"] == rid]
        self.ledger.settle(rid, keys, used)
        for entry in self.model:
            if entry["id"] == rid:
                entry["amount"] = used

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        rid = data.draw(st.sampled_from(sorted({e["id"] for e in self.model})))
        keys = [e["key"] for e in self.model if e["id"] == rid]
        self.ledger.release(rid, keys)
        self.model = [e for e in self.model if e["id"] != rid]

    @rule(ms=st.sampled_from([1, 999, 15_000, WINDOW_MS - 1, WINDOW_MS, WINDOW_MS + 1]))
    def time_passes(self, ms: int) -> None:
        self.now += ms
        self.model = [e for e in self.model if e["at"] > self.now - WINDOW_MS]

    @invariant()
    def the_ledger_holds_what_the_model_holds(self) -> None:
        for key in KEYS:
            assert self.ledger.used(key, self.now) == self.held(key)


TestLedger = LedgerAgainstAModel.TestCase


def test_fifty_of_two_hundred_fit_a_limit_of_fifty() -> None:
    ledger = Ledger()
    wanted = [Reservation(limit=Limit.USER_REQUESTS, key="u", amount=1, capacity=50)]
    answers = [ledger.reserve(f"r{i}", wanted, 0) for i in range(200)]
    assert answers.count(None) == 50
    assert all(isinstance(a, Refusal) and a.retry_after == 60 for a in answers[50:])


def test_retry_after_is_when_enough_of_the_window_frees() -> None:
    ledger = Ledger()
    wanted = [reservation("a", 6)]
    assert ledger.reserve("first", wanted, 0) is None
    refusal = ledger.reserve("second", wanted, 20_500)
    assert refusal == Refusal(limit=Limit.USER_TOKENS, retry_after=40)  # at 60 s, ceil
    assert ledger.reserve("third", wanted, WINDOW_MS + 1) is None


def test_settling_gives_back_what_was_not_used() -> None:
    ledger = Ledger()
    assert ledger.reserve("r1", [reservation("a", 9)], 0) is None
    assert ledger.reserve("r2", [reservation("a", 9)], 0) is not None
    ledger.settle("r1", ["a"], 2)
    assert ledger.reserve("r2", [reservation("a", 8)], 0) is None


def test_a_minute_of_reservations_gives_the_garbage_collector_nothing_to_walk() -> None:
    """A busy process holds a minute of entries (three per request: some hundred thousand
    at a thousand requests a second); if the collector tracked each, or walked each as
    part of a container it tracks, every full collection would visit them all while
    every request waits.  What it visits is the tracked objects and their referents."""

    def visited() -> int:
        tracked = gc.get_objects()
        return len(tracked) + len(gc.get_referents(*tracked))

    ledger = Ledger()
    wanted = [reservation("b", 1)]
    gc.collect()
    before = visited()
    for n in range(5000):
        assert ledger.reserve(f"r{n}", wanted, n) is None
        ledger.settle(f"r{n}", ["b"], 0)
    gc.collect()
    # Other threads' objects come and go meanwhile; one visit per entry would be 5,000.
    assert visited() - before < 500
    assert ledger.used("b", 5000) == 0


# -- what a request reserves -----------------------------------------------------------------


def endpoint(tpm_model: int = 1000, tpm_user: int = 100) -> EndpointRecord:
    return EndpointRecord(
        id="1",
        endpoint_slug="c-vllm-m",
        cluster="c",
        framework="vllm",
        model="m",
        endpoint_adapter="adaptors.endpoints.demo.DemoEndpoint",
        tpm_model=tpm_model,
        tpm_user=tpm_user,
    )


ADA = Identity(username="ada@example.org")
BODY = {"model": "m", "messages": [{"role": "user", "content": "x" * 40}], "max_tokens": 50}


def test_a_request_reserves_its_prompt_and_max_tokens_on_both_token_limits() -> None:
    wanted = plan(endpoint(), ADA, BODY, QuotaPolicy())
    assert [(r.limit, r.key, r.amount, r.capacity) for r in wanted] == [
        (Limit.MODEL_TOKENS, "tpm_model:c-vllm-m", 60, 1000),
        (Limit.USER_TOKENS, "tpm_user:c-vllm-m:ada@example.org", 60, 100),
    ]


def test_zero_disables_a_limit_and_the_request_limit_comes_from_the_policy() -> None:
    wanted = plan(endpoint(0, 0), ADA, BODY, QuotaPolicy(requests_per_minute_per_user=5))
    assert [(r.limit, r.key, r.amount) for r in wanted] == [
        (Limit.USER_REQUESTS, "rpm_user:ada@example.org", 1)
    ]
    assert plan(endpoint(0, 0), ADA, BODY, QuotaPolicy()) == ()


def test_without_max_tokens_the_policy_default_is_reserved() -> None:
    body = {"model": "m", "prompt": "abcd"}
    (model, _) = plan(endpoint(), ADA, body, QuotaPolicy(default_max_tokens=300))
    assert model.amount == 1 + 300
    (embedding, _) = plan(endpoint(), ADA, {"input": "abcd" * 4}, QuotaPolicy(), embeddings=True)
    assert embedding.amount == 4


@pytest.mark.parametrize(
    ("body", "tokens"),
    [
        ({"messages": [{"role": "user", "content": "12345678"}]}, 2),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "12345"}]}]}, 2),
        ({"messages": [{"role": "user", "content": [{"image_url": {"url": "x" * 999}}]}]}, 1),
        ({"prompt": [1, 2, 3]}, 3),
        ({"input": ""}, 1),
    ],
)
def test_prompt_estimates(body: dict[str, Any], tokens: int) -> None:
    assert estimate_prompt_tokens(body) == tokens


def test_the_429_names_the_limit_and_says_when_to_retry() -> None:
    wanted = plan(endpoint(), ADA, BODY, QuotaPolicy())
    error = quota_refusal(Refusal(limit=Limit.USER_TOKENS, retry_after=7), wanted, "m")
    assert isinstance(error, ClientError)
    assert (error.status, error.code, error.type) == (429, "rate_limit_exceeded", "tokens")
    assert "tpm_user" in error.message and "limit 100" in error.message
    assert ("retry-after", "7") in error.headers



def test_the_429_under_workers_counting_apart_names_the_limit_the_operator_set() -> None:
    """Three workers without Redis each hold a third of 100; the client is told 100."""
    wanted = plan(endpoint(), ADA, BODY, QuotaPolicy(shares=3, share_index=0))
    assert [r.capacity for r in wanted if r.limit is Limit.USER_TOKENS] == [34]
    error = quota_refusal(Refusal(limit=Limit.USER_TOKENS, retry_after=7), wanted, "m")
    assert "limit 100." in error.message and "34" not in error.message

# -- the request machine with quotas ---------------------------------------------------------

from core import (  # noqa: E402
    AdaptorReturned,
    CallAdaptor,
    Catalog,
    ChunkReceived,
    ClientDisconnected,
    ClusterRecord,
    IdentityResolved,
    OpenAIRoute,
    QuotaExceeded,
    Release,
    RequestMachine,
    RequestReceived,
    Reserve,
    Reserved,
    Respond,
    Settle,
    State,
    StreamEnded,
    StreamOpened,
    Usage,
    WriteLog,
)

CATALOG = Catalog.build(
    [
        ClusterRecord(
            id="1",
            cluster_name="c",
            cluster_adapter="adaptors.clusters.demo.DemoCluster",
            frameworks=["vllm"],
            openai_endpoints=["chat/completions"],
        )
    ],
    [endpoint()],
)


def admitted_machine(stream: bool = False) -> tuple[RequestMachine, Reserve]:
    machine = RequestMachine(CATALOG, QuotaPolicy(requests_per_minute_per_user=10))
    body = {**BODY, "stream": stream}
    machine.receive(
        RequestReceived(
            request_id="req-9",
            route=OpenAIRoute.CHAT_COMPLETIONS,
            body=json.dumps(body).encode(),
            authorization="Bearer k",
        )
    )
    (reserve,) = machine.receive(IdentityResolved(identity=ADA))
    assert isinstance(reserve, Reserve) and machine.state is State.ADMITTING
    return machine, reserve


def test_the_call_waits_for_the_reservation_then_settles_with_the_real_usage() -> None:
    machine, reserve = admitted_machine()
    assert [r.limit for r in reserve.reservations] == [
        Limit.MODEL_TOKENS,
        Limit.USER_TOKENS,
        Limit.USER_REQUESTS,
    ]
    (call,) = machine.receive(Reserved())
    assert isinstance(call, CallAdaptor)
    answer = (
        b'{"id": "x", "choices": [], '
        b'"usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}}'
    )
    respond, settle, log = machine.receive(AdaptorReturned(result=answer))
    assert isinstance(respond, Respond) and isinstance(log, WriteLog)
    # The request count stays spent; the token reservations become what was used.
    assert settle == Settle(
        reservation_id="req-9",
        keys=("tpm_model:c-vllm-m", "tpm_user:c-vllm-m:ada@example.org"),
        used=12,
    )
    assert (log.entry.usage, log.entry.estimated) == (
        Usage(prompt_tokens=7, completion_tokens=5, total_tokens=12),
        False,
    )


def test_a_refused_reservation_is_a_429_with_no_call_and_nothing_to_settle() -> None:
    machine, _ = admitted_machine()
    effects = machine.receive(
        QuotaExceeded(refusal=Refusal(limit=Limit.USER_TOKENS, retry_after=9))
    )
    respond, log = effects
    assert isinstance(respond, Respond)
    assert respond.response.status == 429
    assert ("retry-after", "9") in respond.response.headers
    assert b'"rate_limit_exceeded"' in respond.response.body
    assert (log.entry.status, log.entry.error_code, log.entry.detail) == (
        429,
        "rate_limit_exceeded",
        "tpm_user",
    )
    assert machine.state is State.DONE


def test_a_client_leaving_while_admission_is_pending_releases_everything() -> None:
    machine, reserve = admitted_machine()
    release, log = machine.receive(ClientDisconnected())
    assert release == Release(
        reservation_id="req-9", keys=tuple(r.key for r in reserve.reservations)
    )
    assert isinstance(log, WriteLog) and log.entry.cancelled


def test_a_stream_settles_with_the_usage_of_its_last_chunk() -> None:
    machine, _ = admitted_machine(stream=True)
    machine.receive(Reserved())
    machine.receive(StreamOpened())
    machine.receive(ChunkReceived(data=b'data: {"choices": [], "usage": {"total_tokens": 31}}\n\n'))
    machine.receive(ChunkReceived(data=b"data: [DONE]\n\n"))
    effects = machine.receive(StreamEnded())
    (settle,) = [e for e in effects if isinstance(e, Settle)]
    assert settle.used == 31


def test_an_abandoned_stream_settles_with_an_estimate_and_says_so() -> None:
    machine, reserve = admitted_machine(stream=True)
    machine.receive(Reserved())
    machine.receive(StreamOpened())
    machine.receive(ChunkReceived(data=b'data: {"choices": [{"delta": {"content": "Hi"}}]}\n\n'))
    effects = machine.receive(ClientDisconnected())
    (settle,) = [e for e in effects if isinstance(e, Settle)]
    (log,) = [e for e in effects if isinstance(e, WriteLog)]
    # The prompt from its text (40 characters: 10 tokens), one token per relayed event.
    assert log.entry.estimated
    assert log.entry.usage == Usage(prompt_tokens=10, completion_tokens=1, total_tokens=11)
    assert settle.used == 11 < reserve.reservations[0].amount


def test_a_backend_failure_settles_at_zero() -> None:
    machine, _ = admitted_machine()
    machine.receive(Reserved())
    effects = machine.receive(AdaptorReturned(error_message="boom", error_code=503))
    (settle,) = [e for e in effects if isinstance(e, Settle)]
    assert settle.used == 0


@given(limit=st.integers(min_value=0, max_value=10**9), shares=st.integers(1, 64))
def test_processes_counting_apart_hold_parts_that_add_up_to_the_limit(
    limit: int, shares: int
) -> None:
    parts = [QuotaPolicy(shares=shares, share_index=i).part(limit) for i in range(shares)]
    assert sum(parts) == limit
    assert max(parts) - min(parts) <= 1


def test_a_process_whose_part_is_nothing_admits_none() -> None:
    policy = QuotaPolicy(requests_per_minute_per_user=1, shares=2, share_index=1)
    reservations = plan(endpoint(tpm_model=0, tpm_user=0), ADA, {"model": "m"}, policy)
    assert [r.capacity for r in reservations] == [0]
    refusal = Ledger().reserve("r1", reservations, now_ms=0)
    assert refusal is not None and refusal.limit is Limit.USER_REQUESTS


def test_a_share_index_must_name_one_of_the_shares() -> None:
    with pytest.raises(ValueError, match="share_index 2 is not below shares 2"):
        QuotaPolicy(shares=2, share_index=2)
