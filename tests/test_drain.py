"""Graceful drain and closing connections: a real `inference-gateway serve` (a subprocess,
on asyncio and on trio) in front of a backend whose answers wait at gates the test opens.

On SIGTERM the gateway refuses new connections, lets the streams and requests in flight
finish until its drain deadline, then ends those still running with an OpenAI error
event (streams, with a properly ended body) or a 503 (requests still waiting for their
answer), logs each as what it was, and exits 0.  Idle keep-alive connections are closed
when the drain begins; a second signal ends the drain at once; with `--workers` too.
And on both loops a connection is closed after `Connection: close` at once, and after
the keep-alive idle timeout when idle (checked on raw sockets).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import attrs
import httpx
import pytest
import sqlalchemy as sa

from frontends.quota import RedisCounters
from frontends.store import Store
from frontends.store._schema import request_log
from tests.support.gated_openai import MODEL, running_gated_openai
from tests.support.gateway_server import ALICE, TOKENS, write_tokens
from tests.support.quota import REDIS_URL, limited_fixtures, redis_prefix

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
LOOPS = ["asyncio", "trio"]
# Generous bounds for a noisy machine; none is a measurement.
BOUND = 60.0
ALICE_NAME = TOKENS[0]["username"]
TPM_USER = 10_000


# -- a served gateway, as a subprocess ---------------------------------------------------


@attrs.define
class Served:
    process: subprocess.Popen[str]
    url: str
    host: str
    port: int
    log_path: Path
    state: Path

    def signal(self, signum: signal.Signals = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    def exit_status(self) -> int:
        self.process.wait(timeout=BOUND)
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text()

    def records(self) -> dict[str, Any]:
        """The request log's rows by request id (after the process ended)."""
        store = Store.connect(f"sqlite:///{self.state / 'gateway.db'}")
        try:
            with store.engine.connect() as connection:
                rows = connection.execute(sa.select(request_log)).mappings().all()
        finally:
            store.close()
        return {row["request_id"]: row for row in rows}


@contextmanager
def serving(
    tmp_path: Path, backend_url: str, loop: str, *, tpm_user: int = 0, **settings: str
) -> Iterator[Served]:
    """`inference-gateway serve` on a free port with these settings, answering; killed at
    the end if the test has not stopped it."""
    fixtures = limited_fixtures(tmp_path / "fixtures", backend_url, [MODEL], tpm_user=tpm_user)
    state = tmp_path / f"state-{loop}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERENCE_GATEWAY_")}
    env.update(
        PYTHONPATH=str(ROOT),
        INFERENCE_GATEWAY_TOKENS_FILE=str(write_tokens(tmp_path)),
        INFERENCE_GATEWAY_STATE_DIR=str(state),
        **{f"INFERENCE_GATEWAY_{name.upper()}": value for name, value in settings.items()},
    )
    command = [sys.executable, "-m", "frontends.cli", "serve", "--port", "0", "--loop", loop]
    log_path = tmp_path / f"serve-{loop}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [*command, "--fixtures", str(fixtures)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        found = re.search(r"on (http://([\d.]+):(\d+))/v1", banner)
        assert found, banner + log_path.read_text()
        served = Served(process, found[1], found[2], int(found[3]), log_path, state)
        _wait_until_answering(served)
        yield served
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=BOUND)


def _wait_until_answering(served: Served) -> None:
    """Signal handlers are in place before the socket is served, so once it answers, a
    SIGTERM drains (polling a real process, with a deadline)."""
    deadline = time.monotonic() + BOUND
    while True:
        try:
            if httpx.get(f"{served.url}/resource_server/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert served.process.poll() is None, served.log()
        assert time.monotonic() < deadline, "the gateway never answered"
        time.sleep(0.05)


def wait_until_refused(served: Served) -> None:
    """Polls until a new connection is refused: the drain has begun."""
    deadline = time.monotonic() + BOUND
    while True:
        try:
            with socket.create_connection((served.host, served.port), timeout=5):
                pass
        except ConnectionRefusedError:
            return
        assert time.monotonic() < deadline, "new connections were still accepted"
        time.sleep(0.05)


# -- clients in threads ------------------------------------------------------------------


@attrs.define
class Outcome:
    status: int | None = None
    body: bytes = b""
    error: BaseException | None = None

    def events(self) -> list[Any]:
        """The SSE data lines, parsed ([DONE] as the string)."""
        out: list[Any] = []
        for line in self.body.split(b"\n"):
            if line.startswith(b"data: "):
                data = line.removeprefix(b"data: ")
                out.append("[DONE]" if data == b"[DONE]" else json.loads(data))
        return out


class Client(threading.Thread):
    """One chat request (the gate's name is its message and its request id), read to the
    end; httpx raises if a chunked body is not properly terminated."""

    def __init__(self, served: Served, name: str, *, stream: bool) -> None:
        super().__init__(name=f"client-{name}", daemon=True)
        self.served, self.gate, self.stream = served, name, stream
        self.outcome = Outcome()

    def run(self) -> None:
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": self.gate}],
            "stream": self.stream,
        }
        headers = {"Authorization": f"Bearer {ALICE}", "X-Request-ID": self.gate}
        try:
            with (
                httpx.Client(timeout=BOUND * 2) as http,
                http.stream(
                    "POST", f"{self.served.url}/v1/chat/completions", json=body, headers=headers
                ) as response,
            ):
                self.outcome.status = response.status_code
                self.outcome.body = response.read()
        except BaseException as exc:
            self.outcome.error = exc

    def result(self) -> Outcome:
        self.join(BOUND * 2)
        assert not self.is_alive(), f"{self.gate} never ended"
        assert self.outcome.error is None, f"{self.gate}: {self.outcome.error!r}"
        return self.outcome


