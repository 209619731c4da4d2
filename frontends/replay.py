"""Whole conversations, recorded and replayed: `ConversationRecorder` and `replay`.

Theory of operation.

Recording.  `ConversationRecorder.from_fixtures` builds a `Gateway` whose transport is
a `RecordingTransport` and whose identity provider is wrapped so the caller it vouches
for is remembered; the cassette starts with the fixtures themselves.  Its `handle` is
`Gateway.handle` plus a `capture()` scope: when the answer is whole, one `Conversation`
(client request, gateway response, the backend exchanges the request caused) is
appended at once; when it is a stream, the relay is wrapped and the conversation is
written when the relay closes, with every event the client received, its time, and
`cancelled` if the client left before the end.  The client's token is never written,
only its scheme (`Bearer <redacted>`) and the caller it identified, which is why replay
needs no tokens file.

Replay.  `replay_cassette` runs each recorded client request through a real `Gateway`
whose transport is a `ReplayTransport` and compares what the gateway answers with what
was recorded:

* our JSON Lines conversations: the gateway comes from the cassette's `fixtures` record
  (or a fixtures folder passed in); each conversation is replayed against its own
  backend exchanges and its caller; status, headers and body (for a stream, the list
  of events) must be byte-identical.
* go-vcr cassettes (and bare exchanges in ours): each recorded backend exchange becomes
  a client request to the plain `/v1/...` route, sent to a synthetic fixture of one
  `DirectAPIEndpoint` per model whose `api_url` is the recorded URL; the gateway must
  hand the client what the backend answered: status, content type and body bytes.
  Backend headers a client reads (`x-request-id`, rate limits, ...) that the gateway
  drops, and a backend request body that went out re-serialised, are reported as
  notes, not as differences.

A `ReplayMismatch` inside the gateway surfaces to the client as a 502 (the driver turns
every adaptor exception into one); the runner reads the transport's `mismatches` and
reports "the gateway sent a backend request no record answers" instead of a bare 502.

All of it is anyio only: `main` runs under asyncio or trio (`--loop`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import attrs

from core import ConfigurationError, Identity, OpenAIRoute, Rule
from frontends.gateway import ByteStream, Gateway, GatewayRequest, GatewayResponse
from frontends.identity import (
    AccessRefused,
    CredentialsRejected,
    IdentityProvider,
    ProviderUnavailable,
)
from transports import BackendRequest, BackendResponse, Transport
from transports.cassette import (
    REDACTED,
    Caller,
    Cassette,
    CassetteError,
    Chunk,
    ClientRequest,
    Conversation,
    Exchange,
    Fixtures,
    RecordedResponse,
    append_record,
    load_cassette,
    redact_headers,
    split_sse,
)
from transports.recording import RecordingTransport, capture
from transports.replay import ReplayStream, ReplayTransport

__all__ = [
    "ConversationRecorder",
    "RecordingIdentity",
    "Replayed",
    "add_replay_command",
    "replay_cassette",
    "run_replay_command",
]

Verdict = Identity | Exception | None  # whom the provider named, or what it raised
_CALLERS: ContextVar[list[Verdict] | None] = ContextVar("replay_callers", default=None)

THROWAWAY_KEY_ENV = "INFERENCE_GATEWAY_REPLAY_THROWAWAY_KEY"
THROWAWAY_KEY = "sk-replay-throwaway-0000000000000000"
REPLAY_AUTHORIZATION = f"Bearer {REDACTED}"
# Backend headers an OpenAI client reads; the report notes the ones the gateway drops.
CLIENT_READ_HEADERS = (
    "x-request-id",
    "openai-processing-ms",
    "openai-version",
    "openai-organization",
    "openai-project",
    "x-ratelimit-*",
)


# -- recording ----------------------------------------------------------------------------------


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
        fixtures = Fixtures(
            clusters=(fixtures_dir / "clusters.json").read_text(),
            endpoints=(fixtures_dir / "endpoints.json").read_text(),
        )
        gateway = Gateway.from_fixtures(
            fixtures_dir,
            identity=RecordingIdentity(identity),
            transport=RecordingTransport(transport),
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


# -- replay: the gateway under test ----------------------------------------------------------------


class _ReplayIdentity:
    """Vouches for whoever the current conversation's recorded caller was."""

    def __init__(self) -> None:
        self.caller: Caller | None = None
        self.refusal: str | None = None

    async def resolve(self, credentials: str) -> Identity | None:
        kind, _, detail = (self.refusal or "").partition(":")
        if kind == "rejected":
            raise CredentialsRejected(detail)
        if kind == "refused":
            raise AccessRefused(Rule(detail))
        if kind == "unavailable":
            raise ProviderUnavailable("the recorded identity provider was unavailable")
        caller = self.caller
        if caller is None:
            return None
        return Identity(username=caller.username, groups=caller.groups, provider=caller.provider)


