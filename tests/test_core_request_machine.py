"""The request machine: one OpenAI request from arrival to its one terminal state.

Three layers, as h11 and h2 test theirs: every (state, event) pair against the
transition table; a hypothesis state machine feeding random events and checking the
promises the machine makes (no adaptor call without authorization, one log line per
request, no response after a stream began, ...); and scenarios that read as stories.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from hypothesis import event as note_event
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from core import (
    STREAM_HEADERS,
    TABLE,
    TERMINAL,
    AdaptorFailed,
    AdaptorReturned,
    Authenticate,
    CallAdaptor,
    CancelUpstream,
    Catalog,
    ChunkReceived,
    ClientDisconnected,
    ClusterRecord,
    EndpointRecord,
    EndStream,
    Event,
    GatewayStopping,
    HealthAssessed,
    Identity,
    IdentityResolved,
    IdentityUnavailable,
    Limit,
    LocalProtocolError,
    OpenAIRoute,
    QuotaExceeded,
    QuotaPolicy,
    Refusal,
    RelayChunk,
    RequestMachine,
    RequestReceived,
    Reserved,
    Respond,
    Rule,
    StartStream,
    State,
    StreamEnded,
    StreamOpened,
    Usage,
    WriteLog,
)
from tests.test_core_authorization import reference_allows

CHAT = OpenAIRoute.CHAT_COMPLETIONS
COMPLETIONS = OpenAIRoute.COMPLETIONS
EMBEDDINGS = OpenAIRoute.EMBEDDINGS
INPUT = {
    CHAT: ("messages", [{"role": "user", "content": "hi"}]),
    COMPLETIONS: ("prompt", "once upon"),
    EMBEDDINGS: ("input", ["a", "b"]),
    OpenAIRoute.RESPONSES: ("input", "hi"),
    OpenAIRoute.MESSAGES: ("messages", [{"role": "user", "content": "hi"}]),
}
# What each route requires beside its input (the Messages API: `max_tokens`).
REQUIRED = {OpenAIRoute.MESSAGES: {"max_tokens": 16}}

TOKEN = "tok-SECRET-credential-42"
BEARER = f"Bearer {TOKEN}"


def a_cluster(
    name: str, routes: list[str], *, groups: tuple[str, ...] = (), domains: tuple[str, ...] = ()
) -> ClusterRecord:
    return ClusterRecord(
        id=name,
        cluster_name=name,
        cluster_adapter="adaptors.clusters.demo.DemoCluster",
        frameworks=["vllm"],
        openai_endpoints=routes,
        allowed_globus_groups=groups,
        allowed_domains=domains,
    )


def an_endpoint(
    cluster: str, model: str, *, groups: tuple[str, ...] = (), domains: tuple[str, ...] = ()
) -> EndpointRecord:
    return EndpointRecord(
        id=f"{cluster}-{model}",
        endpoint_slug=f"{cluster}-vllm-{model}",
        cluster=cluster,
        framework="vllm",
        model=model,
        endpoint_adapter="adaptors.endpoints.demo.DemoEndpoint",
        allowed_globus_groups=groups,
        allowed_domains=domains,
    )


ALL_ROUTES = [route.value for route in OpenAIRoute]
CATALOG = Catalog.build(
    [
        a_cluster("open", ALL_ROUTES),
        a_cluster("locked", ["chat/completions", "completions"], groups=("staff",)),
        a_cluster("anl", ["chat/completions"], domains=("anl.gov",)),
    ],
    [
        an_endpoint("open", "m1"),
        an_endpoint("open", "m2", groups=("team",)),
        an_endpoint("locked", "m1"),
        an_endpoint("locked", "m3", domains=("uchicago.edu",)),
        an_endpoint("anl", "m3"),
        an_endpoint("anl", "m4", groups=("team",)),
    ],
)

ALICE = Identity(username="alice@anl.gov", groups={"staff", "team"})
IDENTITIES = [
    ALICE,
    Identity(username="bob@ANL.GOV"),
    Identity(username="carol@uchicago.edu", groups={"staff"}),
    Identity(username="dave", groups={"team"}),
    Identity(username="eve@", groups={"other"}),
    Identity(username="frank@cels.anl.gov", groups={"team"}),  # a subdomain: not anl.gov
    Identity(username="gina@ANL.gov.", groups={"staff"}),  # the same name, spelled oddly
    Identity(username="hank@\u0430nl.gov", groups={"staff", "team"}),  # Cyrillic a
]
# The provider's refusals: expired credentials (401), a gateway-wide rule (403).
REFUSALS = [
    IdentityResolved(identity=None, reason="expired"),
    IdentityResolved(identity=None, reason="inactive"),
    IdentityResolved(identity=None, refused_by=Rule.GROUP),
    IdentityResolved(identity=None, refused_by=Rule.DOMAIN),
]


def body(route: OpenAIRoute = CHAT, model: str = "m1", **extra: Any) -> bytes:
    field, value = INPUT[route]
    return json.dumps({"model": model, field: value, **extra}).encode()


def request(
    route: OpenAIRoute = CHAT,
    raw: bytes | None = None,
    *,
    authorization: str | None = BEARER,
    stream: bool = False,
    cluster: str | None = None,
    framework: str | None = None,
    content_type: str | None = "application/json",
) -> RequestReceived:
    extra: dict[str, Any] = {"stream": True} if stream else {}
    return RequestReceived(
        request_id="req-1",
        route=route,
        body=raw if raw is not None else body(route, "m1", **extra),
        content_type=content_type,
        authorization=authorization,
        cluster=cluster,
        framework=framework,
    )


def kinds(effects: tuple[Any, ...] | list[Any]) -> list[type[Any]]:
    return [type(effect) for effect in effects]


def logs(effects: list[Any]) -> list[WriteLog]:
    return [effect for effect in effects if isinstance(effect, WriteLog)]


# -- every state x every event -----------------------------------------------------------

# The expected cells, written out here rather than read from the implementation's TABLE:
# (state, event type) -> the states it may lead to.  A pair not listed is refused.
S = State
EXPECTED: dict[tuple[State, type[Any]], frozenset[State]] = {
    (S.AWAITING_REQUEST, RequestReceived): frozenset({S.AUTHENTICATING, S.DONE}),
    (S.AUTHENTICATING, IdentityResolved): frozenset(
        {S.CHOOSING, S.ADMITTING, S.AWAITING_RESULT, S.AWAITING_STREAM, S.DONE}
    ),
    (S.AUTHENTICATING, IdentityUnavailable): frozenset({S.DONE}),
    (S.AUTHENTICATING, ClientDisconnected): frozenset({S.CANCELLED}),
    (S.CHOOSING, HealthAssessed): frozenset(
        {S.ADMITTING, S.AWAITING_RESULT, S.AWAITING_STREAM, S.DONE}
    ),
    (S.CHOOSING, ClientDisconnected): frozenset({S.CANCELLED}),
    (S.ADMITTING, Reserved): frozenset({S.AWAITING_RESULT, S.AWAITING_STREAM}),
    (S.ADMITTING, QuotaExceeded): frozenset({S.DONE}),
    (S.ADMITTING, ClientDisconnected): frozenset({S.CANCELLED}),
    (S.AWAITING_RESULT, AdaptorReturned): frozenset({S.DONE, S.CHOOSING}),
    (S.AWAITING_RESULT, AdaptorFailed): frozenset({S.DONE, S.CHOOSING}),
    (S.AWAITING_RESULT, ClientDisconnected): frozenset({S.CANCELLED}),
    (S.AWAITING_STREAM, StreamOpened): frozenset({S.STREAMING}),
    (S.AWAITING_STREAM, AdaptorReturned): frozenset({S.DONE, S.CHOOSING}),
    (S.AWAITING_STREAM, AdaptorFailed): frozenset({S.DONE, S.CHOOSING}),
    (S.AWAITING_STREAM, ClientDisconnected): frozenset({S.CANCELLED}),
    (S.STREAMING, ChunkReceived): frozenset({S.STREAMING, S.DONE}),
    (S.STREAMING, StreamEnded): frozenset({S.DONE}),
    (S.STREAMING, AdaptorFailed): frozenset({S.DONE}),
    (S.STREAMING, ClientDisconnected): frozenset({S.CANCELLED}),
    # The graceful drain's deadline, while the backend still has the request.
    (S.AWAITING_RESULT, GatewayStopping): frozenset({S.DONE}),
    (S.AWAITING_STREAM, GatewayStopping): frozenset({S.DONE}),
    (S.STREAMING, GatewayStopping): frozenset({S.DONE}),
}


def expected(state: State, event_type: type[Any]) -> frozenset[State] | None:
    return EXPECTED.get((state, event_type))


SAMPLE_EVENTS: list[Any] = [
    request(),
    IdentityResolved(identity=ALICE),
    IdentityUnavailable(detail="connection refused"),
    AdaptorReturned(result='{"id": "x", "object": "chat.completion", "choices": []}'),
    AdaptorFailed(status=504, detail="timed out"),
    StreamOpened(),
    ChunkReceived(data=b'data: {"id": "x"}\n\n'),
    StreamEnded(),
    ClientDisconnected(),
    GatewayStopping(),
    Reserved(),
    QuotaExceeded(refusal=Refusal(limit=Limit.USER_TOKENS, retry_after=3)),
    HealthAssessed(endpoints=()),
]


def machine_in(state: State) -> RequestMachine:
    """A fresh machine brought to `state` by legal events (or one illegal one, for ERROR)."""
    machine = RequestMachine(CATALOG, QuotaPolicy()) if state is State.ADMITTING else None
    if state is State.CHOOSING:
        machine = RequestMachine(CATALOG, balanced=True)
    machine = machine or RequestMachine(CATALOG)
    paths: dict[State, list[Any]] = {
        State.AWAITING_REQUEST: [],
        State.AUTHENTICATING: [request()],
        State.ADMITTING: [request(), IdentityResolved(identity=ALICE)],
        State.CHOOSING: [request(), IdentityResolved(identity=ALICE)],
        State.AWAITING_RESULT: [request(), IdentityResolved(identity=ALICE)],
        State.AWAITING_STREAM: [request(stream=True), IdentityResolved(identity=ALICE)],
        State.STREAMING: [request(stream=True), IdentityResolved(identity=ALICE), StreamOpened()],
        State.DONE: [
            request(),
            IdentityResolved(identity=ALICE),
            AdaptorReturned(result='{"id": "x", "choices": []}'),
        ],
        State.CANCELLED: [request(), ClientDisconnected()],
    }
    if state is State.ERROR:
        with pytest.raises(LocalProtocolError):
            machine.receive(StreamEnded())
    else:
        for event in paths[state]:
            machine.receive(event)
    assert machine.state is state
    return machine


def check_one_transition(state: State, event: Event) -> None:
    machine = machine_in(state)
    allowed = expected(state, type(event))
    if allowed is not None:
        machine.receive(event)
        assert machine.state in allowed
        return
    with pytest.raises(LocalProtocolError):
        machine.receive(event)
    assert machine.state is State.ERROR
    for later in SAMPLE_EVENTS:
        with pytest.raises(LocalProtocolError):
            machine.receive(later)
        assert machine.state is State.ERROR


def test_the_table_is_the_expected_one_and_terminal_states_accept_nothing() -> None:
    assert {key: cell.next_states for key, cell in TABLE.items()} == EXPECTED
    assert {State.DONE, State.CANCELLED} == TERMINAL
    for state, _ in TABLE:
        assert state not in (*TERMINAL, State.ERROR)
    for cell in TABLE.values():
        assert State.ERROR not in cell.next_states


@pytest.mark.parametrize("event", SAMPLE_EVENTS, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("state", list(State), ids=lambda s: s.name)
def test_every_state_and_event_follows_the_table(state: State, event: Event) -> None:
    check_one_transition(state, event)


@given(state=st.sampled_from(list(State)), event=st.sampled_from(SAMPLE_EVENTS))
def test_every_state_and_event_follows_the_table_sampled(state: State, event: Event) -> None:
    check_one_transition(state, event)


# -- random drives, checked against the machine's promises -------------------------------

MODELS = ["m1", "m2", "m3", "m4", "M1", "nope"]
PLACES: list[tuple[str | None, str | None]] = [
    (None, None),
    ("open", "vllm"),
    ("locked", "vllm"),
    ("anl", "vllm"),
    ("nowhere", "vllm"),
    ("open", "sglang"),
]
AUTHORIZATIONS = [None, "Bearer", "Bearer ", f"Basic {TOKEN}", f"bearer {TOKEN}"]
PROBLEMS = [
    "elsewhere",
    "authorization",
    "no_model",
    "bad_input",
    "reserved",
    "not_json",
    "stream_str",
    "streamed_embeddings",
    "text_plain",
    "no_content_type",
]


def usually(draw: st.DrawFn, common: Any, rare: st.SearchStrategy[Any]) -> Any:
    """`common` one time in two, else a draw from `rare`.  (Hypothesis leans towards the
    ends of a sampled list, so repeating an element there would not weight it.)"""
    return common if draw(st.booleans()) else draw(rare)


@st.composite
def requests(draw: st.DrawFn) -> tuple[RequestReceived, bool]:
    """A request and whether its body is one validation must accept.  One in two is a
    plain request for a model the catalog serves; the others have one thing changed."""
    route = draw(st.sampled_from(list(OpenAIRoute)))
    field, value = INPUT[route]
    stream = route is not EMBEDDINGS and usually(draw, True, st.booleans())
    payload: dict[str, Any] = {
        "model": draw(st.sampled_from(["m1", "m2", "M1"])),
        field: value,
        "stream": stream,
        "seed": 7,
        **REQUIRED.get(route, {}),
    }
    valid = True
    place: tuple[str | None, str | None] = (None, None)
    content_type: str | None = "application/json"
    authorization: str | None = BEARER
    problem = usually(draw, None, st.sampled_from(PROBLEMS))
    if problem == "elsewhere":
        payload["model"] = draw(st.sampled_from(MODELS))
        place = draw(st.sampled_from(PLACES))
    elif problem == "authorization":
        authorization = draw(st.sampled_from(AUTHORIZATIONS))
    elif problem == "no_content_type":
        content_type = None
    elif problem is not None:
        valid = False
        if problem == "no_model":
            del payload["model"]
        elif problem == "bad_input":
            payload[field] = 5
        elif problem == "reserved":
            payload["model_params"] = {}
        elif problem == "stream_str":
            payload["stream"] = "yes"
        elif problem == "streamed_embeddings":
            payload = {"model": "m1", "input": "x", "stream": True}
            route = EMBEDDINGS
        elif problem == "text_plain":
            content_type = "text/plain"
    raw = b"{not json" if problem == "not_json" else json.dumps(payload).encode()
    event = RequestReceived(
        request_id=f"req-{draw(st.integers(0, 999))}",
        route=route,
        body=raw,
        content_type=content_type,
        authorization=authorization,
        cluster=place[0],
        framework=place[1],
    )
    return event, valid


adaptor_results = st.builds(
    AdaptorReturned,
    result=st.sampled_from(
        [None, '{"id": "r", "choices": [], "usage": {"total_tokens": 3}}', "not json", "[]"]
    ),
    error_message=st.sampled_from(
        [None, "backend exploded", '{"error": {"message": "bad", "type": "x"}}']
    ),
    error_code=st.sampled_from([None, 400, 401, 404, 500, 503, 504]),
)
adaptor_failures = st.builds(
    AdaptorFailed, status=st.sampled_from([502, 503, 504]), detail=st.sampled_from(["", "boom"])
)
sse_pieces = st.sampled_from(
    [
        b'data: {"id": "c", "choices": []}\n\n',
        b'data: {"id": "c", "usage": {"total_tokens": 9}}\n\n',
        b"data: [DONE]\n\n",
        b'data: {"error": {"message": "overloaded", "type": "api_error"}}\n\n',
        b"da",
        b"\r\n",
        b"",
    ]
)
chunks = sse_pieces | st.binary(max_size=24)


def mostly(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A draw from `common` one time in two, else from `rare`."""
    return st.booleans().flatmap(lambda usual: common if usual else rare)


