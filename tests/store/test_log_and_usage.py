"""The request log and usage, the same suite on SQLite and on PostgreSQL."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta, timezone

import anyio
import attrs
import pytest

from frontends.store import CAPTURE_CEILING, RequestRecord, Store, UsageRow, capture, usage
from frontends.store._usage import fetch_usage
from tests.store.factories import T0, record

CEST = timezone(timedelta(hours=2))


def test_every_field_reads_back(store: Store) -> None:
    full = RequestRecord(
        id="log-full",
        request_id="req-full",
        received_at=datetime(2026, 11, 20, 23, 59, 59, 123456, tzinfo=CEST),
        first_byte_at=datetime(2026, 11, 20, 22, 0, 0, 250000, tzinfo=UTC),
        done_at=datetime(2026, 11, 20, 22, 0, 3, tzinfo=UTC),
        route="chat/completions",
        status=502,
        streamed=True,
        username="ada@example.org",
        identity_provider="globus",
        cluster="polaris",
        framework="vllm",
        model="meta-llama/Llama-3-8B",
        endpoint_slug="polaris-vllm-llama-3-8b",
        error_code="upstream_error",
        backend_task_id="task-7f3e",
        prompt_tokens=1234,
        completion_tokens=567,
        total_tokens=1801,
        tokens_estimated=True,
        bytes_in=2048,
        bytes_out=2**40,
        client_address="2001:db8::1",
        prompt='{"messages": [{"role": "user", "content": "Grüße ✓"}]}',
        response="data: {}\n\n",
    )
    bare = RequestRecord(
        id="log-bare", request_id="req-bare", received_at=T0, route="models", status=401
    )
    assert store.write_batch([full, bare]) == 2

    stored = store.get("log-full")
    assert stored == full
    assert stored is not None and stored.received_at.utcoffset() == timedelta(0)
    assert stored.received_at == datetime(2026, 11, 20, 21, 59, 59, 123456, tzinfo=UTC)
    assert store.get("log-bare") == bare
    assert store.get("log-none") is None
    assert store.count() == 2


def test_a_record_written_twice_is_kept_once(store: Store) -> None:
    # A batch retried after a commit whose answer was lost must not fail on itself.
    assert store.write_batch([record(1), record(2)]) == 2
    assert store.write_batch([record(2), record(3)]) == 2
    assert store.count() == 3


def test_a_record_the_database_refuses_costs_only_itself(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    refused = record(2, prompt="a secret prompt")
    object.__setattr__(refused, "status", 999)  # slipped past validation: the CHECK refuses
    with caplog.at_level(logging.ERROR, logger="frontends.store"):
        assert store.write_batch([record(1), refused, record(3)]) == 2
    assert [store.get(f"log-00000{n}") is not None for n in (1, 2, 3)] == [True, False, True]
    assert "log-000002" in caplog.text
    assert "secret" not in caplog.text


def _dataset() -> list[RequestRecord]:
    day1, day2 = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC)
    return [
        # Nov 1 (UTC): ada twice on llama, bob once on mistral with estimated tokens.
        record(1, received_at=day1 + timedelta(hours=1), username="ada", model="llama"),
        record(
            2,
            received_at=day1 + timedelta(hours=23, minutes=59),
            username="ada",
            model="llama",
            prompt_tokens=100,
            completion_tokens=20,
            total_tokens=120,
        ),
        record(
            3,
            received_at=day1 + timedelta(hours=5),
            username="bob",
            model="mistral",
            prompt_tokens=40,
            completion_tokens=0,
            total_tokens=40,
            tokens_estimated=True,
        ),
        # 01:30 on Nov 2 in UTC+2 is 23:30 on Nov 1 in UTC: counted on Nov 1.
        record(
            4,
            received_at=datetime(2026, 11, 2, 1, 30, tzinfo=CEST),
            username="bob",
            model="llama",
        ),
        # Nov 2 (UTC): ada on mistral, and a request refused before any user was known.
        record(5, received_at=day2 + timedelta(hours=9), username="ada", model="mistral"),
        record(
            6,
            received_at=day2 + timedelta(hours=10),
            username=None,
            model=None,
            status=401,
            prompt_tokens=None,
            completion_tokens=None,
            total_tokens=None,
        ),
        # Oct 31: before every `since` below.
        record(7, received_at=day1 - timedelta(hours=1), username="ada", model="llama"),
    ]


def _row(key: object, requests: int, prompt: int, completion: int, estimated: int = 0) -> UsageRow:
    return UsageRow(
        key=key,  # type: ignore[arg-type]
        requests=requests,
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        estimated_tokens=estimated,
    )


def test_usage_by_user_model_and_day(store: Store) -> None:
    store.write_batch(_dataset())
    since = date(2026, 11, 1)

    assert fetch_usage(store, by="user", since=since) == [
        _row(None, 1, 0, 0),
        _row("ada", 3, 120, 30),
        _row("bob", 2, 50, 5, estimated=40),
    ]
    assert fetch_usage(store, by="model", since=since) == [
        _row(None, 1, 0, 0),
        _row("llama", 3, 120, 30),
        _row("mistral", 2, 50, 5, estimated=40),
    ]
    assert fetch_usage(store, by="day", since=since) == [
        _row(date(2026, 11, 1), 4, 160, 30, estimated=40),
        _row(date(2026, 11, 2), 2, 10, 5),
    ]
    # Without `since`, Oct 31 counts too.
    assert fetch_usage(store, by="day")[0] == _row(date(2026, 10, 31), 1, 10, 5)


def test_usage_for_one_user_one_model_and_a_moment(store: Store) -> None:
    store.write_batch(_dataset())
    assert fetch_usage(store, user="ada", by="model") == [
        _row("llama", 3, 120, 30),
        _row("mistral", 1, 10, 5),
    ]
    assert fetch_usage(store, user="ada", model="llama", by="day") == [
        _row(date(2026, 10, 31), 1, 10, 5),
        _row(date(2026, 11, 1), 2, 110, 25),
    ]
    # A timezone-aware moment: from 01:00 UTC on Nov 1, given in UTC+2.
    since = datetime(2026, 11, 1, 3, 0, tzinfo=CEST)
    assert fetch_usage(store, model="llama", since=since, by="user") == [
        _row("ada", 2, 110, 25),
        _row("bob", 1, 10, 5),
    ]
    assert fetch_usage(store, user="nobody") == []


def test_estimated_share_is_the_estimated_part_of_the_tokens(store: Store) -> None:
    store.write_batch(_dataset())
    bob = fetch_usage(store, user="bob")[0]
    assert bob.estimated_share == pytest.approx(40 / 55)
    assert _row("x", 1, 0, 0).estimated_share == 0.0


def test_usage_refuses_what_it_cannot_answer(store: Store) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        fetch_usage(store, since=datetime(2026, 11, 1))
    with pytest.raises(ValueError, match="by must be one of"):
        fetch_usage(store, by="week")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_usage_runs_off_the_loop_under_asyncio_and_trio(store: Store) -> None:
    await anyio.to_thread.run_sync(store.write_batch, _dataset())
    rows = await usage(store, by="model", since=date(2026, 11, 2))
    assert [(row.key, row.requests) for row in rows] == [(None, 1), ("mistral", 1)]


def test_records_refuse_what_the_log_cannot_keep() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        record(1, received_at=datetime(2026, 11, 1))
    with pytest.raises(ValueError, match="HTTP status"):
        record(1, status=42)
    with pytest.raises(ValueError, match="count"):
        record(1, bytes_out=-1)
    with pytest.raises(ValueError, match="count"):
        record(1, total_tokens=2**63)
    with pytest.raises(ValueError, match="empty"):
        record(1, id="")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        record(1).status = 500  # type: ignore[misc]


def test_captures_are_capped() -> None:
    assert capture(b"\xffabc\x00def", 6) == "\ufffdabc\ufffdd"
    assert capture("x" * 100, 10) == "x" * 10
    assert capture(None, 10) is None
    assert len(record(1, prompt="y" * (CAPTURE_CEILING + 5)).prompt or "") == CAPTURE_CEILING