class _SwitchTransport:
    """The gateway's one transport; each conversation gets its own `ReplayTransport`.

    Sent requests are kept (`sent`) so the report can compare them with the record.
    """

    def __init__(self) -> None:
        self.current = ReplayTransport(())
        self.sent: list[BackendRequest] = []

    async def send(self, request: BackendRequest) -> BackendResponse:
        self.sent.append(request)
        return await self.current.send(request)

    async def open_stream(self, request: BackendRequest) -> ReplayStream:
        self.sent.append(request)
        return await self.current.open_stream(request)

    async def aclose(self) -> None:
        return None


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


@attrs.frozen(kw_only=True)
class _Case:
    label: str
    request: ClientRequest
    exchanges: tuple[Exchange, ...]
    expected: RecordedResponse
    strict_headers: bool  # our own conversations: every header; go-vcr: content type


def _gateway(fixtures: Fixtures, transport: _SwitchTransport, identity: _ReplayIdentity) -> Gateway:
    with tempfile.TemporaryDirectory(prefix="igw-replay-") as folder:
        (Path(folder) / "clusters.json").write_text(fixtures.clusters)
        (Path(folder) / "endpoints.json").write_text(fixtures.endpoints)
        saved = os.environ.get(THROWAWAY_KEY_ENV)
        os.environ[THROWAWAY_KEY_ENV] = THROWAWAY_KEY
        try:
            return Gateway.from_fixtures(Path(folder), identity=identity, transport=transport)
        finally:
            if saved is None:
                os.environ.pop(THROWAWAY_KEY_ENV, None)
            else:
                os.environ[THROWAWAY_KEY_ENV] = saved


def _read_fixtures(folder: Path) -> Fixtures:
    try:
        return Fixtures(
            clusters=(folder / "clusters.json").read_text(),
            endpoints=(folder / "endpoints.json").read_text(),
        )
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read fixtures: {exc.strerror}", file=str(folder)
        ) from None


def _model_of(body: bytes) -> str | None:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return None
    model = payload.get("model") if isinstance(payload, dict) else None
    return model if isinstance(model, str) and model else None


def _route_of(url: str) -> str:
    path = urlsplit(url).path.strip("/")
    return path[3:] if path.startswith("v1/") else path


def _synthetic_fixtures(exchanges: Sequence[Exchange]) -> Fixtures:
    """One OpenAI-compatible cluster; one Direct API endpoint per (model, URL) recorded."""
    endpoints: dict[str, dict[str, Any]] = {}
    bases: list[str] = []
    for exchange in exchanges:
        model = _model_of(exchange.request.body)
        if model is None or model in endpoints:
            continue
        slug = "replay-" + re.sub(r"[^a-z0-9-]+", "-", model.lower()).strip("-")
        endpoints[model] = {
            "endpoint_slug": f"{slug}-{len(endpoints)}",
            "cluster": "replay",
            "framework": "api",
            "model": model,
            "endpoint_adapter": "adaptors.endpoints.direct_api.DirectAPIEndpoint",
            "allowed_globus_groups": [],
            "allowed_domains": [],
            "config": {"api_url": exchange.request.url, "api_key_env_name": THROWAWAY_KEY_ENV},
        }
        bases.append(exchange.request.url)
    cluster = {
        "cluster_name": "replay",
        "frameworks": ["api"],
        "openai_endpoints": ["chat/completions", "completions", "embeddings"],
        "cluster_adapter": "adaptors.clusters.openai_compatible.OpenAICompatibleCluster",
        "allowed_globus_groups": [],
        "allowed_domains": [],
        "config": {"api_url": bases[0] if bases else "http://replay.invalid/v1"},
    }
    return Fixtures(
        clusters=json.dumps(_django_rows("resource_server_async.cluster", [cluster])),
        endpoints=json.dumps(_django_rows("resource_server_async.endpoint", endpoints.values())),
    )


def _django_rows(kind: str, entries: Any) -> list[dict[str, Any]]:
    return [{"model": kind, "pk": i, "fields": f} for i, f in enumerate(entries, 1)]