identity_answers = mostly(
    st.just(IdentityResolved(identity=ALICE)),
    st.sampled_from(
        [IdentityResolved(identity=i) for i in IDENTITIES]
        + [IdentityResolved(identity=None, reason="unknown")]
        + REFUSALS
        + [IdentityUnavailable(detail="timeout")]
    ),
)
any_events = (
    st.sampled_from(SAMPLE_EVENTS)
    | adaptor_results
    | adaptor_failures
    | st.builds(IdentityResolved, identity=st.sampled_from(IDENTITIES))
    | st.sampled_from(REFUSALS)
)
# What may come next in each live state, leaning towards going on; disconnects have a
# rule of their own.
NEXT_EVENTS: dict[State, st.SearchStrategy[Any]] = {
    State.AUTHENTICATING: identity_answers,
    State.AWAITING_RESULT: adaptor_results | adaptor_failures,
    State.AWAITING_STREAM: mostly(st.just(StreamOpened()), adaptor_results | adaptor_failures),
    State.STREAMING: mostly(
        st.builds(ChunkReceived, data=chunks), st.just(StreamEnded()) | adaptor_failures
    ),
}

LIVE = (State.AUTHENTICATING, State.AWAITING_RESULT, State.AWAITING_STREAM, State.STREAMING)


