"""The machine kernel, and the events and effects that cross it.

The kernel's promises: a table is checked when the machine class is made; an event a
state has no cell for, a handler choosing a state its cell forbids, and any exception a
handler raises all poison the machine (ERROR, LocalProtocolError chained to the cause),
after which every call refuses.  Events and effects refuse invalid values when built.
"""

from __future__ import annotations

import enum
import json
from typing import Any

import attrs
import pytest

from core import (
    AdaptorFailed,
    AdaptorReturned,
    Authenticate,
    CallAdaptor,
    Catalog,
    Cell,
    ChunkReceived,
    ClusterRecord,
    EndpointRecord,
    Identity,
    IdentityResolved,
    Kernel,
    LocalProtocolError,
    LogEntry,
    OpenAIRoute,
    RelayChunk,
    RequestMachine,
    RequestReceived,
    Response,
    Rule,
    StartStream,
    State,
    StreamEnded,
    StreamOpened,
    Usage,
    WriteLog,
)


class Light(enum.Enum):
    OFF = "off"
    ON = "on"
    BROKEN = "broken"
    ERROR = "error"


@attrs.frozen
class Flip:
    fail: bool = False


@attrs.frozen
class Smash:
    pass


class Switch(Kernel[Light, str]):
    TABLE = {
        (Light.OFF, Flip): Cell("_on_flip", Light.ON),
        (Light.ON, Flip): Cell("_off_flip", Light.OFF),
        (Light.ON, Smash): Cell("_smash", Light.BROKEN),
    }
    INITIAL = Light.OFF
    ERROR = Light.ERROR
    TERMINAL = frozenset({Light.BROKEN})

    def _on_flip(self, event: Flip) -> tuple[Light, tuple[str, ...]]:
        if event.fail:
            raise KeyError("the bulb is missing")
        return Light.ON, ("light",)

    def _off_flip(self, event: Flip) -> tuple[Light, tuple[str, ...]]:
        return Light.BROKEN, ()  # not what its cell allows

    def _smash(self, event: Smash) -> tuple[Light, tuple[str, ...]]:
        return Light.BROKEN, ("glass",)


def assert_poisoned(machine: Kernel[Any, Any]) -> None:
    assert machine.state is machine.ERROR
    for event in (Flip(), Smash()):
        with pytest.raises(LocalProtocolError, match="failed earlier"):
            machine.receive(event)


def test_a_cell_moves_the_machine_and_returns_the_handlers_effects() -> None:
    switch = Switch()
    assert switch.receive(Flip()) == ("light",)
    assert switch.state is Light.ON and not switch.finished
    assert switch.receive(Smash()) == ("glass",)
    assert switch.finished


def test_an_event_without_a_cell_poisons() -> None:
    switch = Switch()
    with pytest.raises(LocalProtocolError, match="Smash is not accepted in state OFF"):
        switch.receive(Smash())
    assert_poisoned(switch)


def test_a_handler_that_raises_poisons_and_the_cause_is_chained() -> None:
    switch = Switch()
    with pytest.raises(LocalProtocolError, match="_on_flip failed on Flip") as caught:
        switch.receive(Flip(fail=True))
    assert isinstance(caught.value.__cause__, KeyError)
    assert_poisoned(switch)


def test_a_handler_choosing_a_forbidden_state_poisons() -> None:
    switch = Switch()
    switch.receive(Flip())
    with pytest.raises(LocalProtocolError, match="led to BROKEN"):
        switch.receive(Flip())
    assert_poisoned(switch)


def _define(table: dict[Any, Any], terminal: frozenset[Light] = frozenset()) -> type[Any]:
    return type(
        "Bad",
        (Kernel,),
        {
            "TABLE": table,
            "INITIAL": Light.OFF,
            "ERROR": Light.ERROR,
            "TERMINAL": terminal,
            "_go": lambda self, event: (Light.ON, ()),
        },
    )


@pytest.mark.parametrize(
    ("table", "terminal", "message"),
    [
        ({(Light.OFF, Flip): Cell("_gone", Light.ON)}, frozenset(), "not a method"),
        ({(Light.BROKEN, Flip): Cell("_go", Light.ON)}, {Light.BROKEN}, "terminal"),
        ({(Light.ERROR, Flip): Cell("_go", Light.ON)}, frozenset(), "terminal"),
        ({(Light.OFF, Flip): Cell("_go", Light.ERROR)}, frozenset(), "only a failure"),
    ],
    ids=["typo", "terminal-row", "error-row", "error-target"],
)
def test_a_bad_table_fails_when_the_class_is_made(
    table: dict[Any, Any], terminal: frozenset[Light], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        _define(table, terminal)


def test_a_cell_needs_a_method_name_and_a_next_state() -> None:
    with pytest.raises(ValueError, match="method name"):
        Cell("not a name", Light.ON)
    with pytest.raises(ValueError, match="at least one"):
        Cell("_go")


# -- the request machine on the kernel -----------------------------------------------------

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
    [
        EndpointRecord(
            id="1",
            endpoint_slug="c-vllm-m",
            cluster="c",
            framework="vllm",
            model="m",
            endpoint_adapter="adaptors.endpoints.demo.DemoEndpoint",
        )
    ],
)
CHAT = json.dumps({"model": "m", "stream": True, "messages": [{"role": "user"}]}).encode()