def _cases(cassette: Cassette) -> Iterator[_Case]:
    for conversation in cassette.conversations:
        request = conversation.request
        yield _Case(
            label=f"{request.route} ({_model_of(request.body) or '?'})",
            request=request,
            exchanges=conversation.exchanges,
            expected=conversation.response,
            strict_headers=True,
        )
    for exchange in cassette.exchanges:
        recorded = exchange.request
        yield _Case(
            label=f"{recorded.method} {urlsplit(recorded.url).path}",
            request=ClientRequest(
                route=_route_of(recorded.url),
                body=recorded.body,
                content_type=_header(recorded.headers, "content-type") or "application/json",
                authorization=REPLAY_AUTHORIZATION,
                caller=Caller(username="replay@localhost"),
            ),
            exchanges=(exchange,),
            expected=exchange.response,
            strict_headers=False,
        )


# -- replay: comparing ----------------------------------------------------------------------------


def _header(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    return next((v for k, v in headers if k.lower() == name), None)


def _short(data: bytes, at: int) -> str:
    start = max(0, at - 20)
    return repr(data[start : at + 40])


def _body_difference(expected: bytes, actual: bytes, what: str) -> str | None:
    if expected == actual:
        return None
    at = next(
        (i for i, (x, y) in enumerate(zip(expected, actual, strict=False)) if x != y),
        min(len(expected), len(actual)),
    )
    same_json = _json_equal(expected, actual)
    kind = " (equal as JSON)" if same_json else ""
    return (
        f"{what} differs{kind} at byte {at} of {len(expected)} recorded / {len(actual)} "
        f"replayed: recorded {_short(expected, at)}, gateway {_short(actual, at)}"
    )


def _json_equal(a: bytes, b: bytes) -> bool:
    try:
        return bool(json.loads(a) == json.loads(b))
    except (ValueError, RecursionError):
        return False


def _error_type(body: bytes) -> object:
    try:
        return json.loads(body)["error"]["type"]
    except (ValueError, KeyError, TypeError):
        return None


def _differences(
    case: _Case, actual: RecordedResponse, *, reached_backend: bool = True
) -> list[str]:
    expected = case.expected
    found: list[str] = []
    if not case.strict_headers and not reached_backend and expected.status >= 400:
        # The gateway's own validation answered before the backend was asked: only the
        # status and the error type must equal the recorded ones; the wording is ours.
        if expected.status != actual.status:
            found.append(f"status: recorded {expected.status}, gateway {actual.status}")
        was, now = _error_type(expected.content), _error_type(actual.content)
        if was != now:
            found.append(f"error type: recorded {was!r}, gateway {now!r}")
        return found
    if expected.status != actual.status:
        found.append(f"status: recorded {expected.status}, gateway {actual.status}")
    if case.strict_headers:
        # The record's secret headers were redacted when written; so are the replay's.
        if tuple(expected.headers) != redact_headers(actual.headers):
            found.append(
                f"headers: recorded {list(expected.headers)}, gateway {list(actual.headers)}"
            )
        if expected.is_stream != actual.is_stream:
            found.append(f"stream: recorded {expected.is_stream}, gateway {actual.is_stream}")
        elif expected.chunks is not None and actual.chunks is not None:
            was = [c.data for c in expected.chunks]
            now = [c.data for c in actual.chunks]
            for index in range(max(len(was), len(now))):
                a = was[index] if index < len(was) else b""
                b = now[index] if index < len(now) else b""
                if a != b:
                    found.append(
                        f"stream event {index} ({len(was)} recorded, {len(now)} replayed): "
                        f"recorded {a[:80]!r}, gateway {b[:80]!r}"
                    )
                    break
            if expected.cancelled != actual.cancelled:
                found.append(
                    f"cancelled: recorded {expected.cancelled}, gateway {actual.cancelled}"
                )
        else:
            body = _body_difference(expected.body, actual.body, "body")
            found.extend([body] if body else [])
        return found
    was_type = expected.header("content-type")
    now_type = actual.header("content-type")
    if (was_type or "").lower() != (now_type or "").lower():
        found.append(f"content-type: recorded {was_type!r}, gateway {now_type!r}")
    body = _body_difference(expected.content, actual.content, "body")
    if body and expected.is_stream:
        events = split_sse(expected.content), split_sse(actual.content)
        index = next(
            (i for i, (x, y) in enumerate(zip(*events, strict=False)) if x != y),
            min(map(len, events)),
        )
        body += f" (first differing SSE event: #{index} of {len(events[0])})"
    found.extend([body] if body else [])
    return found


def _notes(case: _Case, actual: RecordedResponse, sent: Sequence[BackendRequest]) -> list[str]:
    notes: list[str] = []
    if case.strict_headers:
        return notes
    dropped = []
    for name in CLIENT_READ_HEADERS:

        def has(headers: Sequence[tuple[str, str]], name: str = name) -> bool:
            if name.endswith("*"):
                return any(k.lower().startswith(name[:-1]) for k, _ in headers)
            return _header(headers, name) is not None

        if has(case.expected.headers) and not has(actual.headers):
            dropped.append(name)
    if dropped:
        notes.append("backend headers not forwarded: " + ", ".join(dropped))
    recorded = case.exchanges[0].request if case.exchanges else None
    if recorded is not None and not sent:
        notes.append("the gateway made no backend call")
    for request in sent[:1]:
        if recorded is not None and request.body != recorded.body:
            equal = _json_equal(request.body, recorded.body)
            notes.append(
                "backend request body re-serialised"
                + (" (equal as JSON)" if equal else " (NOT equal as JSON)")
                + f": {len(recorded.body)} bytes recorded, {len(request.body)} sent"
            )
    return notes


# -- replay: running ------------------------------------------------------------------------------


async def _run_case(
    gateway: Gateway,
    transport: _SwitchTransport,
    identity: _ReplayIdentity,
    case: _Case,
    index: int,
) -> RecordedResponse:
    transport.current = ReplayTransport(case.exchanges)
    transport.sent = []
    identity.caller = case.request.caller
    identity.refusal = case.request.refusal
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
    cases = list(_cases(cassette))
    if fixtures_dir is not None:
        fixtures = _read_fixtures(fixtures_dir)
    elif cassette.conversations:
        if cassette.fixtures is None:
            raise CassetteError(
                f"{cassette.path}: conversations but no 'fixtures' record; pass --fixtures"
            )
        fixtures = cassette.fixtures
    else:
        fixtures = _synthetic_fixtures(cassette.exchanges)
    transport = _SwitchTransport()
    identity = _ReplayIdentity()
    gateway = _gateway(fixtures, transport, identity)
    results: list[Replayed] = []
    try:
        for index, case in enumerate(cases):
            actual = await _run_case(gateway, transport, identity, case, index)
            differences = _differences(case, actual, reached_backend=bool(transport.sent))
            for mismatch in transport.current.mismatches:
                differences.insert(
                    0, f"the gateway sent a backend request no record answers: {mismatch}"
                )
            unused = transport.current.unused
            if case.strict_headers and unused:
                differences.append(f"{len(unused)} recorded backend call(s) not made")
            results.append(
                Replayed(
                    cassette=name,
                    index=index,
                    label=case.label,
                    actual=actual,
                    differences=tuple(differences),
                    notes=tuple(_notes(case, actual, transport.sent)),
                )
            )
    finally:
        await gateway.aclose()
    return results


# -- the command ---------------------------------------------------------------------------------


def _table(results: Sequence[Replayed]) -> str:
    header = ("cassette", "#", "request", "result")
    rows = [(r.cassette, str(r.index), r.label, "pass" if r.passed else "DIFF") for r in results]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str], tail: str) -> str:
        padded = [c.ljust(w) for c, w in zip(cells, widths, strict=True)]
        return "  ".join([*padded, tail]).rstrip()

    lines = [line(header, "first difference")]
    for row, result in zip(rows, results, strict=True):
        first, *more = result.differences or ("",)
        lines.append(line(row, first))
        lines += [f"    - {d}" for d in more]
        lines += [f"    note: {n}" for n in result.notes]
    return "\n".join(lines)