class RequestMachineRules(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.machine: RequestMachine | None = None
        self.request: RequestReceived | None = None
        self.body_valid = False
        self.identity: Identity | None = None
        self.effects: list[Any] = []
        self.ended = False  # reached DONE or CANCELLED at some point
        self.events: list[Event] = []  # fed to the current machine, in order
        self.relayed = b""  # what its stream relayed so far

    # -- the one way events go in ------------------------------------------------------

    def feed(self, event: Event) -> None:
        assert self.machine is not None
        before = self.machine.state
        allowed = expected(before, type(event))
        try:
            effects = self.machine.receive(event)
        except LocalProtocolError:
            assert allowed is None, f"{type(event).__name__} refused in {before.name}"
            assert self.machine.state is State.ERROR
            return
        assert allowed is not None, f"{type(event).__name__} accepted in {before.name}"
        assert before not in TERMINAL
        after = self.machine.state
        assert after in allowed
        self.events.append(event)
        if isinstance(event, IdentityResolved):
            self.identity = event.identity
        note_event(f"{before.name} -> {after.name}")
        self.check(before, event, effects)
        self.effects.extend(effects)
        if after in TERMINAL:
            self.ended = True

    def check(self, before: State, event: Event, effects: tuple[Any, ...]) -> None:
        history = [*self.effects, *effects]
        for effect in effects:
            if isinstance(effect, CallAdaptor):
                self.check_call(effect)
        assert kinds(history).count(CallAdaptor) <= 1
        assert kinds(history).count(Respond) <= 1
        assert not (Respond in kinds(history) and StartStream in kinds(history))
        if RelayChunk in kinds(history) or EndStream in kinds(history):
            first_relay = min(
                i for i, e in enumerate(history) if isinstance(e, RelayChunk | EndStream)
            )
            assert StartStream in kinds(history[:first_relay])
        if isinstance(event, ClientDisconnected):
            called = CallAdaptor in kinds(self.effects)
            assert (CancelUpstream in kinds(effects)) == called
        if isinstance(event, ChunkReceived):
            self.check_relay(effects)
        if isinstance(event, StreamEnded | AdaptorFailed | GatewayStopping) and (
            before is State.STREAMING
        ):
            assert kinds(effects)[-2:] == [EndStream, WriteLog]

    def check_relay(self, effects: tuple[Any, ...]) -> None:
        """Whole events go out byte for byte, in order, as soon as they are whole: what
        was relayed is always a prefix of what arrived.  An event that is not JSON ends
        the stream there, with one error event and no `[DONE]`."""
        assert self.machine is not None
        received = b"".join(e.data for e in self.events if isinstance(e, ChunkReceived))
        relayed = [e.data for e in effects if isinstance(e, RelayChunk)]
        if self.machine.state is State.STREAMING:
            assert kinds(effects) in ([], [RelayChunk])
            self.relayed += b"".join(relayed)
            assert received.startswith(self.relayed)
            return
        assert kinds(effects)[:2] == [RelayChunk, EndStream] and kinds(effects)[-1] is WriteLog
        (last,) = relayed
        before, _, error = last.rpartition(b"data: ")
        assert received.startswith(self.relayed + before)
        assert json.loads(error)["error"]["code"] == "backend_invalid_response"
        assert b"[DONE]" not in error

    def check_call(self, call: CallAdaptor) -> None:
        assert self.request is not None
        assert self.body_valid, "adaptor called for a body validation must refuse"
        assert self.identity is not None, "adaptor called without an identity"
        endpoint = CATALOG.endpoint(call.endpoint_slug)
        assert endpoint is not None
        cluster = CATALOG.cluster_of(endpoint)
        assert reference_allows(self.identity, cluster, endpoint), (self.identity, endpoint)
        assert self.request.route.value in cluster.openai_endpoints
        if self.request.cluster is not None:
            assert (endpoint.cluster, endpoint.framework) == (
                self.request.cluster,
                self.request.framework,
            )
        sent = json.loads(self.request.body)
        assert endpoint.model.casefold() == sent["model"].casefold()
        assert call.stream is bool(sent.get("stream"))
        assert call.route is self.request.route
        assert json.loads(call.body) == {**sent, "model": endpoint.model}
        if sent["model"] == endpoint.model:  # the client's own bytes, untouched
            assert call.body == self.request.body

    def begin(self, drawn: tuple[RequestReceived, bool]) -> None:
        """A new request on a new machine: the effects and identity start over."""
        self.machine = RequestMachine(CATALOG)
        self.request, self.body_valid = drawn
        self.identity = None
        self.effects = []
        self.ended = False
        self.events = []
        self.relayed = b""
        self.feed(self.request)

    # -- rules -------------------------------------------------------------------------
    #
    # One rule can always move on, whatever hypothesis' swarm testing switched off; the
    # narrower ones below it let swarm testing lean on one kind of event at a time.

    @rule(data=st.data())
    def whatever_may_happen_next(self, data: st.DataObject) -> None:
        if self.machine is None or self.machine.state not in LIVE:
            if self.machine is None or data.draw(st.booleans(), label="new request"):
                self.begin(data.draw(requests(), label="request"))
            else:
                self.feed(data.draw(any_events, label="event after the end"))
            return
        self.feed(data.draw(NEXT_EVENTS[self.machine.state], label="event"))

    @precondition(lambda self: self.machine is None or self.machine.state not in LIVE)
    @rule(drawn=requests())
    def start_a_request(self, drawn: tuple[RequestReceived, bool]) -> None:
        self.begin(drawn)

    @precondition(
        lambda self: self.machine is not None and self.machine.state is State.AUTHENTICATING
    )
    @rule()
    def the_caller_is_alice_who_may_use_nearly_everything(self) -> None:
        self.feed(IdentityResolved(identity=ALICE))

    @precondition(
        lambda self: self.machine is not None and self.machine.state is State.AUTHENTICATING
    )
    @rule(event=identity_answers)
    def identity_provider_answers(self, event: IdentityResolved | IdentityUnavailable) -> None:
        self.feed(event)

    @precondition(
        lambda self: (
            self.machine is not None
            and self.machine.state in (State.AWAITING_RESULT, State.AWAITING_STREAM)
        )
    )
    @rule(event=adaptor_results)
    def adaptor_returns(self, event: AdaptorReturned) -> None:
        self.feed(event)

    @precondition(
        lambda self: (
            self.machine is not None
            and self.machine.state in (State.AWAITING_RESULT, State.AWAITING_STREAM)
        )
    )
    @rule(event=adaptor_failures)
    def adaptor_fails(self, event: AdaptorFailed) -> None:
        self.feed(event)

    @precondition(
        lambda self: self.machine is not None and self.machine.state is State.AWAITING_STREAM
    )
    @rule()
    def stream_opens(self) -> None:
        self.feed(StreamOpened())

    @precondition(lambda self: self.machine is not None and self.machine.state is State.STREAMING)
    @rule(data=chunks)
    def chunk_arrives(self, data: bytes) -> None:
        self.feed(ChunkReceived(data=data))

    @precondition(lambda self: self.machine is not None and self.machine.state is State.STREAMING)
    @rule()
    def stream_ends(self) -> None:
        self.feed(StreamEnded())

    @precondition(lambda self: self.machine is not None and self.machine.state in LIVE)
    @rule()
    def client_disconnects(self) -> None:
        self.feed(ClientDisconnected())

    @precondition(
        lambda self: (
            self.machine is not None
            and self.machine.state
            in (State.AWAITING_RESULT, State.AWAITING_STREAM, State.STREAMING)
        )
    )
    @rule()
    def the_drain_deadline_passes(self) -> None:
        self.feed(GatewayStopping())

    # Events a live state refuses are covered pair by pair by the table tests above; here
    # they come after the end, so that most drives go deep before anything is refused.
    @precondition(lambda self: self.machine is not None and self.machine.state not in LIVE)
    @rule(event=any_events)
    def any_event_after_the_end(self, event: Event) -> None:
        self.feed(event)

    # -- invariants --------------------------------------------------------------------

    @invariant()
    def one_log_line_exactly_when_the_request_ended(self) -> None:
        if self.machine is None:
            return
        written = len(logs(self.effects))
        if self.machine.state in TERMINAL:
            assert written == 1
        elif self.machine.state is State.ERROR:
            assert written == (1 if self.ended else 0)
        else:
            assert written == 0

    @invariant()
    def an_ended_request_never_comes_back_to_life(self) -> None:
        if self.machine is not None and self.ended:
            assert self.machine.state in (*TERMINAL, State.ERROR)

    @invariant()
    def no_effect_shows_the_credentials(self) -> None:
        for effect in self.effects:
            assert TOKEN not in repr(effect)


TestRequestMachine = RequestMachineRules.TestCase
TestRequestMachine.settings = settings(TestRequestMachine.settings, stateful_step_count=30)


# -- scenarios ---------------------------------------------------------------------------


def run(*events: Event) -> tuple[RequestMachine, list[Any]]:
    machine = RequestMachine(CATALOG)
    effects: list[Any] = []
    for event in events:
        effects.extend(machine.receive(event))
    return machine, effects


def stream_through(*pieces: bytes) -> tuple[RequestMachine, list[Any]]:
    return run(
        request(stream=True),
        IdentityResolved(identity=ALICE),
        StreamOpened(),
        *[ChunkReceived(data=piece) for piece in pieces],
        StreamEnded(),
    )


def relayed(effects: list[Any]) -> bytes:
    return b"".join(e.data for e in effects if isinstance(e, RelayChunk))


def sse_json(event: bytes) -> Any:
    lines = [line for line in event.split(b"\n") if line.startswith(b"data: ")]
    assert len(lines) == 1, event
    return json.loads(lines[0].removeprefix(b"data: "))


def test_happy_non_stream_path() -> None:
    machine = RequestMachine(CATALOG)
    assert machine.receive(request(authorization=BEARER)) == (Authenticate(credentials=TOKEN),)
    authenticating = machine.state
    assert authenticating is State.AUTHENTICATING

    (call,) = machine.receive(IdentityResolved(identity=ALICE))
    assert isinstance(call, CallAdaptor)
    assert (call.endpoint_slug, call.stream) == ("open-vllm-m1", False)
    assert (call.route, call.request_id) == (OpenAIRoute.CHAT_COMPLETIONS, "req-1")
    assert call.body == body()  # the client's bytes, exactly
    awaiting = machine.state
    assert awaiting is State.AWAITING_RESULT

    result = (
        '{"id":"chatcmpl-1","object":"chat.completion","choices":[],"usage":{"total_tokens":12}}'
    )
    respond, log = machine.receive(AdaptorReturned(result=result))
    assert isinstance(respond, Respond) and isinstance(log, WriteLog)
    assert respond.response.status == 200
    assert respond.response.body == result.encode()
    assert log.entry.status == 200
    assert log.entry.usage == Usage(total_tokens=12)
    assert log.entry.username == "alice@anl.gov"
    assert log.entry.endpoint_slug == "open-vllm-m1"
    assert machine.state is State.DONE and machine.finished


def test_the_model_is_sent_with_the_catalogs_spelling() -> None:
    raw = json.dumps({"model": "M1", "messages": [{"role": "user"}], "top_k": 3}).encode()
    _, effects = run(request(raw=raw), IdentityResolved(identity=ALICE))
    (call,) = [e for e in effects if isinstance(e, CallAdaptor)]
    assert json.loads(call.body) == {"model": "m1", "messages": [{"role": "user"}], "top_k": 3}


def test_happy_stream_path_relays_each_whole_event_byte_for_byte() -> None:
    """Each event goes out as soon as it is whole: a part waits for the rest of it."""
    pieces = [
        b'data: {"id":"c1","choices":[{"delta":{"content":"He"}}]}\n\n',
        b'data: {"id":"c1","choices":[{"delta":{"con',
        b'tent":"llo"}}]}\r\n\r\ndata: {"id":"c1","choices":[],"usage":{"total_tokens":5}}\n\n',
        b"data: [DONE]\n\n",
    ]
    machine, effects = stream_through(*pieces)
    started = [e for e in effects if isinstance(e, StartStream)]
    assert started == [StartStream(status=200, headers=STREAM_HEADERS)]
    assert [e.data for e in effects if isinstance(e, RelayChunk)] == [
        pieces[0],
        pieces[1] + pieces[2],
        pieces[3],
    ]
    assert kinds(effects)[-2:] == [EndStream, WriteLog]
    assert Respond not in kinds(effects)
    (log,) = logs(effects)
    assert (log.entry.status, log.entry.stream) == (200, True)
    assert log.entry.usage == Usage(total_tokens=5)
    assert machine.state is State.DONE


def test_a_stream_cut_without_done_ends_with_an_incomplete_stream_error() -> None:
    first = b'data: {"id":"c1","choices":[]}\n\n'
    _, effects = stream_through(first)
    tail = [e for e in effects if isinstance(e, RelayChunk)][-1].data
    assert relayed(effects) == first + tail
    assert not tail.startswith(b"\n")  # the cut fell between events: no padding needed
    error = sse_json(tail)
    assert error["error"]["code"] == "incomplete_stream"
    assert tail.endswith(b"\n\n")
    assert kinds(effects)[-2:] == [EndStream, WriteLog]
    (log,) = logs(effects)
    assert (log.entry.status, log.entry.error_code) == (502, "incomplete_stream")


def test_a_stream_cut_mid_line_gets_blank_lines_before_the_error_event() -> None:
    _, effects = stream_through(b'data: {"id":"c1"}\n\n', b"da")
    tail = [e for e in effects if isinstance(e, RelayChunk)][-1].data
    assert tail.startswith(b"\n\ndata: ")
    assert sse_json(tail)["error"]["code"] == "incomplete_stream"
    assert kinds(effects)[-2:] == [EndStream, WriteLog]


def test_a_backend_error_event_ends_the_stream_without_an_extra_error() -> None:
    error = b'data: {"error": {"message": "overloaded", "type": "api_error", "code": null}}\n\n'
    _, effects = stream_through(b'data: {"id":"c1"}\n\n', error)
    assert relayed(effects) == b'data: {"id":"c1"}\n\n' + error
    assert kinds(effects)[-2:] == [EndStream, WriteLog]


def test_an_adaptor_failure_mid_stream_becomes_an_error_event() -> None:
    """The event the failure cut short is dropped: no client could parse it."""
    _, effects = run(
        request(stream=True),
        IdentityResolved(identity=ALICE),
        StreamOpened(),
        ChunkReceived(data=b'data: {"id":"c1"}\n\ndata: {"id'),
        AdaptorFailed(status=504, detail="read timeout at http://10.0.0.1:8000/v1"),
    )
    tail = [e for e in effects if isinstance(e, RelayChunk)][-1].data
    assert relayed(effects) == b'data: {"id":"c1"}\n\n' + tail
    assert sse_json(tail)["error"]["code"] == "backend_timeout"
    assert b"10.0.0.1" not in tail
    assert kinds(effects)[-2:] == [EndStream, WriteLog]
    entry = logs(effects)[0].entry
    assert (entry.status, entry.error_code) == (504, "backend_timeout")
    assert entry.detail is not None and "10.0.0.1" not in entry.detail


def test_a_streaming_adaptor_returning_nothing_is_a_502() -> None:
    _, effects = run(request(stream=True), IdentityResolved(identity=ALICE), AdaptorReturned())
    (respond,) = [e for e in effects if isinstance(e, Respond)]
    assert respond.response.status == 502
    assert StartStream not in kinds(effects)


def www_authenticate(effects: list[Any]) -> str:
    (respond,) = [e for e in effects if isinstance(e, Respond)]
    assert respond.response.status == 401
    assert json.loads(respond.response.body)["error"]["type"] == "authentication_error"
    return dict(respond.response.headers)["www-authenticate"]


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Bearer    ", f"Basic {TOKEN}", f"Bearer {TOKEN} extra", TOKEN],
    ids=[
        "missing",
        "empty",
        "bearer alone",
        "bearer space",
        "bearer spaces",
        "basic",
        "two words",
        "no scheme",
    ],
)
def test_without_bearer_credentials_the_answer_is_401(authorization: str | None) -> None:
    machine, effects = run(request(authorization=authorization))
    assert www_authenticate(effects).startswith("Bearer")
    assert Authenticate not in kinds(effects)
    assert machine.state is State.DONE
    assert len(logs(effects)) == 1


