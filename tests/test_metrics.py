"""`GET /metrics`: after known traffic through a real gateway server in front of the fake
backend, every count is exactly the traffic, parsed with prometheus-client's own parser."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core import LogEntry, QuotaPolicy
from frontends.assembly import build_gateway
from frontends.identity import StaticKeys
from frontends.log_sink import FanOut, Timing
from frontends.metrics import MetricsSink
from frontends.quota import InProcessCounters
from frontends.web import create_app
from tests.support.fake_openai import FakeOpenAI, running_fake_openai
from tests.support.gateway_server import ALICE, BOB, TOKENS, write_tokens
from tests.support.quota import limited_fixtures
from tests.support.servers import serve_app
from transports.httpx_transport import HttpxTransport

pytestmark = pytest.mark.e2e

# Any name but the fake's misbehaving ones answers properly; streams go to a model of
# their own so that fake-model's tokens are exactly what the backend reported.
MODELS = ("fake-model", "fake-stream", "hang-stream")
PER_USER = 6  # requests per minute per user
CHAT = "chat/completions"
STRANGER = "igw-test-nobody-0123456789abcdef"
METRICS_TOKEN = "igw-test-scraper-0123456789abcdef"


def metrics_fixtures(folder: Path, backend_url: str) -> Path:
    return limited_fixtures(folder, backend_url, MODELS)


class Records:
    """Every record the driver wrote, to compare the metrics with."""

    def __init__(self) -> None:
        self.entries: list[LogEntry] = []

    def write(self, entry: LogEntry, timing: Timing) -> None:
        self.entries.append(entry)


@attrs.frozen
class Served:
    url: str
    fake: FakeOpenAI
    records: Records


@contextmanager
def serving(tmp_path: Path, *, metrics_token: str | None = None) -> Iterator[Served]:
    """A gateway with metrics and a request quota per user, served in front of the fake."""
    with running_fake_openai(models=MODELS) as (fake, backend_url):
        metrics, records = MetricsSink(), Records()
        gateway = build_gateway(
            metrics_fixtures(tmp_path / "fixtures", backend_url),
            identity=StaticKeys.from_file(write_tokens(tmp_path)),
            transport=HttpxTransport(),
            log_sink=FanOut(records, metrics),
            stream_observer=metrics,
            quota=InProcessCounters(),
            quota_policy=QuotaPolicy(requests_per_minute_per_user=PER_USER),
            stream_usage=True,
        )
        app = create_app(gateway, metrics=metrics, metrics_token=metrics_token)
        with serve_app(app) as url:
            yield Served(url=url, fake=fake, records=records)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with serving(tmp_path) as server:
        yield server


def chat(model: str, text: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def post(url: str, token: str | None, route: str, body: dict[str, Any]) -> httpx.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return httpx.post(f"{url}/v1/{route}", json=body, headers=headers, timeout=30)


def scrape(
    url: str, token: str | None = None
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of `/metrics`: (sample name, labels) -> value."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    response = httpx.get(f"{url}/metrics", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return samples(response.text)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def total(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """The sum over every sample of `name` whose labels include these."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and wanted <= ls)


