"""Prometheus metrics: what the gateway served, counted from the records it already keeps.

Theory of operation.  Nothing on the request path waits for metrics.  The driver hands
every finished request's record to its log sink; `MetricsSink` is one (combine it with
the store's through `FanOut`) and turns each record into counter increments and
histogram observations: plain arithmetic on values in memory (memory-mapped files in
multiprocess mode, which the kernel writes back), never awaited, never raising.
The one thing a record cannot say is how many streams are open right now, so the driver
tells the sink as a `StreamObserver` (`stream_opened` / `stream_closed`, from the
`StreamRelay`).  The request log's queue is read from whatever object has `queue_depth`
and `dropped` (the store's `LogWriter`, or the `RequestLog` that runs one), handed in at
start; likewise the quota counters' `status()`, for `quota_fallback` (1 while counters
meant to live in Redis count in this process instead, because Redis does not answer).

Labels are bounded: the route (the five relayed operations), the model as the fixtures name
it ("-" when the request never reached one, e.g. an unknown model or a bad token), the
HTTP status, the token kind and the quota limit's name.  Never a user, a token or a
request id.

One process or several.  By default the metrics live in this process's memory and
`render()` reads them from there.  With a multiprocess directory (setting
`INFERENCE_GATEWAY_METRICS_DIR`) prometheus-client's multiprocess mode is used: every
worker process writes its values to memory-mapped files in that directory, and whichever
worker answers `/metrics` sums all the files, so a scrape sees the whole server, not the
one worker it happened to reach.  Per metric kind:

* counters and histograms: summed over every file, a dead worker's included (its
  requests happened; totals never go backwards);
* `active_streams` and `log_queue_depth`: gauges in `livesum` mode, summed over the
  workers that are alive; `quota_fallback`: a gauge in `livemax` mode, 1 when any live
  worker has fallen back.  A worker removes its own live files when it stops
  (`close()`); a worker that died without stopping (killed) has its live files removed at
  the next scrape, which finds its process gone (all workers share one host: the files
  are memory-mapped).  A supervisor may also call `mark_worker_dead(pid, directory)`.
* `log_records_dropped_total`: a counter this worker advances from its queue's own count.
  A worker copies its queue's numbers (and its quota counters' state) into its files with
  each record, each scrape it answers, and every second while it serves
  (`frontends.web.metrics`), so an idle worker's queue is seen draining, and its Redis
  coming back, by scrapes that other workers answer.

The directory must start empty for a new server (the files of an earlier run would add
their counts to this one's); `prepare_multiprocess_dir` empties it, for whoever starts
the workers.  Multiprocess mode is process-wide (prometheus-client decides where values
live when a metric is made): `serve` turns it on once, before any metric exists.
"""

from __future__ import annotations

import glob
import hmac
import os
import re
import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    values,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from core import Limit, LogEntry, bearer_credentials
from frontends.log_sink import Timing

__all__ = [
    "LATENCY_BUCKETS",
    "TTFT_BUCKETS",
    "LogQueue",
    "MetricsSink",
    "QuotaState",
    "authorized",
    "enable_multiprocess",
    "mark_worker_dead",
    "prepare_multiprocess_dir",
]

PREFIX = "inference_gateway"
# LLM calls take from a fraction of a second (an embedding) to minutes (a long answer).
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)
NO_MODEL = "-"
# A request's series: requests, duration, upstream, prompt and completion tokens (each
# the series' prometheus child in multiprocess mode, its `_Tally` or `_Spread` otherwise).
_Series = tuple[Any, Any, Any, Any, Any]
_LIMITS = frozenset(limit.value for limit in Limit)


class LogQueue(Protocol):
    """The request log's queue as metrics see it (the store's `LogWriter` is one)."""

    @property
    def queue_depth(self) -> int: ...

    @property
    def dropped(self) -> int: ...


class QuotaState(Protocol):
    """The quota counters as metrics see them (every `QuotaCounters` is one)."""

    def status(self) -> Mapping[str, Any]: ...


FALLBACK_HELP = (
    "1 while the quota counters meant to live in Redis count in this process instead "
    "(Redis does not answer); 0 otherwise."
)


# -- multiprocess mode, process-wide ---------------------------------------------------

_multiprocess_dir: Path | None = None
_mode_lock = threading.Lock()