def test_the_bearer_scheme_is_case_insensitive() -> None:
    _, effects = run(request(authorization=f"bearer {TOKEN}"))
    assert effects == [Authenticate(credentials=TOKEN)]


def test_an_unknown_token_is_401_invalid_token() -> None:
    machine, effects = run(request(), IdentityResolved(identity=None, reason="unknown"))
    challenge = www_authenticate(effects)
    assert challenge.startswith("Bearer")
    assert 'error="invalid_token"' in challenge
    assert CallAdaptor not in kinds(effects)
    assert machine.state is State.DONE


@pytest.mark.parametrize("reason", ["expired", "inactive", "not yet valid"])
def test_the_providers_reason_is_the_401_error_description(reason: str) -> None:
    _, effects = run(request(), IdentityResolved(identity=None, reason=reason))
    challenge = www_authenticate(effects)
    assert 'error="invalid_token"' in challenge
    assert f'error_description="{reason} token"' in challenge
    assert CallAdaptor not in kinds(effects)


def test_a_reason_outside_the_vocabulary_cannot_exist() -> None:
    with pytest.raises(ValueError):
        IdentityResolved(identity=None, reason=f"token {TOKEN} expired")


@pytest.mark.parametrize(("rule", "what"), [(Rule.GROUP, "group"), (Rule.DOMAIN, "domain")])
def test_a_gateway_wide_refusal_is_403_naming_the_rule(rule: Rule, what: str) -> None:
    machine, effects = run(request(), IdentityResolved(identity=None, refused_by=rule))
    (respond,) = [e for e in effects if isinstance(e, Respond)]
    assert respond.response.status == 403
    assert what in json.loads(respond.response.body)["error"]["message"]
    assert CallAdaptor not in kinds(effects)
    assert machine.state is State.DONE


