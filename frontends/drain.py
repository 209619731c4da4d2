"""The graceful drain of a served gateway: finish what runs, then end the rest properly.

Theory of operation
-------------------
On the first SIGTERM or SIGINT, `serve_draining` lets Hypercorn's shutdown begin: it
closes its listening sockets (a new connection is refused), closes idle keep-alive
connections, and closes each busy one once its response is done.  What is running may
go on for `drain_seconds`.  Then (or at once, on a second signal) the gateway's `Drain`
is cut: every wait on a backend that the driver marked `cuttable()` (a request waiting
for its answer, a stream waiting for its next chunk) is interrupted, and the driver
feeds the request machine `GatewayStopping`, which ends a stream with an OpenAI error
event and a proper end of body, or answers a waiting request with a 503; both are
logged as `gateway_shutting_down`.  Hypercorn's own grace is set `CUT_GRACE_SECONDS`
past the deadline so these last answers reach their clients; only what is still there
after that (a client that stopped reading) is cancelled by Hypercorn.  Once every
connection has closed, Hypercorn runs the app's shutdown, which flushes the request log
and the quota settlements, and `serve` returns (exit status 0).

Written against anyio only, so the same code drains under asyncio and under trio.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable
from types import TracebackType

import anyio
import anyio.abc
import sniffio

__all__ = ["CUT_GRACE_SECONDS", "Drain", "serve_draining"]

log = logging.getLogger("inference_gateway")

# After the deadline, how long the requests just cut have to deliver their last bytes.
CUT_GRACE_SECONDS = 5.0

ShutdownTrigger = Callable[[], Awaitable[None]]


class Drain:
    """Where the driver's interruptible waits are registered, and the switch that cuts
    them.  Not cut until the drain deadline passes; once cut, it stays cut, so a wait
    that begins later is interrupted at its first checkpoint."""

    def __init__(self) -> None:
        self._cut = False
        self._waits: set[anyio.CancelScope] = set()

    @property
    def is_cut(self) -> bool:
        return self._cut

    @property
    def waiting(self) -> int:
        """How many cuttable waits are in progress (what a cut now would end)."""
        return len(self._waits)

    def cuttable(self) -> _Cuttable:
        """A block the cut may interrupt.  It does so by cancelling the block's own scope,
        so the block ends quietly (no exception): the caller tells that it was cut by
        what the block did not get to do."""
        return _Cuttable(self)

    def cut(self) -> int:
        """Interrupt every wait now, and every one that starts later; returns how many
        were running."""
        self._cut = True
        waits = list(self._waits)
        for scope in waits:
            scope.cancel()
        return len(waits)


# The running loop's own cancel scope class, by sniffio's name for the loop.
_SCOPES: dict[str, Callable[[], anyio.CancelScope]] = {}


def _new_scope() -> anyio.CancelScope:
    """`anyio.CancelScope()`, made by the running loop's class directly: anyio's
    constructor looks the loop's backend up (sniffio, a module lookup, a factory) on each
    call, five times the cost of the scope itself, and a request makes one or two."""
    library = sniffio.current_async_library()
    make = _SCOPES.get(library)
    if make is None:
        scope = anyio.CancelScope()
        _SCOPES[library] = type(scope)
        return scope
    return make()


class _Cuttable:
    def __init__(self, drain: Drain) -> None:
        self._drain = drain
        self._scope = _new_scope()

    def __enter__(self) -> None:
        if self._drain.is_cut:
            self._scope.cancel()
        self._scope.__enter__()
        self._drain._waits.add(self._scope)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        self._drain._waits.discard(self._scope)
        return bool(self._scope.__exit__(kind, error, traceback))


async def serve_draining(
    serve: Callable[[ShutdownTrigger], Awaitable[None]], drain: Drain, drain_seconds: float
) -> None:
    """Run `serve(shutdown_trigger)` (Hypercorn's `serve` with the app and config bound)
    until SIGTERM or SIGINT, then drain as the module says.  Further signals after the
    cut, and after serving ended, are ignored: the last answers, the flush and the exit
    are never interrupted (`serve --workers` passes every signal on to each worker,
    including those that have finished their drain already)."""
    signalled = anyio.Event()
    async with anyio.create_task_group() as tasks:
        watcher = await tasks.start(_watch_signals, signalled, drain, drain_seconds)
        try:
            await serve(signalled.wait)
        finally:
            # The watcher's own scope, not the group's: cancelling the group cancels this
            # (host) task too, and after Hypercorn's asyncio worker had run here, that
            # CancelledError escaped the group (exit status 1 instead of 0).
            watcher.cancel()
    if signalled.is_set():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_IGN)


async def _watch_signals(
    signalled: anyio.Event,
    drain: Drain,
    drain_seconds: float,
    *,
    task_status: anyio.abc.TaskStatus[anyio.CancelScope] = anyio.TASK_STATUS_IGNORED,
) -> None:
    with (
        anyio.CancelScope() as watching,
        anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals,
    ):
        task_status.started(watching)
        async for received in signals:
            log.warning(
                "%s: no new connections; requests in flight have %g s to finish "
                "(a second signal ends them now)",
                signal.Signals(received).name,
                drain_seconds,
            )
            break
        signalled.set()
        with anyio.move_on_after(drain_seconds):
            async for _ in signals:
                break
        running = drain.cut()
        if running:
            log.warning("drain over: ending %d request(s) still waiting on their backends", running)
        async for _ in signals:
            pass