def start_clients(served: Served, names: Sequence[str], *, stream: bool = True) -> list[Client]:
    clients = [Client(served, name, stream=stream) for name in names]
    for client in clients:
        client.start()
    return clients


def assert_completed(outcome: Outcome) -> None:
    assert outcome.status == 200
    events = outcome.events()
    assert events[-1] == "[DONE]"
    assert not any(isinstance(e, dict) and "error" in e for e in events)
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert text == "Hello world"


def assert_ended_by_shutdown(outcome: Outcome) -> None:
    assert outcome.status == 200
    *relayed, last = outcome.events()
    assert relayed and relayed[0]["choices"][0]["delta"]["content"] == "Hello"
    assert last["error"]["code"] == "gateway_shutting_down"
    assert last["error"]["type"] == "api_error"
    assert "shutting down" in last["error"]["message"]
    assert outcome.body.endswith(b"\n\n")


# -- drain ----------------------------------------------------------------------------


@pytest.mark.parametrize("loop", LOOPS)
def test_sigterm_lets_streams_finish_until_the_deadline_then_ends_the_rest(
    tmp_path: Path, loop: str
) -> None:
    finishing, cut, waiting = ["finish-1", "finish-2"], ["cut-1", "cut-2"], "wait-1"
    with (
        running_gated_openai() as (backend, backend_url),
        serving(tmp_path, backend_url, loop, drain_seconds="10") as served,
    ):
        streams = start_clients(served, [*finishing, *cut])
        (answer,) = start_clients(served, [waiting], stream=False)
        backend.wait_until_waiting([*finishing, *cut, waiting])

        served.signal(signal.SIGTERM)
        wait_until_refused(served)
        # Within the deadline: these two go on and complete as if nothing happened.
        backend.open(*finishing)
        for client in streams[:2]:
            assert_completed(client.result())
        # At the deadline: the rest end with the shutting-down error, properly.
        for client in streams[2:]:
            assert_ended_by_shutdown(client.result())
        cut_answer = answer.result()
        assert cut_answer.status == 503
        assert json.loads(cut_answer.body)["error"]["code"] == "gateway_shutting_down"

        assert served.exit_status() == 0, served.log()
        assert "drain over: ending 3 request(s) still waiting on their backends" in served.log()
        assert "request log flushed" in served.log()
        records = served.records()
    for name in finishing:
        assert (records[name]["status"], records[name]["error_code"]) == (200, None)
    for name in [*cut, waiting]:
        record = records[name]
        assert (record["status"], record["error_code"]) == (503, "gateway_shutting_down")
        assert record["cancelled"] is False
        assert record["detail"] == "drain deadline passed"
    assert [records[n]["streamed"] for n in [*cut, waiting]] == [True, True, False]