def test_an_unavailable_identity_provider_is_503() -> None:
    _, effects = run(request(), IdentityUnavailable(detail="connect timeout"))
    (respond,) = [e for e in effects if isinstance(e, Respond)]
    assert respond.response.status == 503
    assert b"connect timeout" not in respond.response.body
    assert logs(effects)[0].entry.detail == "connect timeout"


@pytest.mark.parametrize(
    ("identity", "status"),
    [(Identity(username="dave"), 403), (Identity(username="x@y.z", groups={"team"}), 200)],
)
def test_authorization_decides_before_the_adaptor_is_called(
    identity: Identity, status: int
) -> None:
    _, effects = run(request(raw=body(model="m2")), IdentityResolved(identity=identity))
    if status == 403:
        assert CallAdaptor not in kinds(effects)
        (respond,) = [e for e in effects if isinstance(e, Respond)]
        assert respond.response.status == 403
    else:
        assert kinds(effects) == [Authenticate, CallAdaptor]


def test_an_invalid_body_is_refused_after_authentication_without_a_call() -> None:
    _, effects = run(request(raw=b'{"model": 5}'), IdentityResolved(identity=ALICE))
    (respond,) = [e for e in effects if isinstance(e, Respond)]
    assert respond.response.status == 400
    assert json.loads(respond.response.body)["error"]["param"] == "model"
    assert CallAdaptor not in kinds(effects)


