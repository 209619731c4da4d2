"""SIGTERM under load: a real `inference-gateway serve` on its embedded SQLite log, many
clients at once, SIGTERM in the middle, a restart; every request that got a complete
answer has its record, and no record is there twice.  On asyncio and on trio."""

from __future__ import annotations

import signal
import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from frontends.store import Store
from frontends.store._schema import request_log
from tests.support.serve_process import start_serve

pytestmark = pytest.mark.e2e

CLIENTS = 16
SIGNAL_AFTER = 60  # complete answers before the SIGTERM
CHAT = {"model": "demo-model", "messages": [{"role": "user", "content": "Hello"}]}


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
    process = start_serve(tmp_path, loop=loop, tokens=False)
    url = process.url
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
        assert process.stop(signal.SIGTERM) == 0, process.log()
    finally:
        if process.running:
            process.kill()
        for thread in threads:
            thread.join(60)
    assert "request log flushed" in process.log()

    # A second start on the same state: the log is intact and the schema as it was.
    again = start_serve(tmp_path, loop=loop, tokens=False)
    assert again.stop(signal.SIGTERM) == 0, again.log()

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