def enable_multiprocess(directory: Path | str) -> Path:
    """Turn on prometheus-client's multiprocess mode for this process, with its files in
    `directory` (made if missing).  Once per process, before any metric is made; the same
    directory again is a no-op, another one an error."""
    global _multiprocess_dir
    path = Path(directory).resolve()
    with _mode_lock:
        if _multiprocess_dir is not None:
            if _multiprocess_dir != path:
                raise RuntimeError(
                    f"metrics already use {_multiprocess_dir}; one directory per process"
                )
            return path
        path.mkdir(parents=True, exist_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
        # prometheus-client picks where values live from the environment when it is first
        # imported; pick again now that the directory is set (no metric exists yet).
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
        _multiprocess_dir = path
    return path


def prepare_multiprocess_dir(directory: Path | str) -> Path:
    """Empty (or make) a multiprocess directory before a server's first worker starts."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)
    return path


def mark_worker_dead(pid: int, directory: Path | str) -> None:
    """A worker is gone: its live gauges (open streams, queued log records) stop counting;
    its counters and histograms keep their totals."""
    multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]


_LIVE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _reap_dead_workers(directory: Path) -> None:
    """Remove the live gauges of workers whose process no longer exists."""
    pids = set()
    for name in glob.glob(os.path.join(directory, "gauge_live*_*.db")):
        found = _LIVE_FILE.search(name)
        if found:
            pids.add(int(found[1]))
    for pid in pids:
        if pid != os.getpid() and not _alive(pid):
            mark_worker_dead(pid, directory)


class _ReapingCollector(Collector):
    """`MultiProcessCollector`, after clearing the live gauges of workers that died."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._files = multiprocess.MultiProcessCollector(  # type: ignore[no-untyped-call]
            None, path=str(directory)
        )

    def collect(self) -> Iterable[Metric]:
        _reap_dead_workers(self._directory)
        merged: Iterable[Metric] = self._files.collect()  # type: ignore[no-untyped-call]
        return merged


class _Tally:
    """A counter series' running total, kept in plain Python and handed to its
    prometheus child when scraped (single-process mode).  The total is the same sum of
    the same amounts in the same order as the child's own `inc` would make, so the
    exposition is the same to the last digit; only the per-request work differs (an
    addition, not a locked increment behind a check)."""

    __slots__ = ("child", "total")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.total = 0.0

    def publish(self) -> None:
        self.child._value.set(self.total)


class _Spread:
    """A histogram series' running sum and bucket counts, as `_Tally` keeps a counter's:
    an observation lands in the first bucket whose bound it does not exceed, as
    prometheus-client's `observe` puts it (a bisection, not a loop over the bounds)."""

    __slots__ = ("bounds", "child", "counts", "sum")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.bounds: list[float] = list(child._upper_bounds)
        self.counts = [0.0] * len(self.bounds)
        self.sum = 0.0

    def publish(self) -> None:
        child = self.child
        child._sum.set(self.sum)
        for bucket, count in zip(child._buckets, self.counts, strict=True):
            bucket.set(count)


class _Publisher(Collector):
    """Hands the running totals to their prometheus children: registered before every
    metric of the registry, so a scrape (or any read of the registry) collects it first
    and sees every request counted until then."""

    def __init__(self, sink: MetricsSink) -> None:
        self._sink = sink

    def collect(self) -> Iterator[Metric]:
        self._sink.publish()
        return iter(())


class _LiveCollector(Collector):
    """One process's log queue and quota fallback, read when scraped (single-process
    mode)."""

    def __init__(self, sink: MetricsSink) -> None:
        self._sink = sink

    def collect(self) -> Iterator[Metric]:
        depth, dropped = _read_queue(self._sink.log_queue)
        yield GaugeMetricFamily(
            f"{PREFIX}_log_queue_depth", "Request-log records waiting to be written.", depth
        )
        yield CounterMetricFamily(
            f"{PREFIX}_log_records_dropped",
            "Request-log records dropped because the queue was full or closed.",
            dropped,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_quota_fallback", FALLBACK_HELP, _read_fallback(self._sink.quota)
        )


def _read_fallback(quota: QuotaState | None) -> int:
    """1 when these counters have fallen back from Redis to counting in process."""
    if quota is None:
        return 0
    try:
        return 1 if quota.status().get("redis") == "unreachable" else 0
    except Exception:
        return 0


def _read_queue(queue: LogQueue | None) -> tuple[int, int]:
    if queue is None:
        return 0, 0
    try:
        return int(queue.queue_depth), int(queue.dropped)
    except Exception:
        return 0, 0


# -- the sink ----------------------------------------------------------------------------