def test_counts_equal_the_traffic(served: Served) -> None:
    url = served.url
    n_whole, m_streamed, refused = 3, 2, 2
    usage = {"prompt": 0, "completion": 0}
    for i in range(n_whole):
        reply = post(url, ALICE, CHAT, chat("fake-model", f"question {i}"))
        assert reply.status_code == 200
        usage["prompt"] += reply.json()["usage"]["prompt_tokens"]
        usage["completion"] += reply.json()["usage"]["completion_tokens"]
    embedded = post(url, ALICE, "embeddings", {"model": "fake-model", "input": ["a b", "c"]})
    assert embedded.status_code == 200
    usage["prompt"] += embedded.json()["usage"]["prompt_tokens"]
    streamed_usage = {"prompt": 0, "completion": 0}
    for i in range(m_streamed):
        # The client asks for the usage event, to see what the backend reported.
        options = {"stream_options": {"include_usage": True}}
        streamed = post(
            url, ALICE, CHAT, chat("fake-stream", f"tell me {i}", stream=True, **options)
        )
        assert streamed.status_code == 200 and streamed.text.endswith("data: [DONE]\n\n")
        [reported] = [
            event["usage"]
            for line in streamed.text.splitlines()
            if line.startswith("data: {")
            and (event := json.loads(line.removeprefix("data: "))).get("usage")
        ]
        streamed_usage["prompt"] += reported["prompt_tokens"]
        streamed_usage["completion"] += reported["completion_tokens"]
    for _ in range(2):
        assert post(url, ALICE, CHAT, chat("no-such-model")).status_code == 404
    assert post(url, None, CHAT, chat("fake-model")).status_code == 401
    # Bob's first PER_USER calls are admitted, the next ones refused by his request quota.
    for i in range(PER_USER + refused):
        reply = post(url, BOB, CHAT, chat("fake-model"))
        assert reply.status_code == (200 if i < PER_USER else 429)
        if reply.status_code == 200:
            usage["prompt"] += reply.json()["usage"]["prompt_tokens"]
            usage["completion"] += reply.json()["usage"]["completion_tokens"]

    found = scrape(url)

    requests = "inference_gateway_requests_total"
    assert value(found, requests, route=CHAT, model="fake-model", status="200") == (
        n_whole + PER_USER
    )
    assert value(found, requests, route="embeddings", model="fake-model", status="200") == 1
    assert value(found, requests, route=CHAT, model="fake-stream", status="200") == m_streamed
    assert value(found, requests, route=CHAT, model="-", status="404") == 2
    assert value(found, requests, route=CHAT, model="-", status="401") == 1
    assert value(found, requests, route=CHAT, model="fake-model", status="429") == refused
    everything = n_whole + 1 + m_streamed + 2 + 1 + PER_USER + refused
    assert total(found, requests) == everything
    assert (
        value(
            found, "inference_gateway_quota_rejections_total", limit="requests_per_minute_per_user"
        )
        == refused
    )
    assert total(found, "inference_gateway_quota_rejections_total") == refused

    # Every request is timed; only those that reached the backend have an upstream time;
    # each stream has its time to first token once.
    assert total(found, "inference_gateway_request_duration_seconds_count") == everything
    called = n_whole + 1 + m_streamed + PER_USER
    assert total(found, "inference_gateway_upstream_duration_seconds_count") == called
    assert (
        value(found, "inference_gateway_upstream_duration_seconds_count", route=CHAT, model="-")
        == 0
    )
    ttft = "inference_gateway_time_to_first_token_seconds_count"
    assert value(found, ttft, route=CHAT, model="fake-stream") == m_streamed
    assert total(found, ttft) == m_streamed
    assert value(
        found,
        "inference_gateway_request_duration_seconds_bucket",
        route=CHAT,
        model="fake-model",
        le="+Inf",
    ) == (n_whole + PER_USER + refused)

    # fake-model's tokens are the backend's own usage, as its answers reported it.
    tokens = "inference_gateway_tokens_total"
    assert value(found, tokens, model="fake-model", kind="prompt") == usage["prompt"]
    assert value(found, tokens, model="fake-model", kind="completion") == usage["completion"]
    # So are the streams', from the usage event at their end.
    assert value(found, tokens, model="fake-stream", kind="prompt") == streamed_usage["prompt"]
    assert (
        value(found, tokens, model="fake-stream", kind="completion")
        == (streamed_usage["completion"])
    )
    assert not any(e.estimated for e in served.records.entries)

    assert value(found, "inference_gateway_active_streams") == 0
    assert value(found, "inference_gateway_log_queue_depth") == 0
    assert value(found, "inference_gateway_log_records_dropped_total") == 0