@pytest.mark.parametrize("loop", LOOPS)
def test_the_drain_closes_idle_connections_and_a_second_signal_ends_it_at_once(
    tmp_path: Path, loop: str
) -> None:
    # A deadline far beyond the test's bounds: only the second signal can end the drain.
    # Token quotas in Redis: what the two streams used is settled there before the exit.
    with (
        running_gated_openai() as (backend, backend_url),
        redis_prefix() as prefix,
        serving(
            tmp_path,
            backend_url,
            loop,
            tpm_user=TPM_USER,
            drain_seconds="600",
            keep_alive_seconds="600",
            redis_url=REDIS_URL,
            redis_key_prefix=prefix,
        ) as served,
        socket.create_connection((served.host, served.port), timeout=BOUND) as idle,
    ):
        idle.sendall(b"GET /resource_server/health HTTP/1.1\r\nHost: gateway\r\n\r\n")
        assert read_response_head(idle).startswith(b"HTTP/1.1 200")
        finishing, cut = start_clients(served, ["finish-1", "cut-1"])
        backend.wait_until_waiting(["finish-1", "cut-1"])

        served.signal(signal.SIGINT)  # Ctrl-C drains as SIGTERM does
        assert closed_by_server(idle), "an idle keep-alive connection outlived the drain"
        wait_until_refused(served)
        backend.open("finish-1")
        assert_completed(finishing.result())

        served.signal(signal.SIGTERM)
        assert_ended_by_shutdown(cut.result())
        assert served.exit_status() == 0, served.log()
        records = served.records()
        settled = anyio.run(redis_used, prefix, f"tpm_user:fake-api-{MODEL}:{ALICE_NAME}")
    assert records["finish-1"]["status"] == 200
    assert records["cut-1"]["error_code"] == "gateway_shutting_down"
    # Each stream reserved its prompt and 1024 tokens (the default max_tokens); settled,
    # they hold what they relayed (estimated: a few tokens each).
    assert 0 < settled < 1024
    assert settled == sum(records[n]["total_tokens"] for n in ("finish-1", "cut-1"))


async def redis_used(prefix: str, key: str) -> int:
    counters = RedisCounters(REDIS_URL, prefix=prefix)
    try:
        return await counters.used(key)
    finally:
        await counters.aclose()


def test_with_workers_each_drains_and_new_connections_are_refused(tmp_path: Path) -> None:
    with (
        running_gated_openai() as (backend, backend_url),
        serving(tmp_path, backend_url, "asyncio", workers="2", drain_seconds="600") as served,
    ):
        # Each worker logs this once it serves, its signal handlers already in place (a
        # worker still starting would die of the signal; that is not the drain's part).
        deadline = time.monotonic() + BOUND
        while served.log().count("Running on http") < 2:
            assert time.monotonic() < deadline, served.log()
            time.sleep(0.05)
        streams = start_clients(served, ["finish-1", "cut-1"])
        backend.wait_until_waiting(["finish-1", "cut-1"])

        served.signal(signal.SIGTERM)  # the parent passes it to each worker
        wait_until_refused(served)
        backend.open("finish-1")
        assert_completed(streams[0].result())
        served.signal(signal.SIGTERM)
        assert_ended_by_shutdown(streams[1].result())
        assert served.exit_status() == 0, served.log()


# -- closing connections, on raw sockets --------------------------------------------------


def read_response_head(sock: socket.socket) -> bytes:
    """The status line and headers of one response (plus whatever came with them)."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        assert piece, f"closed before a response: {data!r}"
        data += piece
    return data


def closed_by_server(sock: socket.socket) -> bool:
    """Reads (and drops) the rest until the server closes: True when it did within the
    socket's timeout."""
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    return True


@pytest.mark.parametrize("loop", LOOPS)
def test_connection_close_and_keep_alive_idle_close_the_socket(tmp_path: Path, loop: str) -> None:
    with (
        running_gated_openai() as (backend, backend_url),
        serving(tmp_path, backend_url, loop, keep_alive_seconds="1") as served,
    ):
        address = (served.host, served.port)
        with socket.create_connection(address, timeout=BOUND) as sock:
            sock.sendall(
                b"GET /resource_server/health HTTP/1.1\r\nHost: gateway\r\n"
                b"Connection: close\r\n\r\n"
            )
            assert read_response_head(sock).startswith(b"HTTP/1.1 200")
            assert closed_by_server(sock), "Connection: close left the socket open"

        backend.open("streamed")
        body = json.dumps(
            {"model": MODEL, "messages": [{"role": "user", "content": "streamed"}], "stream": True}
        ).encode()
        with socket.create_connection(address, timeout=BOUND) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n"
                + f"Authorization: Bearer {ALICE}\r\nContent-Type: application/json\r\n".encode()
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            assert read_response_head(sock).startswith(b"HTTP/1.1 200")
            assert closed_by_server(sock), "Connection: close after a stream left it open"

        with socket.create_connection(address, timeout=BOUND) as sock:
            sock.sendall(b"GET /resource_server/health HTTP/1.1\r\nHost: gateway\r\n\r\n")
            assert read_response_head(sock).startswith(b"HTTP/1.1 200")
            assert closed_by_server(sock), "an idle keep-alive connection was never closed"

        served.signal(signal.SIGTERM)
        assert served.exit_status() == 0, served.log()