@pytest.mark.parametrize(
    ("events_before", "cancels"),
    [
        ([request()], False),
        ([request(), IdentityResolved(identity=ALICE)], True),
        ([request(stream=True), IdentityResolved(identity=ALICE)], True),
        ([request(stream=True), IdentityResolved(identity=ALICE), StreamOpened()], True),
    ],
    ids=["authenticating", "awaiting result", "awaiting stream", "streaming"],
)
def test_a_disconnect_cancels_the_upstream_call_once_there_is_one(
    events_before: list[Event], cancels: bool
) -> None:
    machine, effects = run(*events_before, ClientDisconnected())
    assert (CancelUpstream in kinds(effects)) is cancels
    (log,) = logs(effects)
    assert log.entry.cancelled is True
    assert log.entry.status == 499
    assert machine.state is State.CANCELLED


SCENARIOS: list[tuple[str, Callable[[], list[Event]]]] = [
    (
        "non stream",
        lambda: [
            request(),
            IdentityResolved(identity=ALICE),
            AdaptorReturned(result='{"id": "x", "choices": []}'),
        ],
    ),
    (
        "backend 4xx",
        lambda: [
            request(),
            IdentityResolved(identity=ALICE),
            AdaptorReturned(error_message=f"bad key {BEARER}", error_code=400),
        ],
    ),
    (
        "stream",
        lambda: [
            request(stream=True),
            IdentityResolved(identity=ALICE),
            StreamOpened(),
            ChunkReceived(data=b"da"),
            StreamEnded(),
        ],
    ),
    ("invalid token", lambda: [request(), IdentityResolved(identity=None, reason="unknown")]),
    ("not bearer", lambda: [request(authorization=f"Basic {TOKEN}")]),
    ("bearer with junk", lambda: [request(authorization=f"Bearer {TOKEN} junk")]),
    ("provider down", lambda: [request(), IdentityUnavailable(detail="down")]),
    ("disconnect", lambda: [request(), IdentityResolved(identity=ALICE), ClientDisconnected()]),
]


