"""The request log and usage, the same suite on SQLite and on PostgreSQL."""

from __future__ import annotations

import logging
import socket
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import anyio
import attrs
import pytest
import sqlalchemy as sa

from core import Identity
from core._errors import DETAIL_CHARS
from frontends.embedding import FixedIdentity, open_gateway
from frontends.store import CAPTURE_CEILING, RequestRecord, Store, UsageRow, capture, usage
from frontends.store._schema import request_log
from frontends.store._usage import fetch_usage
from tests.store.factories import T0, record
from tests.support.gateway_server import write_fixtures
from tests.support.raising_adaptor import LEAKED
from tests.support.scripted_http import Exchange
from tests.support.scripted_http import serving as scripted_backend

AUTH = {"Authorization": "Bearer embedded"}

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


def test_records_cap_and_accept_on_construction() -> None:
    """The record's checks run in one pass after construction: texts are still capped
    there, and any aware time (not only UTC) is accepted; a UTC-less naive one is not."""
    plus_two = timezone(timedelta(hours=2))
    made = record(1, done_at=datetime(2026, 11, 1, tzinfo=plus_two), prompt="a\x00b")
    assert made.done_at is not None and made.done_at.utcoffset() == timedelta(hours=2)
    assert made.prompt == "a\ufffdb"
    assert made.detail is None and made.response is None
    assert record(1, detail="x" * 5000).detail == "x" * 1024
    with pytest.raises(ValueError, match="first_byte_at must be timezone-aware"):
        record(1, first_byte_at=datetime(2026, 11, 1))
    with pytest.raises(ValueError, match="prompt_tokens must be a count"):
        record(1, prompt_tokens=-1)
    assert attrs.evolve(made, response="r\x00").response == "r\ufffd"


def test_captures_are_capped() -> None:
    assert capture(b"\xffabc\x00def", 6) == "\ufffdabc\ufffdd"
    assert capture("x" * 100, 10) == "x" * 10
    assert capture(None, 10) is None
    assert len(record(1, prompt="y" * (CAPTURE_CEILING + 5)).prompt or "") == CAPTURE_CEILING


# -- backend failures, recorded -------------------------------------------------------------

SECRET = "hunter2-db-password"
BACKEND_KEY = "sk-live-0123456789abcdefghij"


async def _error_page(exchange: Exchange) -> None:
    """A backend's 500 whose body is a long error page quoting secrets."""
    page = (
        f'Traceback: {{"password": "{SECRET}", "api_key": "{BACKEND_KEY}"}} '
        f"Authorization: Bearer {BACKEND_KEY} " + "frame " * 2000
    )
    await exchange.respond(500, [("content-type", "text/plain")], page.encode())


def _failure_fixtures(folder: Path, backend_url: str) -> Path:
    endpoints = {
        "error-page": ("adaptors.endpoints.direct_api.DirectAPIEndpoint", backend_url),
        "unreachable": ("adaptors.endpoints.direct_api.DirectAPIEndpoint", _closed_port_url()),
        "raising": ("tests.support.raising_adaptor.RaisingEndpoint", backend_url),
    }
    cluster = {
        "cluster_name": "broken",
        "frameworks": ["api"],
        "openai_endpoints": ["chat/completions"],
        "cluster_adapter": "adaptors.clusters.openai_compatible.OpenAICompatibleCluster",
        "config": {"api_url": f"{backend_url}/v1"},
    }
    return write_fixtures(
        folder,
        [cluster],
        [
            {
                "endpoint_slug": f"broken-api-{model}",
                "cluster": "broken",
                "framework": "api",
                "model": model,
                "endpoint_adapter": adaptor,
                "config": {"api_url": f"{url}/v1", "api_key_env_name": "IGW_TEST_FAIL_KEY"},
            }
            for model, (adaptor, url) in endpoints.items()
        ],
    )


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.anyio
async def test_a_backend_failure_is_recorded_with_its_code_and_a_short_clean_detail(
    store: Store, tmp_path: Path
) -> None:
    chat = {"messages": [{"role": "user", "content": "hello"}]}
    async with scripted_backend({"/v1/chat/completions": _error_page}) as backend:
        fixtures = _failure_fixtures(tmp_path / "fixtures", backend.url)
        async with open_gateway(
            fixtures,
            identity=FixedIdentity(Identity(username="ada@example.org")),
            environ={"IGW_TEST_FAIL_KEY": BACKEND_KEY},
            store=store,
        ) as gateway:
            statuses = {
                model: (
                    await gateway.request(
                        "chat/completions", {**chat, "model": model}, headers=AUTH
                    )
                ).status
                for model in ("error-page", "unreachable", "raising")
            }
    assert statuses == {"error-page": 502, "unreachable": 502, "raising": 502}

    with store.engine.connect() as connection:
        rows = connection.execute(sa.select(request_log)).mappings().all()
    recorded = {row["model"]: row for row in rows}
    assert sorted(recorded) == ["error-page", "raising", "unreachable"]
    for model, row in recorded.items():
        assert row["status"] == 502, model
        assert row["error_code"] == "backend_error", model
        detail = row["detail"]
        assert detail, model
        assert len(detail) <= DETAIL_CHARS, (model, len(detail))
        for secret in (SECRET, BACKEND_KEY, LEAKED, backend.url, "127.0.0.1"):
            assert secret not in detail, (model, secret)
    # What the detail keeps is the start of the account: enough to tell failures apart.
    assert recorded["error-page"]["detail"].startswith("HTTP 500: Traceback")
    assert recorded["raising"]["detail"].startswith("RuntimeError: backend pool exhausted")
