"""The store sink's mapping: the core's `LogEntry` and the edge's `Timing` become one
`RequestRecord`; prompts and answers are kept only when capture is on, and capped."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from frontends.log_sink import Timing
from frontends.request_log import RequestLog, record_of
from frontends.store import Store
from tests.support.log_entries import log_entry

ENTRY = log_entry(
    stream=True, estimated=True, cancelled=True, detail="x" * 5000, task_id="task-9"
)
TIMING = Timing(
    received_at=1_795_000_000.0,
    first_byte_at=1_795_000_000.25,
    done_at=1_795_000_001.5,
    request_id="client-id",
    prompt="é prompt text".encode(),
    response=b"data: answer",
)


def test_an_entry_and_its_timing_become_one_record() -> None:
    record = record_of(ENTRY, TIMING)
    assert (record.id, record.request_id) == ("log-1", "client-id")
    assert record.received_at == datetime.fromtimestamp(1_795_000_000.0, UTC)
    assert record.first_byte_at == datetime.fromtimestamp(1_795_000_000.25, UTC)
    assert record.done_at == datetime.fromtimestamp(1_795_000_001.5, UTC)
    assert (record.username, record.identity_provider) == ("ada@example.org", "static")
    assert (record.cluster, record.framework, record.model) == ("lab", "vllm", "m")
    assert (record.endpoint_slug, record.backend_task_id, record.streamed) == (
        "lab-vllm-m",
        "task-9",
        True,
    )
    assert (record.prompt_tokens, record.completion_tokens, record.total_tokens) == (3, 4, 7)
    assert record.tokens_estimated and record.cancelled
    assert (record.bytes_in, record.bytes_out, record.client_address) == (10, 20, "10.0.0.1")
    assert record.detail == "x" * 1024  # capped
    # Capture off: bodies handed over are not kept.
    assert (record.prompt, record.response) == (None, None)


def test_capture_keeps_at_most_the_limit_in_characters() -> None:
    record = record_of(ENTRY, TIMING, capture_limit=8)
    assert (record.prompt, record.response) == ("é prompt", "data: an")


def test_without_an_http_request_id_the_record_uses_its_own_id() -> None:
    timing = Timing(received_at=1.0, done_at=2.0)
    assert record_of(ENTRY, timing).request_id == "log-1"


def test_a_request_log_not_running_counts_a_record_as_dropped(tmp_path: Path) -> None:
    store = Store.connect(f"sqlite:///{tmp_path}/gateway.db")
    try:
        log = RequestLog(store)
        log.write(ENTRY, TIMING)
        assert log.status() == {"queue_depth": 0, "written": 0, "dropped": 1, "failed": 0}
    finally:
        store.close()


@pytest.mark.anyio
async def test_a_running_request_log_writes_and_flushes_on_leaving(tmp_path: Path) -> None:
    store = Store.connect(f"sqlite:///{tmp_path}/gateway.db")
    try:
        log = RequestLog(store)
        async with log.running():
            log.write(ENTRY, TIMING)
        assert log.status()["written"] == 1
        assert store.get("log-1") == record_of(ENTRY, TIMING)
    finally:
        store.close()


def test_a_request_log_is_the_metrics_log_queue(tmp_path: Path) -> None:
    from frontends.metrics import MetricsSink
    from tests.test_metrics import samples, value

    store = Store.connect(f"sqlite:///{tmp_path}/gateway.db")
    try:
        log = RequestLog(store)
        metrics = MetricsSink(log_queue=log)
        log.write(ENTRY, TIMING)  # not running: dropped, and the metrics say so
        found = samples(metrics.render()[0].decode())
        assert value(found, "inference_gateway_log_records_dropped_total") == 1
        assert value(found, "inference_gateway_log_queue_depth") == 0
    finally:
        store.close()
