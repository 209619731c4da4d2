"""Running a cassette's client requests through a real `Gateway` answering from records."""

from __future__ import annotations

from pathlib import Path

import attrs

from core import OpenAIRoute
from frontends.assembly import assemble, catalog_of, read_fixtures
from frontends.gateway import Gateway, GatewayRequest
from frontends.replay.cases import THROWAWAY_KEY, THROWAWAY_KEY_ENV, Case, cases, synthetic_catalog
from frontends.replay.comparison import differences, notes
from frontends.replay.recorded_caller import RecordedCallerIdentity
from transports.cassette import Cassette, CassetteError, Chunk, RecordedResponse, load_cassette
from transports.replay import ReplayTransport
from transports.switching import SwitchingTransport

__all__ = ["Replayed", "replay_cassette"]


@attrs.frozen(kw_only=True)
class Replayed:
    """One recorded client request, run again: what came back and how it compares."""

    cassette: str
    index: int
    label: str
    actual: RecordedResponse
    differences: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.differences


async def _run_case(gateway: Gateway, case: Case, index: int) -> RecordedResponse:
    request = case.request
    route = OpenAIRoute.from_path(request.route)
    if route is None:
        raise CassetteError(f"conversation {index}: unknown OpenAI route {request.route!r}")
    response = await gateway.handle(
        GatewayRequest(
            route=route,
            body=request.body,
            content_type=request.content_type,
            authorization=request.authorization,
            cluster=request.cluster,
            framework=request.framework,
            request_id=f"replay-{index}",
        )
    )
    if response.stream is None:
        return RecordedResponse(
            status=response.status, headers=response.headers, body=response.body
        )
    # A recorded client that left early leaves again after as many events.
    expected = case.expected
    limit = len(expected.chunks or ()) if expected.cancelled else None
    events: list[Chunk] = []
    relay = response.stream
    try:
        async for event in relay:
            events.append(Chunk(data=event))
            if limit is not None and len(events) >= limit:
                break
    finally:
        await relay.aclose()
    return RecordedResponse(
        status=response.status,
        headers=response.headers,
        chunks=events,
        cancelled=limit is not None,
    )


async def replay_cassette(
    cassette: Cassette | Path | str, *, fixtures_dir: Path | None = None
) -> list[Replayed]:
    """Every client request of a cassette through a gateway answering from the records."""
    if not isinstance(cassette, Cassette):
        cassette = load_cassette(cassette)
    name = Path(cassette.path).name
    if fixtures_dir is not None:
        catalog = catalog_of(read_fixtures(fixtures_dir), folder=fixtures_dir)
    elif cassette.conversations:
        if cassette.fixtures is None:
            raise CassetteError(
                f"{cassette.path}: conversations but no 'fixtures' record; pass --fixtures"
            )
        catalog = catalog_of(cassette.fixtures)
    else:
        catalog = synthetic_catalog(cassette.exchanges)
    transport = SwitchingTransport(ReplayTransport(()))
    identity = RecordedCallerIdentity()
    gateway = assemble(
        catalog,
        identity=identity,
        transport=transport,
        environ={THROWAWAY_KEY_ENV: THROWAWAY_KEY},
        folder=fixtures_dir,
    )
    results: list[Replayed] = []
    try:
        for index, case in enumerate(cases(cassette)):
            records = ReplayTransport(case.exchanges, bodies=case.bodies)
            transport.switch(records)
            identity.answer_as(case.request)
            actual = await _run_case(gateway, case, index)
            found = differences(case, actual, reached_backend=bool(transport.sent))
            for mismatch in records.mismatches:
                found.insert(0, f"the gateway sent a backend request no record answers: {mismatch}")
            if case.strict_headers and records.unused:
                found.append(f"{len(records.unused)} recorded backend call(s) not made")
            results.append(
                Replayed(
                    cassette=name,
                    index=index,
                    label=case.label,
                    actual=actual,
                    differences=tuple(found),
                    notes=tuple(notes(case, actual, transport.sent)),
                )
            )
    finally:
        await gateway.aclose()
    return results