def add_replay_command(commands: Any) -> None:
    """Register `replay` on the CLI's sub-parsers (`argparse` `_SubParsersAction`)."""
    replay = commands.add_parser(
        "replay", help="replay recorded traffic through the gateway, offline; report differences"
    )
    replay.add_argument("cassettes", type=Path, nargs="+", metavar="CASSETTE")
    replay.add_argument("--loop", choices=("asyncio", "trio"), default="asyncio")
    replay.add_argument(
        "--fixtures", type=Path, help="fixtures folder for cassettes without a fixtures record"
    )


def run_replay_command(args: argparse.Namespace) -> int:
    """0 when every cassette replays identically, 1 on any difference, 2 if one is unreadable."""

    async def run() -> list[Replayed]:
        results: list[Replayed] = []
        for path in args.cassettes:
            results += await replay_cassette(path, fixtures_dir=args.fixtures)
        return results

    try:
        results = anyio.run(run, backend=args.loop)
    except CassetteError as exc:
        print(f"inference-gateway: cannot replay: {exc}", file=sys.stderr)
        return 2
    print(_table(results))
    differing = [r for r in results if not r.passed]
    cassettes = {r.cassette for r in results}
    bad = {r.cassette for r in differing}
    print(
        f"\n{len(cassettes)} cassette(s), {len(results)} request(s): "
        f"{len(results) - len(differing)} passed, {len(differing)} differed "
        f"({len(bad)} cassette(s) with differences) [loop: {args.loop}]"
    )
    return 1 if differing else 0