def test_active_streams_counts_a_stream_held_open(served: Served) -> None:
    assert value(scrape(served.url), "inference_gateway_active_streams") == 0
    body = chat("hang-stream", stream=True)
    headers = {"Authorization": f"Bearer {ALICE}"}
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", f"{served.url}/v1/{CHAT}", json=body, headers=headers) as held,
    ):
        assert held.status_code == 200
        lines = held.iter_lines()  # kept: dropping the iterator would close the response
        assert next(lines).startswith("data: ")
        during = scrape(served.url)
        assert value(during, "inference_gateway_active_streams") == 1
        # Not finished yet: no record, so not counted as a request.
        assert total(during, "inference_gateway_requests_total") == 0
    # The client left: the gateway closed the stream (and then the backend's).
    assert served.fake.stream_cancelled.wait(timeout=20)
    after = scrape(served.url)
    assert value(after, "inference_gateway_active_streams") == 0
    assert (
        value(
            after, "inference_gateway_requests_total", route=CHAT, model="hang-stream", status="499"
        )
        == 1
    )
    # Its first token reached the client before it left: observed, once.
    assert (
        value(
            after,
            "inference_gateway_time_to_first_token_seconds_count",
            route=CHAT,
            model="hang-stream",
        )
        == 1
    )


def test_metrics_never_show_a_user_or_a_token(served: Served) -> None:
    url = served.url
    assert post(url, ALICE, CHAT, chat("fake-model")).status_code == 200
    assert post(url, BOB, CHAT, chat("fake-stream", stream=True)).status_code == 200
    assert post(url, STRANGER, CHAT, chat("fake-model")).status_code == 401
    # A model name the client chose is never a label: unknown ones are "-".
    assert post(url, ALICE, CHAT, chat("alice@example.org")).status_code == 404
    response = httpx.get(f"{url}/metrics", timeout=30)
    assert response.status_code == 200
    text = response.text
    for secret in (ALICE, BOB, STRANGER, "alice", "bob", "example.org", "elsewhere.net"):
        assert secret not in text
    for entry in TOKENS:
        assert entry["username"] not in text
    for record in served.records.entries:
        assert record.request_id not in text
    labels = {
        name
        for family in text_string_to_metric_families(text)
        for s in family.samples
        for name in s.labels
    }
    assert labels <= {"route", "model", "status", "kind", "limit", "le"}


