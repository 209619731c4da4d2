"""SIGTERM under load: a real `inference-gateway serve` on its embedded SQLite log, many
clients at once, SIGTERM in the middle, a restart; every request that got a complete
answer has its record, and no record is there twice.  On asyncio and on trio."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from frontends.store import Store
from frontends.store._schema import request_log

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "frontends.cli"]
CLIENTS = 16
SIGNAL_AFTER = 60  # complete answers before the SIGTERM
CHAT = {"model": "demo-model", "messages": [{"role": "user", "content": "Hello"}]}


def _env(state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERENCE_GATEWAY_")}
    env.update(INFERENCE_GATEWAY_STATE_DIR=str(state), PYTHONPATH=str(ROOT))
    return env


def _start(state: Path, loop: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [*CLI, "serve", "--port", "0", "--loop", loop],
        env=_env(state),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    first = process.stdout.readline()
    found = re.search(r"on (http://\S+)/v1", first)
    if found is None:
        process.kill()
        _, err = process.communicate(timeout=30)
        raise AssertionError(f"no banner: {first!r}\n{err}")
    # The banner comes before the signal handlers are set: wait until it answers
    # (polling a real process, with a deadline).
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{found[1]}/resource_server/health", timeout=5).status_code == 200:
                return process, found[1]
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the gateway never answered"
        time.sleep(0.05)


def _stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    return err


def _complete(client: httpx.Client, url: str, token: str, rid: str, stream: bool) -> bool:
    """Send one request; True only if its whole answer arrived."""
    headers = {"Authorization": f"Bearer {token}", "X-Request-ID": rid}
    body = {**CHAT, "stream": stream}
    with client.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers) as r:
        content = r.read()
    if r.status_code != 200:
        return False
    if stream:
        return content.endswith(b"data: [DONE]\n\n")
    return b'"choices"' in content


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_sigterm_under_load_keeps_a_record_of_every_answered_request(
    tmp_path: Path, loop: str
) -> None:
    state = tmp_path / "state"
    process, url = _start(state, loop)
    token = (state / "local-key").read_text().strip()
    answered: list[str] = []
    lock = threading.Lock()
    enough = threading.Event()

    def client(number: int) -> None:
        with httpx.Client(timeout=30) as http:
            for n in range(10_000):
                rid = f"c{number}-{n}"
                try:
                    done = _complete(http, url, token, rid, stream=n % 2 == 1)
                except httpx.HTTPError:
                    return  # the server went away: this client is done
                if done:
                    with lock:
                        answered.append(rid)
                        if len(answered) >= SIGNAL_AFTER:
                            enough.set()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    try:
        for thread in threads:
            thread.start()
        assert enough.wait(60), "the clients got too few answers"
        err = _stop(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)
        for thread in threads:
            thread.join(60)
    assert "request log flushed" in err

    # A second start on the same state: the log is intact and the schema as it was.
    again, _ = _start(state, loop)
    _stop(again)

    store = Store.connect(f"sqlite:///{state / 'gateway.db'}")
    try:
        with store.engine.connect() as connection:
            ids = connection.execute(sa.select(request_log.c.request_id)).scalars().all()
    finally:
        store.close()
    counts = Counter(ids)
    assert len(answered) >= SIGNAL_AFTER
    missing = [rid for rid in answered if counts[rid] == 0]
    assert missing == []
    assert [rid for rid, n in counts.items() if n > 1] == []
