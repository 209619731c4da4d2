"""The circuit breaker of one endpoint: its table, and the promises it keeps under any
sequence of outcomes and clock readings (hypothesis).

The promises: N consecutive failures open it; while open it admits nothing until its
cool-down has passed; what `view` says a call would get is what the call gets; and
whatever happened before, a backend that answers again closes it within one cool-down.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import (
    BREAKER_TABLE,
    Abandoned,
    Admitted,
    Breaker,
    BreakerPolicy,
    BreakerState,
    Dispatched,
    Failed,
    LocalProtocolError,
    Refused,
    Succeeded,
)

B = BreakerState
EVENT_TYPES = (Dispatched, Succeeded, Failed, Abandoned)

# Written out, not read from the implementation: (state, event) -> states it may lead to.
EXPECTED: dict[tuple[BreakerState, type[Any]], frozenset[BreakerState]] = {
    (B.CLOSED, Dispatched): frozenset({B.CLOSED}),
    (B.CLOSED, Succeeded): frozenset({B.CLOSED}),
    (B.CLOSED, Failed): frozenset({B.CLOSED, B.OPEN}),
    (B.CLOSED, Abandoned): frozenset({B.CLOSED}),
    (B.OPEN, Dispatched): frozenset({B.OPEN, B.HALF_OPEN}),
    (B.OPEN, Succeeded): frozenset({B.OPEN}),
    (B.OPEN, Failed): frozenset({B.OPEN}),
    (B.OPEN, Abandoned): frozenset({B.OPEN}),
    (B.HALF_OPEN, Dispatched): frozenset({B.HALF_OPEN}),
    (B.HALF_OPEN, Succeeded): frozenset({B.CLOSED}),
    (B.HALF_OPEN, Failed): frozenset({B.OPEN}),
    (B.HALF_OPEN, Abandoned): frozenset({B.OPEN}),
}


def test_the_table_is_the_expected_one() -> None:
    assert {key: cell.next_states for key, cell in BREAKER_TABLE.items()} == EXPECTED


def failing(breaker: Breaker, times: int, at: float) -> None:
    for _ in range(times):
        breaker.receive(Dispatched(at=at))
        breaker.receive(Failed(at=at))


def test_opens_after_the_configured_consecutive_failures_and_refuses_with_retry_after() -> None:
    breaker = Breaker(BreakerPolicy(failures=3, cooldown=10))
    failing(breaker, 2, at=1.0)
    breaker.receive(Succeeded(at=1.5))  # a success in between starts the count again
    failing(breaker, 2, at=2.0)
    assert breaker.state is B.CLOSED
    failing(breaker, 1, at=2.0)
    assert breaker.state is B.OPEN
    assert breaker.receive(Dispatched(at=4.5)) == (Refused(retry_after=8),)
    assert breaker.view(4.5).retry_after == 8


def test_a_breaker_passes_calls_without_events_exactly_while_closed() -> None:
    """`passes` is the CLOSED cell of Dispatched (admit, note nothing), for a driver that
    makes no event while nothing is wrong; in any other state it says no."""
    breaker = Breaker(BreakerPolicy(failures=2, cooldown=10))
    assert breaker.passes
    failing(breaker, 1, at=1.0)
    assert breaker.passes and breaker.state is B.CLOSED
    failing(breaker, 1, at=2.0)
    assert breaker.state is B.OPEN and not breaker.passes


def test_half_open_probe_closes_on_success_and_reopens_on_failure() -> None:
    breaker = Breaker(BreakerPolicy(failures=1, cooldown=5))
    failing(breaker, 1, at=0.0)
    assert breaker.receive(Dispatched(at=5.0)) == (Admitted(),)
    assert breaker.state is B.HALF_OPEN
    assert isinstance(breaker.receive(Dispatched(at=6.0))[0], Refused)  # one probe at a time
    breaker.receive(Failed(at=7.0))
    assert breaker.state is B.OPEN
    assert isinstance(breaker.receive(Dispatched(at=11.9))[0], Refused)  # a new cool-down
    assert breaker.receive(Dispatched(at=12.0)) == (Admitted(),)
    breaker.receive(Succeeded(at=12.5))
    assert breaker.state is B.CLOSED


def test_an_abandoned_probe_lets_the_next_call_probe_at_once() -> None:
    breaker = Breaker(BreakerPolicy(failures=1, cooldown=5))
    failing(breaker, 1, at=0.0)
    breaker.receive(Dispatched(at=5.0))
    breaker.receive(Abandoned(at=5.5))
    assert breaker.state is B.OPEN
    assert breaker.receive(Dispatched(at=5.6)) == (Admitted(),)


def test_time_must_be_a_finite_non_negative_number() -> None:
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="finite and not negative"):
            Dispatched(at=bad)
    with pytest.raises(ValueError, match="at least 1"):
        BreakerPolicy(failures=0)


def test_an_unknown_event_poisons_it() -> None:
    breaker = Breaker()
    with pytest.raises(LocalProtocolError):
        breaker.receive(object())
    assert breaker.state is B.ERROR
    with pytest.raises(LocalProtocolError):
        breaker.receive(Succeeded(at=0))


# -- properties ------------------------------------------------------------------------

steps = st.lists(
    st.tuples(
        st.sampled_from(EVENT_TYPES),
        st.floats(min_value=0, max_value=20, allow_nan=False, allow_infinity=False),
    ),
    max_size=60,
)
policies = st.builds(
    BreakerPolicy,
    failures=st.integers(min_value=1, max_value=5),
    cooldown=st.floats(min_value=0, max_value=30, allow_nan=False, allow_infinity=False),
)


@settings(max_examples=400, deadline=None)
@given(policy=policies, steps=steps)
def test_any_history_keeps_the_promises(
    policy: BreakerPolicy, steps: list[tuple[type[Any], float]]
) -> None:
    breaker = Breaker(policy)
    now = 0.0
    consecutive = 0
    cooling_until = -math.inf  # while OPEN: before this, nothing may be admitted
    for kind, elapsed in steps:
        now += elapsed
        before = breaker.state
        view = breaker.view(now)
        effects = breaker.receive(kind(at=now))
        after = breaker.state
        if kind is Dispatched:
            # What the balancer reads is what the call gets.
            assert view.admits == (effects == (Admitted(),))
            if not view.admits:
                assert effects == (Refused(retry_after=view.retry_after),)
            # Never admits while open before its cool-down.
            if before is B.OPEN and now < cooling_until:
                assert effects != (Admitted(),)
        else:
            assert effects == ()
        if before is B.CLOSED:
            consecutive = (
                consecutive + 1 if kind is Failed else 0 if kind is Succeeded else consecutive
            )
            # N consecutive failures open it, and nothing else does.
            assert (after is B.OPEN) == (consecutive >= policy.failures)
            if after is B.OPEN:
                consecutive = 0
        if after is B.OPEN and before is not B.OPEN:
            cooling_until = now + policy.cooldown if kind is Failed else -math.inf
        if after is B.CLOSED and before is not B.CLOSED:
            consecutive = 0
    # Recovery: one cool-down after anything, the backend answers and it closes.
    recovered_at = now + policy.cooldown
    assert breaker.receive(Dispatched(at=recovered_at)) == (Admitted(),)
    breaker.receive(Succeeded(at=recovered_at + 0.1))
    assert breaker.state is B.CLOSED
    assert breaker.view(recovered_at + 0.1).admits


@settings(max_examples=200, deadline=None)
@given(policy=policies, steps=steps, probes=st.integers(min_value=1, max_value=4))
def test_a_driver_that_calls_only_when_admitted_always_closes_it_once_the_backend_is_back(
    policy: BreakerPolicy, steps: list[tuple[type[Any], float]], probes: int
) -> None:
    breaker = Breaker(policy)
    now = 0.0
    for kind, elapsed in steps:
        now += elapsed
        breaker.receive(kind(at=now))
    # The backend is back.  Calls arrive every second; each admitted one succeeds.
    for _ in range(probes + math.ceil(policy.cooldown) + 2):
        now += 1.0
        if breaker.view(now).admits:
            breaker.receive(Dispatched(at=now))
            breaker.receive(Succeeded(at=now))
        if breaker.state is B.CLOSED:
            break
    assert breaker.state is B.CLOSED
