"""The kernel every machine of the core stands on: one table, one way in, one way to fail.

Theory of operation
-------------------
A machine is a state enum plus one table keyed by (state, event type).  Each cell names
the method that handles that event in that state and the states it may lead to:

    TABLE = {
        (State.IDLE, Started): Cell("_on_start", State.RUNNING),
        (State.RUNNING, Finished): Cell("_on_finish", State.DONE, State.FAILED),
    }

`Kernel.receive(event)` looks the cell up, calls the handler, checks the state it chose
is one the cell allows, moves there and returns the handler's effects.  A missing cell
means the event is not accepted in that state.  Handlers never branch on the state:
when an event means different things in different states, each state gets its own cell.

Whatever goes wrong inside -- an event the state does not accept, a handler choosing a
state its cell forbids, or any exception a handler raises -- poisons the machine, as
h11 does: the state becomes the machine's error state, the caller gets a
`LocalProtocolError` (chained to the cause), and every later `receive` raises too.  A
machine that exists is therefore always in a state its table can explain.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Generic, TypeVar

import attrs

from core._errors import LocalProtocolError

__all__ = ["Cell", "Kernel", "MachineState"]


class MachineState(enum.Enum):
    """The base of a machine's state enum: members hash by identity (C's `object.__hash__`)
    instead of `Enum.__hash__`, a Python call that hashes the member's name.  A machine
    looks its state up in its table, its cell's next states and its terminal set on every
    event (about twenty times a request); members are singletons and compare by identity,
    so the lookups find the same cells."""

    __hash__ = object.__hash__


StateT = TypeVar("StateT", bound=enum.Enum)
EffectT = TypeVar("EffectT")
# A handler as the class holds it: (machine, event) -> (next state, effects).
_Handler = Callable[[Any, Any], tuple[Any, tuple[Any, ...]]]


def _states(value: tuple[Any, ...]) -> frozenset[Any]:
    return frozenset(value)


@attrs.frozen(init=False)
class Cell(Generic[StateT]):
    """One (state, event type) entry: the handler's name and the states it may lead to."""

    handler: str
    next_states: frozenset[StateT]

    def __init__(self, handler: str, *next_states: StateT) -> None:
        if not handler.isidentifier():
            raise ValueError(f"a cell's handler must be a method name, got {handler!r}")
        if not next_states:
            raise ValueError(f"cell {handler!r} must allow at least one next state")
        self.__attrs_init__(handler=handler, next_states=frozenset(next_states))


class Kernel(Generic[StateT, EffectT]):
    """The base of a machine: subclasses set the class attributes and write the handlers.

    `TABLE` maps (state, event type) to a `Cell`; `INITIAL` is the first state, `ERROR`
    the poisoned one and `TERMINAL` the states that accept nothing more.  The table is
    checked when the subclass is created, so a typo in a handler name or a terminal state
    with a row fails at import, not on the first request that reaches it.
    """

    TABLE: ClassVar[Mapping[tuple[Any, type[Any]], Cell[Any]]]
    INITIAL: ClassVar[Any]
    ERROR: ClassVar[Any]
    TERMINAL: ClassVar[frozenset[Any]]
    _cells: ClassVar[Mapping[tuple[Any, type[Any]], tuple[_Handler, Cell[Any]]]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for (state, event_type), cell in cls.TABLE.items():
            where = f"{cls.__name__}.TABLE[{state.name}, {event_type.__name__}]"
            if not callable(getattr(cls, cell.handler, None)):
                raise TypeError(f"{where} names {cell.handler!r}, which is not a method")
            if state in cls.TERMINAL or state is cls.ERROR:
                raise TypeError(f"{where}: {state.name} is terminal and must accept nothing")
            if cls.ERROR in cell.next_states:
                raise TypeError(f"{where}: only a failure may lead to {cls.ERROR.name}")
        # The table as `receive` reads it: each cell with its handler's function, looked
        # up once here rather than by name (and bound) on every event.
        cls._cells = {key: (getattr(cls, cell.handler), cell) for key, cell in cls.TABLE.items()}

    def __init__(self) -> None:
        self._state: StateT = self.INITIAL

    @property
    def state(self) -> StateT:
        return self._state

    @property
    def finished(self) -> bool:
        return self._state in self.TERMINAL

    def accepts(self, event_type: type[Any]) -> bool:
        """Whether the current state has a cell for this kind of event."""
        return (self._state, event_type) in self.TABLE

    def receive(self, event: Any) -> tuple[EffectT, ...]:
        """Advance on one event; the effects are the driver's to carry out, in order."""
        if self._state is self.ERROR:
            name = type(self).__name__
            raise LocalProtocolError(f"the {name} failed earlier and accepts nothing")
        found = self._cells.get((self._state, type(event)))
        if found is None:
            refused_in, self._state = self._state, self.ERROR
            raise LocalProtocolError(
                f"{type(event).__name__} is not accepted in state {refused_in.name}"
            )
        handler, cell = found
        try:
            next_state, effects = handler(self, event)
        except Exception as exc:
            failed_in, self._state = self._state, self.ERROR
            raise LocalProtocolError(
                f"{type(self).__name__}.{cell.handler} failed on {type(event).__name__} in "
                f"state {failed_in.name}: {type(exc).__name__}"
            ) from exc
        if next_state not in cell.next_states:
            self._state = self.ERROR
            raise LocalProtocolError(
                f"{type(event).__name__} led to {next_state.name}, which the table does not "
                f"allow from {cell.handler}"
            )
        self._state = next_state
        return effects
