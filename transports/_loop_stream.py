"""A plain TCP connection on asyncio's own transport and protocol, for the h11 transport.

Why not anyio's socket stream, which the transport uses everywhere else: on asyncio,
anyio's `receive` resumes the transport's reading before each wait and pauses it after
(two `epoll_ctl` calls per receive), wakes the reader through an `asyncio.Event`, and
guards each call; for a stream of small chunks that was most of the CPU a chunk cost
beyond h11's parsing.  Here reading stays on: the loop hands each read to
`data_received` (uvloop does it from C), which queues it and wakes the one waiting
`receive` through a bare future.  Reading is paused only when more than `HIGH_WATER`
bytes wait unread, so a backend that sends faster than the caller reads holds at most
that much (plus one read) in memory.

It offers what `_Connection` needs of a byte stream (`send`, `receive`, `aclose`) and
fails as anyio's streams do (`OSError` from the loop, `anyio.BrokenResourceError` when
the connection broke, `anyio.EndOfStream` at the peer's end, `anyio.ClosedResourceError`
once closed here), so errors are translated in the same one place.  Because reading
never stops, an idle connection that received anything (bytes, an end, an error) since
its answer ended is known unsound at once; what the loop has not dispatched yet is
still looked for on the socket by the transport.

Used only on asyncio, for `http` backends reached directly; trio, TLS and proxies use
anyio's streams.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import socket

import anyio

__all__ = ["HIGH_WATER", "DeadlinePassed", "LoopStream", "connect"]

HIGH_WATER = 256 * 1024
_EMPTY = contextvars.Context()


class DeadlinePassed(Exception):
    """A `receive` given a deadline found nothing to return by then."""


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(DeadlinePassed())


class LoopStream(asyncio.Protocol):
    """The protocol of one connection, and the stream the transport reads and writes."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self.socket: socket.socket | None = None
        # Reads not yet taken, oldest first.  A list, not a deque: an open stream keeps
        # its connection for its whole life, and an empty deque is 760 bytes (a list, 56);
        # the reader takes each read as it comes, so it rarely holds more than one.
        self._received: list[bytes] = []
        self._unread = 0
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._paused = False
        self._ended = False  # the peer's end of stream arrived
        self._lost = False  # the connection is gone
        self._error: BaseException | None = None
        self._closed = False  # closed by us
        # The deadline of the `receive` waiting now (inf: none, or no wait), and the one
        # timer of the loop's that keeps it (see `receive`), due at `_timer_at`.
        self._deadline = math.inf
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    # Protocol callbacks, run by the loop.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self.socket = transport.get_extra_info("socket")

    def data_received(self, data: bytes) -> None:
        self._received.append(data)
        self._unread += len(data)
        if self._unread > HIGH_WATER and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._ended = True
        self._wake()
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._error = exc
        self._wake()
        self._drop_timer()
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    def pause_writing(self) -> None:
        if self._drained is None:
            self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # The stream, used by the transport.

    @property
    def sound(self) -> bool:
        """Whether an idle connection may carry a request: nothing arrived, no end."""
        return not (self._received or self._ended or self._lost)

    async def send(self, data: bytes, deadline: float = math.inf) -> None:
        """Write `data`; if the peer is not reading, wait until the loop has handed most
        of it on (`DeadlinePassed` if that has not happened by `deadline`)."""
        if self.write(data):
            await self.drain(deadline)

    def write(self, data: bytes) -> bool:
        """`send` without its wait: write `data`, and say whether the peer is behind (the
        caller then awaits `drain`).  A request's write rarely has to wait, and an
        exchange spends one coroutine fewer without it."""
        self._check_open()
        assert self._transport is not None
        self._transport.write(data)
        return self._drained is not None

    async def drain(self, deadline: float = math.inf) -> None:
        """Wait until the loop has handed most of what was written on
        (`DeadlinePassed` if that has not happened by `deadline`)."""
        drained = self._drained
        if drained is None:
            return
        if deadline == math.inf:
            await asyncio.shield(drained)
        else:
            # The shared future is not ours to fail: this call waits on its own.
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()

            def done(_: asyncio.Future[None]) -> None:
                if not waiter.done():
                    waiter.set_result(None)

            drained.add_done_callback(done)
            timer = loop.call_at(deadline, _expire, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                drained.remove_done_callback(done)
        self._check_open()

    async def receive(self, max_bytes: int = 65536, deadline: float = math.inf) -> bytes:
        """What arrived (at most `max_bytes` of it), waiting for something if need be;
        `DeadlinePassed` if nothing did by `deadline` (on the loop's clock).

        The deadline is kept by one timer of the loop's per connection, on the future the
        wait is on: a cancel scope around each wait (anyio's `fail_after`) cost as much
        CPU as the rest of the wake-up, and a timer made and cancelled per wait (a stream
        of model tokens waits once per token) still cost a tenth of a chunk.  A timer
        due no later than the wait's deadline is left as it is: when it fires early it
        is set again for the deadline of the wait then running, if any, so a connection
        that keeps answering within its limits sets one timer per limit's length, not
        one per read.  The caller's own cancellation (a cancelled task or anyio scope)
        reaches the future as before.
        """
        while not self._received:
            if self._closed:
                raise anyio.ClosedResourceError
            if self._error is not None:
                raise anyio.BrokenResourceError from self._error
            if self._ended or self._lost:
                raise anyio.EndOfStream
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            if deadline < self._timer_at:
                self._set_timer(deadline)
            self._deadline = deadline
            try:
                await waiter
            finally:
                self._waiter = None
                self._deadline = math.inf
        data = self._received.pop(0)
        if len(data) > max_bytes:
            data, rest = data[:max_bytes], data[max_bytes:]
            self._received.insert(0, rest)
        self._unread -= len(data)
        if self._paused and self._unread <= HIGH_WATER // 4 and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        return data

    def _set_timer(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        # An empty context: the timer may outlive the call (and its web request) that
        # set it, and its callback reads no context variable.
        self._timer = asyncio.get_running_loop().call_at(when, self._on_timer, context=_EMPTY)
        self._timer_at = when

    def _drop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, math.inf

    def _on_timer(self) -> None:
        due, self._timer, self._timer_at = self._timer_at, None, math.inf
        waiter, deadline = self._waiter, self._deadline
        if waiter is None or waiter.done() or deadline == math.inf:
            return
        if deadline <= due:
            waiter.set_exception(DeadlinePassed())
        else:
            self._set_timer(deadline)

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        """Close at once (no waiting on the peer)."""
        self._closed = True
        self._drop_timer()
        if self._transport is not None:
            self._transport.abort()

    def _check_open(self) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        if self._lost:
            raise anyio.BrokenResourceError from self._error


async def connect(host: str, port: int) -> LoopStream:
    """A TCP connection to `host:port` on the running asyncio loop (TCP_NODELAY is
    asyncio's default).

    Made in a task of its own with an empty context: a transport keeps the context it
    was made in (its callbacks run in it) for as long as the connection lives, and the
    caller's is a web request's, whose context variables hold the framework's request
    context (URL adapter, app context, ...): kept alive for the whole life of a stream,
    and of a pooled connection after it.  The callbacks here read no context variable.
    One task per new connection, never per request on a pooled one."""
    loop = asyncio.get_running_loop()
    made = loop.create_connection(LoopStream, host, port)
    task = asyncio.create_task(made, context=contextvars.Context())
    try:
        _, stream = await task
    except asyncio.CancelledError:
        # Cancelled once the connection was made (the task cancelled too otherwise):
        # closed here, not left open for the collector.
        if task.done() and not task.cancelled() and task.exception() is None:
            task.result()[1].close()
        raise
    return stream
