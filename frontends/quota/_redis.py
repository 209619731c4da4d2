"""Counters every replica shares: the core `Ledger`'s sliding window, kept in Redis.

Theory of operation
-------------------
Each limit key (`tpm_model:<slug>`, `tpm_user:<slug>:<user>`, `rpm_user:<user>`) is
three Redis keys under the prefix: a sorted set `<prefix><key>:t` of reservation ids
scored by the millisecond they were made, a hash `<prefix><key>:a` of their amounts, and
`<prefix><key>:s`, their sum, kept as they change (so a reserve costs the entries that
leave the window, not a scan of all it holds).  One Lua script per reserve (atomic on
the server, sent by EVALSHA) drops every key's entries that left the window, checks
that every reservation fits, and only then records them all; otherwise it records none
and says which reservation refused and in how many seconds enough of it frees up.
That is `core.Ledger`'s arithmetic, step for step (`tests/test_quota_redis.py` checks
the two decide alike for any sequence).  Time is Redis's own `TIME`, so replicas share
one clock; a test may pass logical time instead (`clock=`), which the script then uses.
Settle and release are scripts of their own; every key expires a window after its last
reservation, so nothing outlives its use.

Under asyncio and trio alike, off the event loop: redis-py's asyncio client serves
asyncio only, so these counters use its synchronous client in worker threads.  A reserve
runs in `anyio.to_thread.run_sync` under a capacity limiter of its own (`max_connections`
at once, the connection pool's size less the drainer's one).  Settle and release never
block the request: they go into a queue that one thread of the counters' own drains in
order (started on first use, flushed and stopped by `aclose()`, which the gateway calls
when the app stops).  A reserve first waits until what this process queued before it
has been applied, so a process always sees its own settlements.

When Redis cannot be reached (refused, timed out, or answering with an error), the
counters fall back to an `InProcessCounters` of their own: no request fails for it.
From then on requests reserve in process; every `retry_interval` seconds one reserve (or
the drainer, when idle) tries Redis again, and once it answers, requests go back to it.
Reservations made in process are settled in process.  Settlements that could not reach
Redis are kept and applied when it answers again; one older than the window no longer
matters (its reservation has left the window) and is counted in `status()["lost"]` with
a log line, so none is lost silently.  A reserve that timed out may still have been
recorded in Redis; it then holds its amount there until it leaves the window.  While
in fallback each process counts alone, so N replicas may admit up to N times a limit.

`status()` says which: `{"backend": "redis", "redis": "ok", "pending": 0, "lost": 0}`, or
`{"backend": "redis-unreachable, using in-process", "redis": "unreachable", ...}`;
`backend` is what `/resource_server/health` shows, `redis` is for the metrics.

Redis Cluster: a script's keys must share one hash slot, so the default prefix holds a
hash tag (`{quota}`); all quota keys then live on one node.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import anyio.to_thread
import attrs
import redis
import redis.exceptions

from core import WINDOW_MS, Refusal, Reservation
from frontends.quota._local import InProcessCounters

__all__ = ["DEFAULT_PREFIX", "RedisCounters"]

log = logging.getLogger("inference_gateway.quota")

DEFAULT_PREFIX = "inference-gateway:{quota}:"

# Helpers every script shares.  A limit key is three Redis keys: `times` (sorted set:
# reservation id -> millisecond), `amounts` (hash: reservation id -> amount) and `total`
# (the sum of `amounts`, kept as it changes, so a check costs no scan of the window).
_COMMON = """
local function trim(times, amounts, total, horizon)
  local expired = redis.call('ZRANGEBYSCORE', times, '-inf', horizon)
  if #expired == 0 then return end
  local freed = 0
  for first = 1, #expired, 500 do
    local last = math.min(first + 499, #expired)
    for _, v in ipairs(redis.call('HMGET', amounts, unpack(expired, first, last))) do
      if v then freed = freed + tonumber(v) end
    end
    redis.call('HDEL', amounts, unpack(expired, first, last))
  end
  redis.call('ZREMRANGEBYSCORE', times, '-inf', horizon)
  redis.call('DECRBY', total, freed)
end
local function held(total)
  return tonumber(redis.call('GET', total) or '0')
end
local function put(amounts, total, rid, amount)
  local old = redis.call('HGET', amounts, rid)
  redis.call('HSET', amounts, rid, amount)
  redis.call('INCRBY', total, amount - tonumber(old or '0'))
end
local function clock(given)
  local now = tonumber(given)
  if now == nil then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return now
end
"""

# KEYS: times, amounts, total per reservation.  ARGV: now ("" = TIME), id, window, then
# amount and capacity per reservation.  Returns 0 (all recorded) or {index, retry_after}.
_RESERVE = (
    _COMMON
    + """
local now, rid, window = clock(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local n = #KEYS / 3
for i = 1, n do
  local times, amounts, total = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local amount, capacity = tonumber(ARGV[2 + 2 * i]), tonumber(ARGV[3 + 2 * i])
  trim(times, amounts, total, now - window)
  local sum = held(total)
  if sum + amount > capacity then
    -- When enough of the oldest entries leave the window for this one to fit.
    local whole = math.floor(window / 1000)
    if amount > capacity then return {i, whole} end
    local need, freed, start = sum + amount - capacity, 0, 0
    while true do
      local entries = redis.call('ZRANGE', times, start, start + 99, 'WITHSCORES')
      if #entries == 0 then return {i, whole} end
      for j = 1, #entries, 2 do
        freed = freed + tonumber(redis.call('HGET', amounts, entries[j]))
        if freed >= need then
          local wait = tonumber(entries[j + 1]) + window - now
          return {i, math.max(1, math.floor((wait + 999) / 1000))}
        end
      end
      start = start + 100
    end
  end
end
for i = 1, n do
  local times, amounts, total = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  redis.call('ZADD', times, now, rid)
  put(amounts, total, rid, tonumber(ARGV[2 + 2 * i]))
  for _, key in ipairs({times, amounts, total}) do redis.call('PEXPIRE', key, window) end
end
return 0
"""
)

# KEYS: times, amounts, total per key.  ARGV: id, used.
_SETTLE = (
    _COMMON
    + """
for i = 1, #KEYS, 3 do
  if redis.call('HEXISTS', KEYS[i + 1], ARGV[1]) == 1 then
    put(KEYS[i + 1], KEYS[i + 2], ARGV[1], tonumber(ARGV[2]))
  end
end
return 0
"""
)

# KEYS: times, amounts, total per key.  ARGV: id.
_RELEASE = """
for i = 1, #KEYS, 3 do
  local old = redis.call('HGET', KEYS[i + 1], ARGV[1])
  redis.call('ZREM', KEYS[i], ARGV[1])
  if old then
    redis.call('HDEL', KEYS[i + 1], ARGV[1])
    redis.call('DECRBY', KEYS[i + 2], tonumber(old))
  end
end
return 0
"""

# KEYS: times, amounts, total.  ARGV: now ("" = TIME), window.  What the key holds now.
_USED = (
    _COMMON
    + """
local now, window = clock(ARGV[1]), tonumber(ARGV[2])
trim(KEYS[1], KEYS[2], KEYS[3], now - window)
return held(KEYS[3])
"""
)

_FAILURES = (redis.exceptions.RedisError, OSError)


@attrs.frozen
class _Write:
    """A settlement (`used` set) or a release (`used` None) waiting for the drainer."""

    reservation_id: str
    keys: tuple[str, ...]
    used: int | None
    queued_at: float


_STOP = object()


class RedisCounters:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        clock: Callable[[], int] | None = None,
        max_connections: int = 16,
        timeout: float = 1.0,
        retry_interval: float = 5.0,
        max_pending: int = 100_000,
    ) -> None:
        """Counters in the Redis at `url` (`redis://`, `rediss://` or `unix://`), under
        `prefix`.  `clock` (milliseconds) replaces Redis's `TIME`: for tests only.
        `timeout` bounds each Redis call; `retry_interval` is how often Redis is tried
        again while unreachable; `max_pending` bounds the settlements kept meanwhile."""
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections + 1,  # the drainer's own
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        self._redis = redis.Redis(connection_pool=pool)
        self._prefix = prefix
        self._clock = clock
        self._max_connections = max_connections
        self._retry_interval = retry_interval
        self._max_pending = max_pending
        self._timeout = timeout
        self._reserve_script = self._redis.register_script(_RESERVE)
        self._settle_script = self._redis.register_script(_SETTLE)
        self._release_script = self._redis.register_script(_RELEASE)
        self._used_script = self._redis.register_script(_USED)
        self._fallback = InProcessCounters()
        self._local_ids: dict[str, float] = {}  # reserved in process, by when
        self._limiter: anyio.CapacityLimiter | None = None
        # Shared between the loop's thread, reserve threads and the drainer.
        self._lock = threading.Lock()
        self._reachable = True
        self._next_attempt = 0.0
        self._queue: queue.SimpleQueue[_Write | object] = queue.SimpleQueue()
        self._queued = 0  # writes handed to the drainer (loop's thread only)
        self._handled = threading.Condition()
        self._done = 0  # writes the drainer applied or parked
        self._parked: collections.deque[_Write] = collections.deque()
        self._parked_lock = threading.Lock()  # the drainer and reserves both flush
        self._lost = 0
        self._drainer: threading.Thread | None = None
        self._closed = False

    # -- the request path -----------------------------------------------------------------

    async def reserve(
        self, reservation_id: str, reservations: Sequence[Reservation]
    ) -> Refusal | None:
        self._start()
        if self._try_redis():
            ticket = self._queued
            try:
                return await anyio.to_thread.run_sync(
                    self._reserve_in_redis,
                    reservation_id,
                    tuple(reservations),
                    ticket,
                    limiter=self._thread_limiter(),
                )
            except _FAILURES as exc:
                self._unreachable(exc)
        self._remember_local(reservation_id)
        return await self._fallback.reserve(reservation_id, reservations)

    def settle(self, reservation_id: str, keys: Sequence[str], used: int) -> None:
        if self._local_ids.pop(reservation_id, None) is not None:
            self._fallback.settle(reservation_id, keys, used)
        else:
            self._hand_over(_Write(reservation_id, tuple(keys), max(0, used), time.monotonic()))

    def release(self, reservation_id: str, keys: Sequence[str]) -> None:
        if self._local_ids.pop(reservation_id, None) is not None:
            self._fallback.release(reservation_id, keys)
        else:
            self._hand_over(_Write(reservation_id, tuple(keys), None, time.monotonic()))

    # -- state, for health and metrics -----------------------------------------------------

    def status(self) -> dict[str, Any]:
        """`backend`: "redis", or "redis-unreachable, using in-process" (for health);
        `redis`: "ok" or "unreachable" (for metrics); `pending`: settlements and releases
        not yet in Redis; `lost`: those given up (older than the window, or over
        `max_pending`)."""
        with self._lock:
            reachable = self._reachable
        pending = max(0, self._queued - self._done) + len(self._parked)
        return {
            "backend": "redis" if reachable else "redis-unreachable, using in-process",
            "redis": "ok" if reachable else "unreachable",
            "pending": pending,
            "lost": self._lost,
        }

    async def used(self, key: str) -> int:
        """What `key` holds in the window ending now, after this process's own queued
        writes (for tests and tools; the request path never asks)."""
        ticket = self._queued
        return await anyio.to_thread.run_sync(
            self._used_in_redis, key, ticket, limiter=self._thread_limiter()
        )

    async def holding(self, key: str) -> int:
        """`used`; while Redis is unreachable (or found so now, as a reserve would find
        it), what the in-process fallback holds."""
        with self._lock:
            reachable = self._reachable
        if reachable:
            try:
                return await self.used(key)
            except _FAILURES as exc:
                self._unreachable(exc)
        return await self._fallback.holding(key)

    async def aclose(self) -> None:
        """Apply what is queued (parked writes get one more try), stop the drainer and
        close the connections; waits at most about one Redis timeout per write."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            drainer = self._drainer
            if drainer is not None:
                self._queue.put(_STOP)
                await anyio.to_thread.run_sync(drainer.join)
            await anyio.to_thread.run_sync(self._redis.close)

    # -- helpers on the loop's thread ------------------------------------------------------

    def _start(self) -> None:
        if self._drainer is None and not self._closed:
            self._drainer = threading.Thread(
                target=self._drain, name="quota-redis-drainer", daemon=True
            )
            self._drainer.start()

    def _thread_limiter(self) -> anyio.CapacityLimiter:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self._max_connections)
        return self._limiter

    def _try_redis(self) -> bool:
        """Whether this reserve goes to Redis: always while it answers; while it does
        not, one reserve (or drainer's probe) per `retry_interval` tries it again."""
        with self._lock:
            return self._reachable or self._attempt_due()

    def _attempt_due(self) -> bool:
        """While unreachable: whether it is time to try Redis again (called locked)."""
        now = time.monotonic()
        if now < self._next_attempt:
            return False
        self._next_attempt = now + self._retry_interval
        return True

    def _remember_local(self, reservation_id: str) -> None:
        now = time.monotonic()
        horizon = now - WINDOW_MS / 1000
        while self._local_ids:
            oldest = next(iter(self._local_ids))
            if self._local_ids[oldest] > horizon:
                break
            del self._local_ids[oldest]  # left the window: its settlement changes nothing
        self._local_ids[reservation_id] = now

    def _hand_over(self, write: _Write) -> None:
        if self._closed:
            self._lose(1, "the counters are closed")
            return
        self._start()
        self._queued += 1
        self._queue.put(write)

    # -- helpers on worker threads ---------------------------------------------------------

    def _keys(self, keys: Sequence[str]) -> list[str]:
        return [f"{self._prefix}{key}:{part}" for key in keys for part in ("t", "a", "s")]

    def _now(self) -> str:
        return "" if self._clock is None else str(self._clock())

    def _wait_for(self, ticket: int) -> None:
        """Until the drainer has handled the writes queued before `ticket` (bounded)."""
        with self._handled:
            self._handled.wait_for(lambda: self._done >= ticket, timeout=self._timeout)

    def _reserve_in_redis(
        self, reservation_id: str, reservations: tuple[Reservation, ...], ticket: int
    ) -> Refusal | None:
        self._wait_for(ticket)
        if self._parked:  # Redis is back: this process's earlier writes go first
            self._flush_parked()
        args: list[str | int] = [self._now(), reservation_id, WINDOW_MS]
        for wanted in reservations:
            args += [wanted.amount, wanted.capacity]
        answer = self._reserve_script(keys=self._keys([r.key for r in reservations]), args=args)
        self._reachable_again()
        if answer == 0:
            return None
        index, retry_after = answer
        return Refusal(limit=reservations[int(index) - 1].limit, retry_after=int(retry_after))

    def _used_in_redis(self, key: str, ticket: int) -> int:
        self._wait_for(ticket)
        return int(self._used_script(keys=self._keys([key]), args=[self._now(), WINDOW_MS]))

    def _apply(self, write: _Write) -> None:
        keys = self._keys(write.keys)
        if write.used is None:
            self._release_script(keys=keys, args=[write.reservation_id])
        else:
            self._settle_script(keys=keys, args=[write.reservation_id, write.used])

    def _unreachable(self, exc: BaseException) -> None:
        with self._lock:
            was = self._reachable
            self._reachable = False
            self._next_attempt = time.monotonic() + self._retry_interval
        if was:
            log.warning(
                "quota: Redis unreachable (%s); counting in process, trying again every %ss",
                type(exc).__name__,
                self._retry_interval,
            )

    def _reachable_again(self) -> None:
        with self._lock:
            was = self._reachable
            self._reachable = True
        if not was:
            log.warning("quota: Redis answers again; counting in Redis")

    def _lose(self, count: int, why: str) -> None:
        with self._lock:
            self._lost += count
        log.warning("quota: %d settlement(s)/release(s) not applied in Redis: %s", count, why)

    def _drain(self) -> None:
        """The drainer thread: apply writes in order; park them while Redis is away."""
        while True:
            with self._lock:
                reachable = self._reachable
            try:
                idle = max(self._retry_interval, 0.1)
                item = self._queue.get(timeout=None if reachable else idle)
            except queue.Empty:
                item = None
            if not reachable:
                with self._lock:
                    due = self._attempt_due()
                if due:
                    self._retry_parked(probe=True)
            elif self._parked:
                self._retry_parked(probe=False)
            if item is _STOP:
                self._retry_parked(probe=True)
                with self._parked_lock:
                    left = len(self._parked)
                    self._parked.clear()
                if left:
                    self._lose(left, "Redis unreachable when the gateway stopped")
                return
            if isinstance(item, _Write):
                try:
                    self._write_or_park(item)
                except Exception:  # a bug of ours: say so, keep draining
                    log.exception("quota: a settlement/release failed")
                    self._lose(1, "it failed (see the error above)")
                with self._handled:
                    self._done += 1
                    self._handled.notify_all()

    def _write_or_park(self, write: _Write) -> None:
        with self._lock:
            reachable = self._reachable
        if reachable and not self._parked:
            try:
                self._apply(write)
                return
            except _FAILURES as exc:
                self._unreachable(exc)
        with self._parked_lock:
            self._parked.append(write)
            over = len(self._parked) > self._max_pending
            if over:
                self._parked.popleft()
        if over:
            self._lose(1, f"more than {self._max_pending} waiting")

    def _retry_parked(self, *, probe: bool) -> None:
        """Give up parked writes older than the window, then apply the rest in order if
        Redis answers (when `probe`, ask it first even if nothing is parked)."""
        horizon = time.monotonic() - WINDOW_MS / 1000
        old = 0
        with self._parked_lock:
            while self._parked and self._parked[0].queued_at <= horizon:
                self._parked.popleft()
                old += 1
        if old:
            self._lose(old, "older than the window (their reservations have expired)")
        if not self._parked and not probe:
            return
        try:
            if probe:
                self._redis.ping()
            self._flush_parked()
        except _FAILURES as exc:
            self._unreachable(exc)
            return
        self._reachable_again()

    def _flush_parked(self) -> None:
        """Apply the parked writes in order (the drainer, or a reserve that finds Redis
        back first); raises if Redis fails, leaving the rest parked."""
        with self._parked_lock:
            while self._parked:
                self._apply(self._parked[0])
                self._parked.popleft()
