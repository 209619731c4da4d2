"""Streams report what they used: the gateway asks the backend for usage at the end of
every chat or completions stream (`stream_options.include_usage`), reads it, and leaves
that one event out of what the client receives unless the client asked for it too.
Every other byte of the stream reaches the client as the backend sent it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from core import (
    CallAdaptor,
    Catalog,
    ChunkReceived,
    ClusterRecord,
    EndpointRecord,
    Identity,
    IdentityResolved,
    OpenAIRoute,
    RelayChunk,
    RequestMachine,
    RequestReceived,
    StreamEnded,
    StreamOpened,
    Usage,
    WriteLog,
    estimate_prompt_tokens,
)
from frontends.assembly import build_gateway
from frontends.identity import StaticKeys
from frontends.web import create_app
from tests.support.fake_openai import FakeOpenAI, running_fake_openai
from tests.support.gateway_server import ALICE, write_fixtures, write_tokens
from tests.support.servers import serve_app
from transports.httpx_transport import HttpxTransport

CATALOG = Catalog.build(
    [
        ClusterRecord(
            id="1",
            cluster_name="c",
            cluster_adapter="adaptors.clusters.demo.DemoCluster",
            frameworks=["vllm"],
            openai_endpoints=["chat/completions", "completions", "embeddings"],
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
ADA = Identity(username="ada@example.org")
CHUNK = b'data: {"choices":[{"delta":{"content":"Hi"}}],"usage":null}\n\n'
USAGE = (
    b'data: {"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}}\n\n'
)
DONE = b"data: [DONE]\n\n"


def call_for(
    body: dict[str, Any], route: OpenAIRoute = OpenAIRoute.CHAT_COMPLETIONS
) -> tuple[RequestMachine, CallAdaptor]:
    machine = RequestMachine(CATALOG, stream_usage=True)
    raw = json.dumps(body).encode()
    machine.receive(
        RequestReceived(request_id="r", route=route, body=raw, authorization="Bearer k")
    )
    (call,) = machine.receive(IdentityResolved(identity=ADA))
    assert isinstance(call, CallAdaptor)
    return machine, call


CHAT = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "Hi"}]}


def relay(machine: RequestMachine, *pieces: bytes) -> tuple[bytes, WriteLog]:
    effects: list[Any] = [*machine.receive(StreamOpened())]
    for piece in pieces:
        effects.extend(machine.receive(ChunkReceived(data=piece)))
    effects.extend(machine.receive(StreamEnded()))
    (log,) = [e for e in effects if isinstance(e, WriteLog)]
    return b"".join(e.data for e in effects if isinstance(e, RelayChunk)), log


def test_an_open_stream_lets_go_of_the_clients_body_and_still_counts_it() -> None:
    """A stream can stay open for minutes; its prompt (a coding agent's runs to hundreds
    of kilobytes) is not kept for that long: once the stream starts (it is never retried
    then) the machine holds neither the bytes nor their parsed form, yet the log still
    has the body's size and, with no usage from the backend, the prompt's estimate."""
    prompt = "x" * 400_000
    body = json.dumps({**CHAT, "messages": [{"role": "user", "content": prompt}]}).encode()
    machine = RequestMachine(CATALOG)
    machine.receive(
        RequestReceived(
            request_id="r", route=OpenAIRoute.CHAT_COMPLETIONS, body=body, authorization="Bearer k"
        )
    )
    machine.receive(IdentityResolved(identity=ADA))  # the call, dropped as a driver does
    alone = 2  # `body` and getrefcount's own argument
    assert sys.getrefcount(body) > alone
    machine.receive(StreamOpened())
    assert sys.getrefcount(body) == alone
    machine.receive(ChunkReceived(data=CHUNK + DONE))
    (log,) = [e for e in machine.receive(StreamEnded()) if isinstance(e, WriteLog)]
    assert log.entry.bytes_in == len(body)
    assert log.entry.estimated and log.entry.usage is not None
    assert log.entry.usage.prompt_tokens == estimate_prompt_tokens(json.loads(body))


def test_the_backend_is_asked_for_usage_and_the_client_does_not_see_it() -> None:
    machine, call = call_for(CHAT)
    assert json.loads(call.body) == {**CHAT, "stream_options": {"include_usage": True}}
    # The usage event split across chunks, the rest byte for byte.
    sent, log = relay(machine, CHUNK + USAGE[:30], USAGE[30:] + DONE)
    assert sent == CHUNK + DONE
    assert log.entry.usage == Usage(prompt_tokens=4, completion_tokens=2, total_tokens=6)
    assert not log.entry.estimated


def test_a_client_that_asked_for_usage_gets_its_bytes_sent_and_the_usage_event() -> None:
    body = {**CHAT, "stream_options": {"include_usage": True}}
    raw = json.dumps(body).encode()
    machine, call = call_for(body)
    assert call.body == raw
    sent, log = relay(machine, CHUNK, USAGE, DONE)
    assert sent == CHUNK + USAGE + DONE
    assert log.entry.usage is not None and log.entry.usage.total_tokens == 6


def test_other_stream_options_are_kept() -> None:
    _, call = call_for({**CHAT, "stream_options": {"continuous_usage_stats": True}})
    assert json.loads(call.body)["stream_options"] == {
        "continuous_usage_stats": True,
        "include_usage": True,
    }


def raw_call(raw: bytes) -> CallAdaptor:
    machine = RequestMachine(CATALOG, stream_usage=True)
    machine.receive(
        RequestReceived(
            request_id="r", route=OpenAIRoute.CHAT_COMPLETIONS, body=raw, authorization="Bearer k"
        )
    )
    (call,) = machine.receive(IdentityResolved(identity=ADA))
    assert isinstance(call, CallAdaptor)
    return call


def test_usage_is_asked_for_within_the_clients_own_bytes() -> None:
    """The member is written in after the body's opening brace: every byte the client
    sent goes on as it came (a byte-order mark, spacing, text that is not ASCII)."""
    message = '{"role": "user", "content": "Grüße"}'
    raw = f'\ufeff\n {{"model": "m",  "stream": true, "messages": [{message}]}}'
    call = raw_call(raw.encode())
    head, brace, rest = raw.partition("{")
    asked = '"stream_options":{"include_usage":true},'
    assert call.body == (head + brace + asked + rest).encode()
    assert json.loads(call.body) == {
        **json.loads(raw.encode()),
        "stream_options": {"include_usage": True},
    }


@pytest.mark.parametrize(
    "changed",
    [{"stream_options": None}, {"model": "M"}, {"model": "M", "stream_options": None}],
    ids=["null-options", "model-renamed", "both"],
)
def test_usage_is_asked_for_in_a_body_the_gateway_re_encodes(changed: dict[str, Any]) -> None:
    """A `stream_options` of null is replaced, and a body whose model name is changed is
    re-encoded; usage is asked for in each, once."""
    call = raw_call(json.dumps({**CHAT, **changed}).encode())
    assert call.body.count(b'"stream_options"') == 1
    assert json.loads(call.body) == {**CHAT, "stream_options": {"include_usage": True}}


def test_non_streams_and_embeddings_are_sent_as_the_client_wrote_them() -> None:
    whole = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}
    _, call = call_for(whole)
    assert call.body == json.dumps(whole).encode()
    embedding = {"model": "m", "input": "Hi"}
    _, call = call_for(embedding, OpenAIRoute.EMBEDDINGS)
    assert call.body == json.dumps(embedding).encode()


def test_a_stream_cut_before_its_end_still_relays_what_came() -> None:
    """Every whole event; the one cut short is dropped (no client could parse it)."""
    machine, _ = call_for(CHAT)
    sent, log = relay(machine, CHUNK, b'data: {"choices":[{"delta":')
    assert sent.startswith(CHUNK + b'data: {"error": ')
    assert b"incomplete_stream" in sent
    assert log.entry.status == 502


# -- end to end, through a real server and a backend that honours include_usage -----------

KEY_ENV = "IGW_STREAM_USAGE_KEY"


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[FakeOpenAI, str, list[WriteLog]]]:
    folder = tmp_path_factory.mktemp("stream-usage")
    with running_fake_openai(models=["m"], api_key="sk-su") as (fake, backend_url):
        cluster = {
            "cluster_name": "local",
            "frameworks": ["vllm"],
            "openai_endpoints": ["chat/completions", "completions"],
            "cluster_adapter": "adaptors.clusters.openai_compatible.OpenAICompatibleCluster",
            "config": {"api_url": f"{backend_url}/v1"},
        }
        endpoint = {
            "endpoint_slug": "local-vllm-m",
            "cluster": "local",
            "framework": "vllm",
            "model": "m",
            "endpoint_adapter": "adaptors.endpoints.direct_api.DirectAPIEndpoint",
            "config": {"api_url": f"{backend_url}/v1", "api_key_env_name": KEY_ENV},
        }
        fixtures = write_fixtures(folder / "fixtures", [cluster], [endpoint])
        records: list[WriteLog] = []

        class Sink:
            def write(self, entry: Any, timing: Any) -> None:
                records.append(WriteLog(entry=entry))

        gateway = build_gateway(
            fixtures,
            identity=StaticKeys.from_file(write_tokens(folder)),
            transport=HttpxTransport(),
            environ={KEY_ENV: "sk-su"},
            log_sink=Sink(),
            stream_usage=True,
        )
        with serve_app(create_app(gateway)) as url:
            yield fake, url, records


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("chat/completions", {"messages": [{"role": "user", "content": "count me in"}]}),
        ("completions", {"prompt": "count me in"}),
    ],
)
def test_a_real_stream_is_counted_from_the_backend_and_relayed_without_the_usage_event(
    served: tuple[FakeOpenAI, str, list[WriteLog]], route: str, body: dict[str, Any]
) -> None:
    fake, url, records = served
    with httpx.stream(
        "POST",
        f"{url}/v1/{route}",
        json={"model": "m", "stream": True, **body},
        headers={"Authorization": f"Bearer {ALICE}"},
    ) as response:
        text = response.read().decode()
    assert response.status_code == 200
    events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert all('"usage"' not in e for e in events)
    assert json.loads(fake.requests[-1].body)["stream_options"] == {"include_usage": True}
    log = records[-1]
    assert log.entry.usage is not None and log.entry.usage.total_tokens > 0
    assert not log.entry.estimated