def test_metrics_are_prometheus_text_and_open_without_a_token(served: Served) -> None:
    response = httpx.get(f"{served.url}/metrics", timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert names >= {
        "inference_gateway_requests",
        "inference_gateway_request_duration_seconds",
        "inference_gateway_upstream_duration_seconds",
        "inference_gateway_time_to_first_token_seconds",
        "inference_gateway_active_streams",
        "inference_gateway_tokens",
        "inference_gateway_quota_rejections",
        "inference_gateway_log_queue_depth",
        "inference_gateway_log_records_dropped",
    }
    openmetrics = httpx.get(
        f"{served.url}/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
        timeout=30,
    )
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.endswith("# EOF\n")


def test_a_metrics_token_is_required_when_set(tmp_path: Path) -> None:
    with serving(tmp_path, metrics_token=METRICS_TOKEN) as served:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": METRICS_TOKEN}):
            refused = httpx.get(f"{served.url}/metrics", headers=headers, timeout=30)
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert refused.json()["error"]["type"] == "authentication_error"
            assert METRICS_TOKEN not in refused.text
        # An API key is not the scrape token.
        assert (
            httpx.get(
                f"{served.url}/metrics", headers={"Authorization": f"Bearer {ALICE}"}, timeout=30
            ).status_code
            == 401
        )
        found = scrape(served.url, METRICS_TOKEN)
        assert value(found, "inference_gateway_active_streams") == 0


@attrs.define
class Queue:
    """A request log's queue as the store's writer shows it."""

    queue_depth: int = 0
    dropped: int = 0


def test_the_log_queue_is_read_from_the_writer_when_scraped() -> None:
    assert (
        value(samples(MetricsSink().render()[0].decode()), "inference_gateway_log_queue_depth") == 0
    )
    queue = Queue(queue_depth=3, dropped=7)
    sink = MetricsSink(log_queue=queue)
    found = samples(sink.render()[0].decode())
    assert value(found, "inference_gateway_log_queue_depth") == 3
    assert value(found, "inference_gateway_log_records_dropped_total") == 7
    queue.queue_depth, queue.dropped = 0, 9
    found = samples(sink.render()[0].decode())
    assert value(found, "inference_gateway_log_queue_depth") == 0
    assert value(found, "inference_gateway_log_records_dropped_total") == 9
    # A writer started later is attached the same way.
    later = MetricsSink()
    later.log_queue = Queue(queue_depth=2)
    assert value(samples(later.render()[0].decode()), "inference_gateway_log_queue_depth") == 2


@attrs.define
class Counters:
    """Quota counters as metrics see them: only their status."""

    redis: str | None = None

    def status(self) -> dict[str, str]:
        if self.redis is None:
            return {"backend": "in-process"}
        return {"backend": "redis", "redis": self.redis}


def test_the_quota_fallback_is_read_from_the_counters_when_scraped() -> None:
    fallback = "inference_gateway_quota_fallback"
    assert value(samples(MetricsSink().render()[0].decode()), fallback) == 0
    assert value(samples(MetricsSink(quota=Counters()).render()[0].decode()), fallback) == 0
    counters = Counters(redis="ok")
    sink = MetricsSink(quota=counters)
    assert value(samples(sink.render()[0].decode()), fallback) == 0
    counters.redis = "unreachable"
    assert value(samples(sink.render()[0].decode()), fallback) == 1
    counters.redis = "ok"  # Redis answers again
    assert value(samples(sink.render()[0].decode()), fallback) == 0


def test_running_totals_expose_what_prometheus_client_would_count() -> None:
    """One process's request series are kept as running totals and handed to
    prometheus-client when scraped: the exposition is what its own `inc` and `observe`,
    called per record, make, to the last digit (sums of fractions included), and a
    scrape between records sees every record before it."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from core import Usage
    from frontends.metrics import LATENCY_BUCKETS

    reference = CollectorRegistry()
    requests = Counter(
        "inference_gateway_requests", "", ("route", "model", "status"), registry=reference
    )
    duration = Histogram(
        "inference_gateway_request_duration_seconds",
        "",
        ("route", "model"),
        buckets=LATENCY_BUCKETS,
        registry=reference,
    )
    upstream = Histogram(
        "inference_gateway_upstream_duration_seconds",
        "",
        ("route", "model"),
        buckets=LATENCY_BUCKETS,
        registry=reference,
    )
    tokens = Counter("inference_gateway_tokens", "", ("model", "kind"), registry=reference)
    sink = MetricsSink()

    def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if not s.name.endswith("_created")
            and s.name.startswith(
                (
                    "inference_gateway_requests",
                    "inference_gateway_request_duration",
                    "inference_gateway_upstream",
                    "inference_gateway_tokens",
                )
            )
        }

    seconds = [0.0, 0.05, 0.1 / 3, 0.7, 1e-9, 2.5, 599.9, 700.0, 0.1 + 0.2, 0.05000001]
    for i, spent in enumerate(seconds * 3):
        route = ("chat/completions", "embeddings")[i % 2]
        model, status = ("m1", "m2", None)[i % 3], (200, 200, 429, 502)[i % 4]
        called = status != 429
        usage = Usage(prompt_tokens=i, completion_tokens=i % 5, total_tokens=i + i % 5)
        entry = LogEntry(
            request_id=f"r{i}",
            route=route,
            status=status,
            username="u",
            provider=None,
            endpoint_slug=None,
            cluster=None,
            framework=None,
            model=model,
            stream=False,
            usage=usage if status == 200 else None,
            estimated=False,
            bytes_in=1,
            bytes_out=1,
        )
        upstream_seconds = spent / 7 if called else None
        sink.write(
            entry,
            Timing(received_at=1000.0, done_at=1000.0 + spent, upstream_seconds=upstream_seconds),
        )
        label = model or "-"
        requests.labels(route, label, str(status)).inc()
        duration.labels(route, label).observe(max(0.0, (1000.0 + spent) - 1000.0))
        if upstream_seconds is not None:
            upstream.labels(route, label).observe(upstream_seconds)
        if status == 200 and usage.prompt_tokens:
            tokens.labels(label, "prompt").inc(usage.prompt_tokens)
        if status == 200 and usage.completion_tokens:
            tokens.labels(label, "completion").inc(usage.completion_tokens)
        if i % 7 == 0:  # a scrape now and then, between records
            assert samples(sink.render()[0].decode()) == samples(
                generate_latest(reference).decode()
            )
    assert samples(sink.render()[0].decode()) == samples(generate_latest(reference).decode())