def streaming_machine() -> RequestMachine:
    machine = RequestMachine(CATALOG)
    machine.receive(
        RequestReceived(
            request_id="r",
            route=OpenAIRoute.CHAT_COMPLETIONS,
            body=CHAT,
            authorization="Bearer k",
        )
    )
    machine.receive(IdentityResolved(identity=Identity(username="a@b.org")))
    machine.receive(StreamOpened())
    return machine


def test_a_usage_nested_200000_levels_deep_is_relayed_not_parsed() -> None:
    """The SSE monitor once raised RecursionError on this and the machine dropped the chunk
    without a log line; now the chunk is relayed, the stream ends cleanly, the log's usage
    is the gateway's own estimate (the deep `usage` was never parsed), and nothing blew
    the stack."""
    deep = b'data: {"usage": ' + b'{"a": ' * 200_000 + b"1" + b"}" * 200_000 + b"}\n\n"
    machine = streaming_machine()
    assert machine.receive(ChunkReceived(data=deep)) == (RelayChunk(data=deep),)
    machine.receive(ChunkReceived(data=b"data: [DONE]\n\n"))
    effects = machine.receive(StreamEnded())
    (log,) = [e for e in effects if isinstance(e, WriteLog)]
    assert (log.entry.status, log.entry.estimated) == (200, True)
    assert log.entry.usage == Usage(prompt_tokens=1, completion_tokens=1, total_tokens=2)
    assert machine.state is State.DONE


def test_usage_at_ordinary_depth_is_still_read() -> None:
    machine = streaming_machine()
    usage = b'data: {"choices": [], "usage": {"prompt_tokens": 3, "total_tokens": 5}}\n\n'
    machine.receive(ChunkReceived(data=usage))
    machine.receive(ChunkReceived(data=b"data: [DONE]\n\n"))
    (log,) = [e for e in machine.receive(StreamEnded()) if isinstance(e, WriteLog)]
    assert log.entry.usage == Usage(prompt_tokens=3, total_tokens=5)


def test_the_request_machine_is_poisoned_by_a_failing_handler() -> None:
    machine = streaming_machine()
    machine._monitor = None  # type: ignore[assignment]  # any failure inside will do
    with pytest.raises(LocalProtocolError, match="_on_chunk failed") as caught:
        machine.receive(ChunkReceived(data=b'data: {"usage": {}}\n\n'))
    assert isinstance(caught.value.__cause__, AttributeError)
    assert machine.state is State.ERROR
    with pytest.raises(LocalProtocolError):
        machine.receive(StreamEnded())


# -- events and effects refuse invalid values ----------------------------------------------

ALICE = Identity(username="alice@example.org")


@pytest.mark.parametrize(
    "build",
    [
        lambda: AdaptorFailed(status=99),
        lambda: AdaptorFailed(status=600),
        lambda: AdaptorReturned(error_code=0),
        lambda: AdaptorReturned(error_code=1000),
        lambda: AdaptorReturned(error_code=True),  # a bool is not a status
        lambda: AdaptorReturned(result=42),
        lambda: AdaptorReturned(headers=[("a",)]),
        lambda: AdaptorReturned(headers=[("a", 1)]),
        lambda: StartStream(status=42, headers=()),
        lambda: Response(status=700),
        lambda: Response(status=200, body="text"),
        lambda: LogEntry(request_id="r", route="x", status=1200),
        lambda: LogEntry(request_id="r", route="x", status=200, usage={"total_tokens": 1}),
        lambda: Usage(total_tokens=-1),
        lambda: IdentityResolved(identity=None),
        lambda: IdentityResolved(identity=ALICE, reason="expired"),
        lambda: IdentityResolved(identity=ALICE, refused_by=Rule.GROUP),
        lambda: IdentityResolved(identity=None, reason="expired", refused_by=Rule.GROUP),
        lambda: IdentityResolved(identity=None, reason="token abc expired"),
        lambda: RequestReceived(request_id="", route=OpenAIRoute.COMPLETIONS, body=b"{}"),
        lambda: RequestReceived(request_id="r", route="completions", body=b"{}"),
        lambda: RequestReceived(request_id="r", route=OpenAIRoute.COMPLETIONS, body="{}"),
        lambda: RequestReceived(
            request_id="r", route=OpenAIRoute.COMPLETIONS, body=b"{}", cluster="c"
        ),
        lambda: Authenticate(credentials=""),
        lambda: ChunkReceived(data="text"),
        lambda: CallAdaptor(
            endpoint_slug="s",
            route=OpenAIRoute.COMPLETIONS,
            request_id="r",
            stream=False,
            body={"model": "m"},
        ),
    ],
)
def test_an_invalid_event_or_effect_cannot_be_built(build: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        build()


def test_effects_hold_no_mutable_payload() -> None:
    """Every field of every effect is immutable: frozen records, bytes, str, tuples."""
    usage = Usage(total_tokens=1)
    effects = [
        CallAdaptor(
            endpoint_slug="s",
            route=OpenAIRoute.CHAT_COMPLETIONS,
            request_id="r",
            stream=False,
            body=CHAT,
        ),
        WriteLog(entry=LogEntry(request_id="r", route="x", status=200, usage=usage)),
        StartStream(status=200, headers=[("a", "b")]),
    ]

    def immutable(value: object) -> bool:
        if attrs.has(type(value)):
            return all(immutable(getattr(value, f.name)) for f in attrs.fields(type(value)))
        if isinstance(value, tuple):
            return all(immutable(v) for v in value)
        return isinstance(value, bytes | str | int | float | bool | enum.Enum | type(None))

    assert all(immutable(effect) for effect in effects)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        effects[0].body = b"{}"  # type: ignore[misc]
