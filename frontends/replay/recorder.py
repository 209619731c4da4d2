"""Recording whole conversations: `ConversationRecorder` (see the package's theory)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import attrs

from core import Identity
from frontends.assembly import assemble as assemble_gateway
from frontends.assembly import catalog_of, read_fixtures
from frontends.gateway import ByteStream, Gateway, GatewayRequest, GatewayResponse
from frontends.identity import AccessRefused, CredentialsRejected, IdentityProvider
from transports import Transport
from transports.cassette import (
    Caller,
    Chunk,
    ClientRequest,
    Conversation,
    RecordedResponse,
    append_record,
)
from transports.recording import RecordingTransport, capture

__all__ = ["ConversationRecorder", "RecordingIdentity"]

Verdict = Identity | Exception | None  # whom the provider named, or what it raised
_CALLERS: ContextVar[list[Verdict] | None] = ContextVar("replay_callers", default=None)


class RecordingIdentity:
    """An `IdentityProvider` that remembers, per conversation, whom it resolved."""

    def __init__(self, inner: IdentityProvider) -> None:
        self._inner = inner

    async def resolve(self, credentials: str) -> Identity | None:
        seen = _CALLERS.get()
        try:
            identity = await self._inner.resolve(credentials)
        except Exception as exc:
            if seen is not None:
                seen.append(exc)
            raise
        if seen is not None:
            seen.append(identity)
        return identity


@contextmanager
def _callers() -> Iterator[list[Verdict]]:
    seen: list[Verdict] = []
    token = _CALLERS.set(seen)
    try:
        yield seen
    finally:
        _CALLERS.reset(token)


def _refusal(seen: Sequence[Verdict]) -> str | None:
    """How the provider said no, in `ClientRequest.refusal`'s spelling (None: it did not)."""
    verdict = seen[-1] if seen else None
    if isinstance(verdict, CredentialsRejected):
        return f"rejected:{verdict.reason}"
    if isinstance(verdict, AccessRefused):
        return f"refused:{verdict.rule.value}"
    return "unavailable" if isinstance(verdict, Exception) else None


def _caller(seen: Sequence[Verdict]) -> Caller | None:
    identity = seen[-1] if seen else None
    if not isinstance(identity, Identity):
        return None
    return Caller(
        username=identity.username,
        groups=tuple(sorted(identity.groups)),
        provider=identity.provider,
    )


def _client_request(request: GatewayRequest, seen: Sequence[Verdict]) -> ClientRequest:
    return ClientRequest(
        route=request.route.value,
        body=request.body,
        content_type=request.content_type,
        authorization=request.authorization,
        cluster=request.cluster,
        framework=request.framework,
        caller=_caller(seen),
        refusal=_refusal(seen),
    )


class ConversationRecorder:
    """`Gateway.handle`, with each conversation appended to a JSON Lines cassette."""

    def __init__(self, gateway: Gateway, path: Path | str) -> None:
        self.gateway = gateway
        self.path = Path(path)

    @classmethod
    def from_fixtures(
        cls,
        fixtures_dir: Path,
        *,
        identity: IdentityProvider,
        transport: Transport,
        path: Path | str,
    ) -> ConversationRecorder:
        """A recording gateway over these fixtures; the cassette at `path` starts afresh
        with a `fixtures` record, so it replays on its own."""
        path = Path(path)
        fixtures = read_fixtures(fixtures_dir)
        gateway = assemble_gateway(
            catalog_of(fixtures, folder=fixtures_dir),
            identity=RecordingIdentity(identity),
            transport=RecordingTransport(transport),
            folder=fixtures_dir,
        )
        path.write_text("")
        append_record(path, fixtures)
        return cls(gateway, path)

    async def handle(self, request: GatewayRequest) -> GatewayResponse:
        with capture() as exchanges, _callers() as seen:
            response = await self.gateway.handle(request)
        client = _client_request(request, seen)
        if response.stream is None:
            append_record(
                self.path,
                Conversation(
                    request=client,
                    response=RecordedResponse(
                        status=response.status, headers=response.headers, body=response.body
                    ),
                    exchanges=tuple(exchanges),
                ),
            )
            return response

        def finish(events: tuple[Chunk, ...], complete: bool) -> None:
            append_record(
                self.path,
                Conversation(
                    request=client,
                    response=RecordedResponse(
                        status=response.status,
                        headers=response.headers,
                        chunks=events,
                        cancelled=not complete,
                    ),
                    exchanges=tuple(exchanges),
                ),
            )

        return attrs.evolve(response, stream=_RecordingRelay(response.stream, finish))

    async def aclose(self) -> None:
        await self.gateway.aclose()


class _RecordingRelay:
    """Wraps a stream's relay, keeping each event it hands on; reports them when closed."""

    def __init__(
        self, inner: ByteStream, finish: Callable[[tuple[Chunk, ...], bool], None]
    ) -> None:
        self._inner = inner
        self._iterator = inner.__aiter__()
        self._finish = finish
        self._events: list[Chunk] = []
        self._opened = time.monotonic()
        self._complete = False
        self._reported = False

    def __aiter__(self) -> _RecordingRelay:
        return self

    async def __anext__(self) -> bytes:
        try:
            event = await self._iterator.__anext__()
        except StopAsyncIteration:
            self._complete = True
            await self.aclose()
            raise
        self._events.append(Chunk(data=event, at=time.monotonic() - self._opened))
        return event

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            if not self._reported:
                self._reported = True
                self._finish(tuple(self._events), self._complete)