@pytest.mark.parametrize("events", [pytest.param(make, id=name) for name, make in SCENARIOS])
def test_the_credentials_never_appear_in_any_effect(events: Callable[[], list[Event]]) -> None:
    _, effects = run(*events())
    assert effects
    for effect in effects:
        assert TOKEN not in repr(effect)
        if isinstance(effect, Respond):
            assert TOKEN.encode() not in effect.response.body


# -- what the log learns of a backend's failure ---------------------------------------------

DETAIL_CHARS = 200  # the most of a failure's account a log entry keeps


@pytest.mark.parametrize(
    ("answer", "status", "code"),
    [
        (AdaptorFailed(status=502, detail="ConnectError: refused"), 502, "backend_error"),
        (AdaptorFailed(status=504, detail="ReadTimeout"), 504, "backend_timeout"),
        (AdaptorReturned(error_code=500, error_message="Traceback ..."), 502, "backend_error"),
        (AdaptorReturned(error_code=503, error_message="overloaded"), 503, "backend_unavailable"),
        (AdaptorReturned(error_code=401, error_message="bad key"), 502, "backend_auth_failed"),
        (AdaptorReturned(), 502, "empty_backend_response"),
        (AdaptorReturned(result="<html>"), 502, "malformed_backend_response"),
        (
            AdaptorReturned(
                error_code=429,
                error_message='{"error": {"message": "slow down", "code": "rate_limit_exceeded"}}',
            ),
            429,
            "rate_limit_exceeded",
        ),
    ],
    ids=["raised", "timed-out", "5xx", "503", "refused-our-key", "empty", "not-json", "4xx"],
)
def test_a_backend_failure_is_logged_with_an_error_code(
    answer: Event, status: int, code: str
) -> None:
    _, effects = run(request(), IdentityResolved(identity=ALICE), answer)
    (entry,) = [log.entry for log in logs(effects)]
    assert (entry.status, entry.error_code) == (status, code)
    assert entry.detail


