"""The request machine at the graceful drain's deadline (`GatewayStopping`).

When `serve` stops, requests still running after the drain deadline end with an
OpenAI-shaped 503 `gateway_shutting_down`: a stream with an error event and a clean end,
a request still waiting for its answer with the error itself.  Either is logged as
what it was (503, not the 499 of a client that left) and settles what it reserved.
"""

from __future__ import annotations

import json

from core import (
    ChunkReceived,
    EndStream,
    GatewayStopping,
    IdentityResolved,
    RelayChunk,
    Reserved,
    Respond,
    Settle,
    StartStream,
    State,
    StreamOpened,
    WriteLog,
)
from tests.test_core_quota import admitted_machine
from tests.test_core_request_machine import ALICE, kinds, logs, relayed, request, run, sse_json

FIRST = b'data: {"id":"c1","choices":[{"delta":{"content":"He"}}]}\n\n'


def test_a_stream_at_the_deadline_ends_with_a_shutting_down_error_event() -> None:
    machine, effects = run(
        request(stream=True),
        IdentityResolved(identity=ALICE),
        StreamOpened(),
        ChunkReceived(data=FIRST),
        GatewayStopping(),
    )
    tail = [e for e in effects if isinstance(e, RelayChunk)][-1].data
    assert relayed(effects) == FIRST + tail
    error = sse_json(tail)["error"]
    assert (error["code"], error["type"]) == ("gateway_shutting_down", "api_error")
    assert "shutting down" in error["message"]
    assert tail.endswith(b"\n\n")
    assert kinds(effects)[-2:] == [EndStream, WriteLog]
    (log,) = logs(effects)
    assert (log.entry.status, log.entry.error_code, log.entry.cancelled) == (
        503,
        "gateway_shutting_down",
        False,
    )
    assert log.entry.stream is True
    assert log.entry.detail == "drain deadline passed"
    assert log.entry.bytes_out == len(FIRST + tail)
    assert machine.state is State.DONE


def test_a_stream_cut_mid_event_drops_the_fragment_before_the_error_event() -> None:
    _, effects = run(
        request(stream=True),
        IdentityResolved(identity=ALICE),
        StreamOpened(),
        ChunkReceived(data=FIRST + b'data: {"id'),
        GatewayStopping(),
    )
    tail = [e for e in effects if isinstance(e, RelayChunk)][-1].data
    assert relayed(effects) == FIRST + tail  # whole events only: no half an event
    assert sse_json(tail)["error"]["code"] == "gateway_shutting_down"


def test_a_request_still_waiting_for_its_answer_gets_a_503_with_retry_after() -> None:
    machine, effects = run(request(), IdentityResolved(identity=ALICE), GatewayStopping())
    (respond,) = [e for e in effects if isinstance(e, Respond)]
    assert respond.response.status == 503
    assert ("Retry-After", "1") in respond.response.headers
    assert json.loads(respond.response.body)["error"]["code"] == "gateway_shutting_down"
    (log,) = logs(effects)
    assert (log.entry.status, log.entry.error_code, log.entry.cancelled) == (
        503,
        "gateway_shutting_down",
        False,
    )
    assert machine.state is State.DONE


def test_a_stream_not_yet_open_gets_the_503_and_never_starts() -> None:
    _, effects = run(request(stream=True), IdentityResolved(identity=ALICE), GatewayStopping())
    assert StartStream not in kinds(effects)
    (respond,) = [e for e in effects if isinstance(e, Respond)]
    assert respond.response.status == 503


def test_a_cut_stream_settles_what_it_relayed_as_an_estimate() -> None:
    machine, reserve = admitted_machine(stream=True)
    machine.receive(Reserved())
    machine.receive(StreamOpened())
    machine.receive(ChunkReceived(data=b'data: {"choices": [{"delta": {"content": "Hi"}}]}\n\n'))
    effects = machine.receive(GatewayStopping())
    (settle,) = [e for e in effects if isinstance(e, Settle)]
    (log,) = logs(list(effects))
    assert log.entry.estimated
    assert 0 < settle.used < reserve.reservations[0].amount


def test_a_request_cut_before_its_answer_settles_at_zero() -> None:
    machine, _ = admitted_machine()
    machine.receive(Reserved())
    effects = machine.receive(GatewayStopping())
    (settle,) = [e for e in effects if isinstance(e, Settle)]
    assert settle.used == 0
    assert EndStream not in kinds(effects)