class MetricsSink:
    """The gateway's metrics: a `LogSink` (each finished request), the driver's
    `StreamObserver` (open streams) and the exposition (`render`).

    `multiprocess_dir` turns on multiprocess mode for the whole process (see the module
    comment); `log_queue` is the request log's queue, if there is one (it may also be
    set later, when the writer starts: `sink.log_queue = writer`); `quota` is the quota
    counters, if any (also settable later: `sink.quota = counters`).
    """

    def __init__(
        self,
        *,
        multiprocess_dir: Path | str | None = None,
        log_queue: LogQueue | None = None,
        quota: QuotaState | None = None,
    ) -> None:
        self._dir = None if multiprocess_dir is None else enable_multiprocess(multiprocess_dir)
        self.log_queue = log_queue
        self.quota = quota
        # Multiprocess mode: the metrics are registered nowhere (their values go to the
        # files) and the exposition reads the files; otherwise a registry of our own, so
        # several gateways in one process (tests, embedders) never share counts.
        own = None if self._dir is not None else CollectorRegistry(auto_describe=True)
        labels = ("route", "model")
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        # Single-process mode: each request series' running totals, by its child (a
        # token series is shared by every shape of request of its model).
        self._totals: dict[int, _Tally | _Spread] = {}
        if own is not None:
            own.register(_Publisher(self))
        self._series: dict[tuple[str, str, int, bool, bool, bool], _Series] = {}
        self._requests = Counter(
            f"{PREFIX}_requests",
            "Finished OpenAI requests, by route, model and HTTP status.",
            (*labels, "status"),
            registry=own,
        )
        self._duration = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "From the request's arrival to its last byte (a stream's end).",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=own,
        )
        self._upstream = Histogram(
            f"{PREFIX}_upstream_duration_seconds",
            "How long the backend took to answer, or to open its stream.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=own,
        )
        self._ttft = Histogram(
            f"{PREFIX}_time_to_first_token_seconds",
            "Streams: from the request's arrival to the first chunk relayed to the client.",
            labels,
            buckets=TTFT_BUCKETS,
            registry=own,
        )
        self._active = Gauge(
            f"{PREFIX}_active_streams",
            "Streams open to clients now.",
            registry=own,
            multiprocess_mode="livesum",
        )
        self._tokens = Counter(
            f"{PREFIX}_tokens",
            "Tokens used (the backend's usage, else the gateway's estimate), by model and kind.",
            ("model", "kind"),
            registry=own,
        )
        self._rejections = Counter(
            f"{PREFIX}_quota_rejections",
            "Requests refused by a quota, by the limit that refused.",
            ("limit",),
            registry=own,
        )
        if own is not None:
            self._registry = own
            own.register(_LiveCollector(self))
            self._queue_depth: Gauge | None = None
            self._dropped: Counter | None = None
            self._fallback: Gauge | None = None
        else:
            assert self._dir is not None
            self._registry = CollectorRegistry()
            self._registry.register(_ReapingCollector(self._dir))
            self._queue_depth = Gauge(
                f"{PREFIX}_log_queue_depth",
                "Request-log records waiting to be written.",
                registry=None,
                multiprocess_mode="livesum",
            )
            self._dropped = Counter(
                f"{PREFIX}_log_records_dropped",
                "Request-log records dropped because the queue was full or closed.",
                registry=None,
            )
            self._fallback = Gauge(
                f"{PREFIX}_quota_fallback",
                FALLBACK_HELP,
                registry=None,
                multiprocess_mode="livemax",
            )
            self._dropped_seen = 0
            self._sync_lock = threading.Lock()
            self.sync_live()

    @property
    def multiprocess_dir(self) -> Path | None:
        return self._dir

    # -- LogSink ------------------------------------------------------------------------

    def write(self, entry: LogEntry, timing: Timing) -> None:
        try:
            self._count(entry, timing)
            if self._dir is not None:
                self.sync_live()
        except Exception:  # metrics must never cost a request anything
            return

    def _count(self, entry: LogEntry, timing: Timing) -> None:
        """A request's record, counted: in multiprocess mode through its prometheus
        children at once (any worker's scrape reads this worker's files), otherwise in
        the series' running totals, handed to the children when scraped (`publish`)."""
        model = entry.model or NO_MODEL
        route = entry.route
        usage = entry.usage
        upstream_seconds = timing.upstream_seconds
        # None (not reported) counts in no token series, as 0 does.
        prompt_tokens = (usage.prompt_tokens or 0) if usage is not None else 0
        completion_tokens = (usage.completion_tokens or 0) if usage is not None else 0
        shape = (
            route,
            model,
            entry.status,
            upstream_seconds is not None,
            bool(prompt_tokens),
            bool(completion_tokens),
        )
        series = self._series.get(shape)
        if series is None:
            series = self._series[shape] = self._series_of(*shape)
        requests, duration, upstream, prompt, completion = series
        if self._dir is not None:
            requests.inc()
            duration.observe(max(0.0, timing.duration))
            if upstream is not None and upstream_seconds is not None:
                upstream.observe(max(0.0, upstream_seconds))
            if prompt is not None:
                prompt.inc(prompt_tokens)
            if completion is not None:
                completion.inc(completion_tokens)
        else:
            requests.total += 1
            seconds = max(0.0, timing.duration)
            duration.sum += seconds
            duration.counts[bisect_left(duration.bounds, seconds)] += 1
            if upstream is not None and upstream_seconds is not None:
                seconds = max(0.0, upstream_seconds)
                upstream.sum += seconds
                upstream.counts[bisect_left(upstream.bounds, seconds)] += 1
            if prompt is not None:  # `Usage` counts are never negative
                prompt.total += prompt_tokens
            if completion is not None:
                completion.total += completion_tokens
        ttft = timing.time_to_first_byte
        # A stream's first chunk reached the client: it finished, or the client left
        # after it.  (An error answered before any stream opened is not a first token.)
        if entry.stream and ttft is not None and (entry.status == 200 or entry.cancelled):
            self._child(self._ttft, route, model).observe(max(0.0, ttft))
        if entry.error_code == "rate_limit_exceeded" and entry.detail in _LIMITS:
            self._child(self._rejections, entry.detail).inc()

    def _series_of(
        self,
        route: str,
        model: str,
        status: int,
        upstream: bool,
        prompt: bool,
        completion: bool,
    ) -> _Series:
        """The series one shape of request counts in (requests, duration, upstream,
        prompt and completion tokens; None for those it does not count in), found once
        per shape: looking each up per request (a key, a call and a dict read each) cost
        a third of the sink's work."""
        child = self._child if self._dir is not None else self._running
        return (
            child(self._requests, route, model, str(status)),
            child(self._duration, route, model),
            child(self._upstream, route, model) if upstream else None,
            child(self._tokens, model, "prompt") if prompt else None,
            child(self._tokens, model, "completion") if completion else None,
        )

    def _running(self, metric: Any, *values: str) -> _Tally | _Spread:
        """The running totals of `metric.labels(*values)`, made with the child (on first
        use, as `labels()` makes it, so a series that never counted is not exposed)."""
        child = self._child(metric, *values)
        totals = self._totals.get(id(child))
        if totals is None:
            kind = _Spread if isinstance(metric, Histogram) else _Tally
            totals = self._totals[id(child)] = kind(child)
        return totals

    def publish(self) -> None:
        """Hand every running total to its prometheus child (single-process mode; the
        registry does it first whenever it is read, so a scrape sees every request).
        Setting a total is idempotent, so a scrape's thread may do it while the loop
        counts: a request counted meanwhile is published by the next scrape."""
        for totals in list(self._totals.values()):
            totals.publish()

    def _child(self, metric: Any, *values: str) -> Any:
        """`metric.labels(*values)`, looked up once: `labels()` checks and looks its
        values up each time, and a request counts in four or five series.  Made on first
        use, as `labels()` would, so a series that never counted is not exposed."""
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    # -- StreamObserver -----------------------------------------------------------------

    def stream_opened(self) -> None:
        self._active.inc()

    def stream_closed(self) -> None:
        self._active.dec()

    # -- the log queue and the quota fallback (multiprocess mode keeps them in files) -------

    def sync_live(self) -> None:
        """Copy the log queue's numbers and the quota counters' state into this worker's
        files (multiprocess mode)."""
        if self._queue_depth is None or self._dropped is None or self._fallback is None:
            return
        depth, dropped = _read_queue(self.log_queue)
        fallback = _read_fallback(self.quota)
        with self._sync_lock:  # the loop and a scrape's thread both sync
            self._queue_depth.set(depth)
            self._fallback.set(fallback)
            if dropped > self._dropped_seen:
                self._dropped.inc(dropped - self._dropped_seen)
                self._dropped_seen = dropped
            elif dropped < self._dropped_seen:  # a new queue, counting from 0 again
                self._dropped_seen = dropped

    # -- exposition ---------------------------------------------------------------------

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition (body, content type) in the format `accept` asks for: Prometheus
        text by default, OpenMetrics when asked.  Reads files in multiprocess mode: call
        it off the event loop."""
        self.sync_live()
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self._registry), content_type

    def close(self) -> None:
        """This worker stops: its live gauges stop counting (multiprocess mode)."""
        if self._dir is not None:
            mark_worker_dead(os.getpid(), self._dir)


def authorized(authorization: str | None, token: str | None) -> bool:
    """Whether a scrape may read the metrics: always without a token, else only with
    `Authorization: Bearer <token>` (compared in constant time)."""
    if token is None:
        return True
    given = bearer_credentials(authorization)
    return given is not None and hmac.compare_digest(given.encode(), token.encode())
