"""The circuit breaker of one endpoint: stop sending calls to a backend that keeps failing.

Theory of operation
-------------------
Three states, on the kernel of `core/_machine.py`:

    CLOSED     calls flow; `failures` consecutive failures open the breaker
    OPEN       calls are refused until `cooldown` seconds after it opened
    HALF_OPEN  one call (the probe) went through to see whether the backend is back:
               its success closes the breaker, its failure opens it again

The driver tells the breaker what happened, each event carrying the driver's monotonic
clock reading `at` (the breaker never reads a clock): `Dispatched` before a call goes out
(answered by `Admitted` or `Refused`), then `Succeeded` or `Failed` when the call's fate
is known, or `Abandoned` when it never will be (the client left).  Outcomes that arrive
while OPEN belong to calls sent before it opened and change nothing.

Two rules keep the breaker live, so that it always re-closes once the backend recovers:
a probe whose outcome never comes (abandoned, or still hanging one cool-down later) does
not hold the half-open state forever, and the next call after that becomes the probe.

`view(at)` answers, without changing anything, what a `Dispatched` at `at` would get:
the balancer reads it to choose among endpoints, so the choice and the admission agree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs

from core._machine import Cell, Kernel, MachineState

__all__ = [
    "BREAKER_TABLE",
    "Abandoned",
    "Admitted",
    "Breaker",
    "BreakerEffect",
    "BreakerPolicy",
    "BreakerState",
    "BreakerView",
    "Dispatched",
    "Failed",
    "Refused",
    "Succeeded",
]


def _finite_non_negative(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{attribute.name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{attribute.name} must be finite and not negative, got {value!r}")


def _positive_int(instance: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be a whole number of at least 1, got {value!r}")


@attrs.frozen(kw_only=True)
class BreakerPolicy:
    """How many consecutive failures open a breaker, and how long it stays open."""

    failures: int = attrs.field(default=5, validator=_positive_int)
    cooldown: float = attrs.field(default=30.0, validator=_finite_non_negative)


class BreakerState(MachineState):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    ERROR = "error"


# -- events (time as data) ------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Dispatched:
    """A call to the endpoint is about to go out."""

    at: float = attrs.field(validator=_finite_non_negative)


@attrs.frozen(kw_only=True)
class Succeeded:
    """A call reached the backend and it answered (anything but a failure)."""

    at: float = attrs.field(validator=_finite_non_negative)


@attrs.frozen(kw_only=True)
class Failed:
    """A call failed as a sick backend fails: no connection, no answer in time, 502/503/504."""

    at: float = attrs.field(validator=_finite_non_negative)


@attrs.frozen(kw_only=True)
class Abandoned:
    """A call's outcome will never be known (the client left before it was)."""

    at: float = attrs.field(validator=_finite_non_negative)


# -- effects --------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Admitted:
    """The call may go out."""


@attrs.frozen(kw_only=True)
class Refused:
    """The call may not go out; `retry_after`: whole seconds until one may."""

    retry_after: int = attrs.field(validator=attrs.validators.ge(1))


BreakerEffect = Admitted | Refused


@attrs.frozen(kw_only=True)
class BreakerView:
    """What the breaker would do with a call now: its state, whether it would admit one,
    and (when not) in how many whole seconds it would."""

    state: BreakerState
    admits: bool
    retry_after: int = 0


B = BreakerState
BREAKER_TABLE: Mapping[tuple[BreakerState, type[Any]], Cell[BreakerState]] = {
    (B.CLOSED, Dispatched): Cell("_admit", B.CLOSED),
    (B.CLOSED, Succeeded): Cell("_on_success_closed", B.CLOSED),
    (B.CLOSED, Failed): Cell("_on_failure_closed", B.CLOSED, B.OPEN),
    (B.CLOSED, Abandoned): Cell("_ignore", B.CLOSED),
    (B.OPEN, Dispatched): Cell("_on_dispatch_tripped", B.OPEN, B.HALF_OPEN),
    (B.OPEN, Succeeded): Cell("_ignore", B.OPEN),
    (B.OPEN, Failed): Cell("_ignore", B.OPEN),
    (B.OPEN, Abandoned): Cell("_ignore", B.OPEN),
    (B.HALF_OPEN, Dispatched): Cell("_on_dispatch_probing", B.HALF_OPEN),
    (B.HALF_OPEN, Succeeded): Cell("_close", B.CLOSED),
    (B.HALF_OPEN, Failed): Cell("_trip", B.OPEN),
    (B.HALF_OPEN, Abandoned): Cell("_on_probe_abandoned", B.OPEN),
}