SECRETS = ("sk-live-0123456789abcdef", "hunter2secret")
noise = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=400)


@given(
    before=noise,
    after=noise,
    shape=st.sampled_from(
        [
            "api_key={sk}",
            '"password": "{pw}"',
            "Authorization: Bearer {sk}",
            "key {sk} rejected",
            "https://user:{pw}@backend.internal/v1",
            "password={pw}&user=ada",
        ]
    ),
    failure=st.sampled_from(["raised", "5xx", "4xx"]),
)
def test_a_logged_detail_is_short_and_never_quotes_a_secret(
    before: str, after: str, shape: str, failure: str
) -> None:
    sk, pw = SECRETS
    text = before + " " + shape.format(sk=sk, pw=pw) + " " + after
    answer: Event = {
        "raised": AdaptorFailed(status=502, detail=text),
        "5xx": AdaptorReturned(error_code=500, error_message=text),
        "4xx": AdaptorReturned(error_code=400, error_message=text),
    }[failure]
    _, effects = run(request(), IdentityResolved(identity=ALICE), answer)
    (entry,) = [log.entry for log in logs(effects)]
    assert entry.detail is not None and len(entry.detail) <= DETAIL_CHARS
    for secret in SECRETS:
        # Not the secret, nor a first part of it long enough to matter.
        assert secret[:8] not in entry.detail


def test_a_stream_that_starts_forgets_the_body_and_keeps_every_other_field() -> None:
    """The request kept once a stream starts is the one received with an empty body,
    field by field: a field added to RequestReceived must be added there too."""
    sent = attrs.evolve(request(stream=True, cluster="open", framework="vllm"), client="192.0.2.7")
    assert all(getattr(sent, f.name) != f.default for f in attrs.fields(RequestReceived)), (
        "every field set, so a dropped one shows"
    )
    machine = RequestMachine(CATALOG)
    machine.receive(sent)
    (call,) = machine.receive(IdentityResolved(identity=ALICE))
    assert isinstance(call, CallAdaptor) and call.stream
    machine.receive(StreamOpened())
    assert machine._request == attrs.evolve(sent, body=b"")