_Outcome = tuple[BreakerState, tuple[BreakerEffect, ...]]


# The answers a closed breaker gives on every request, made once (records are frozen).
_CLOSED_VIEW = BreakerView(state=B.CLOSED, admits=True)
_ADMITTED: tuple[BreakerEffect, ...] = (Admitted(),)


def _whole_seconds(seconds: float) -> int:
    return max(1, math.ceil(seconds))


class Breaker(Kernel[BreakerState, BreakerEffect]):
    """One endpoint's breaker; `receive` events, read `view(at)` and `state`."""

    TABLE = BREAKER_TABLE
    INITIAL = B.CLOSED
    ERROR = B.ERROR
    TERMINAL = frozenset()

    def __init__(self, policy: BreakerPolicy | None = None) -> None:
        super().__init__()
        self.policy = policy or BreakerPolicy()
        self.failures = 0  # consecutive, while CLOSED
        self.opened_at = 0.0  # when it last opened
        self.probe_at = 0.0  # when the half-open probe went out

    @property
    def passes(self) -> bool:
        """Whether a call may go out with no `Dispatched` told: a closed breaker admits
        every call and notes nothing of it (its table's cell), so the driver, which
        dispatches on every request, need neither make the event nor read the clock.
        (Likewise a `Succeeded` while closed with no failure counted changes nothing.)"""
        return self._state is B.CLOSED

    def reopens_at(self) -> float:
        """While OPEN: when the next call becomes a probe."""
        return self.opened_at + self.policy.cooldown

    def view(self, at: float) -> BreakerView:
        """What a `Dispatched` at `at` would get, with no change to the breaker."""
        state = self.state
        if state is B.CLOSED:
            return _CLOSED_VIEW
        if state is B.OPEN:
            free_at = self.reopens_at()
        elif state is B.HALF_OPEN:
            free_at = self.probe_at + self.policy.cooldown
        else:
            return BreakerView(state=state, admits=False, retry_after=1)
        if at >= free_at:
            return BreakerView(state=state, admits=True)
        return BreakerView(state=state, admits=False, retry_after=_whole_seconds(free_at - at))

    # -- handlers, one per cell -------------------------------------------------------

    def _admit(self, event: Dispatched) -> _Outcome:
        return self.state, _ADMITTED

    def _ignore(self, event: Any) -> _Outcome:
        return self.state, ()

    def _on_success_closed(self, event: Succeeded) -> _Outcome:
        self.failures = 0
        return B.CLOSED, ()

    def _on_failure_closed(self, event: Failed) -> _Outcome:
        self.failures += 1
        if self.failures >= self.policy.failures:
            return self._trip(event)
        return B.CLOSED, ()

    def _trip(self, event: Failed) -> _Outcome:
        self.failures = 0
        self.opened_at = event.at
        return B.OPEN, ()

    def _close(self, event: Succeeded) -> _Outcome:
        self.failures = 0
        return B.CLOSED, ()

    def _probe_or_refuse(self, event: Dispatched, free_at: float) -> _Outcome:
        if event.at >= free_at:
            self.probe_at = event.at
            return B.HALF_OPEN, _ADMITTED
        return self.state, (Refused(retry_after=_whole_seconds(free_at - event.at)),)

    def _on_dispatch_tripped(self, event: Dispatched) -> _Outcome:
        return self._probe_or_refuse(event, self.reopens_at())

    def _on_dispatch_probing(self, event: Dispatched) -> _Outcome:
        """A probe is out; another call goes only if the probe has hung a whole cool-down
        (its outcome may never come), and then it is the new probe."""
        return self._probe_or_refuse(event, self.probe_at + self.policy.cooldown)

    def _on_probe_abandoned(self, event: Abandoned) -> _Outcome:
        """The probe's outcome will never come: open again, but with the cool-down already
        served, so the very next call is the new probe."""
        self.opened_at = min(self.opened_at, event.at - self.policy.cooldown)
        return B.OPEN, ()
