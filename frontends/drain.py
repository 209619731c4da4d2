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

Written against anyio, so the same code drains under asyncio and under trio.  One
exception: on asyncio, a cuttable block costs no cancel scope until the cut (see
`_Cuttable`): there is one per request and one per stream chunk, and the cut happens
once in a process's life.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
import sniffio
from anyio._backends import _asyncio as _anyio_asyncio

__all__ = ["CUT_GRACE_SECONDS", "Drain", "new_scope", "serve_draining"]

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
        self._waits: set[_Cuttable] = set()

    @property
    def is_cut(self) -> bool:
        return self._cut

    @property
    def waiting(self) -> int:
        """How many cuttable waits are in progress (what a cut now would end)."""
        return len(self._waits)

    def cuttable(self) -> _Cuttable:
        """A block the cut may interrupt.  It does so as a cancel scope of the block's own
        would, so the block ends quietly (no exception): the caller tells that it was cut
        by what the block did not get to do."""
        return _Cuttable(self)

    def cut(self) -> int:
        """Interrupt every wait now, and every one that starts later; returns how many
        were running."""
        self._cut = True
        waits = list(self._waits)
        for wait in waits:
            wait.cancel()
        return len(waits)


# The running loop's own cancel scope class, by sniffio's name for the loop.
_SCOPES: dict[str, Callable[[], anyio.CancelScope]] = {}


def new_scope() -> anyio.CancelScope:
    """`anyio.CancelScope()`, made by the running loop's class directly: anyio's
    constructor looks the loop's backend up (sniffio, a module lookup, a factory) on each
    call, five times the cost of the scope itself."""
    library = sniffio.current_async_library()
    make = _SCOPES.get(library)
    if make is None:
        scope = anyio.CancelScope()
        _SCOPES[library] = type(scope)
        return scope
    return make()


# anyio's record of the cancel scope each asyncio task is in (None if a later anyio
# keeps no such record; shields inside a block are then not seen).
_TASK_STATES: Any = getattr(_anyio_asyncio, "_task_states", None)


def _innermost_scope(task: asyncio.Task[Any]) -> Any:
    """The anyio cancel scope `task` is in now (None: none)."""
    state = None if _TASK_STATES is None else _TASK_STATES.get(task)
    return getattr(state, "cancel_scope", None)


def _shielded_within(scope: Any, outer: Any) -> bool:
    """Whether a shielded anyio scope lies between `scope` (innermost) and `outer`."""
    while scope is not None and scope is not outer:
        if scope.shield:
            return True
        scope = getattr(scope, "_parent_scope", None)
    return False


class _Cuttable:
    """One cuttable block.

    Under trio, and under asyncio once the drain is cut, it is an anyio cancel scope,
    registered so that the cut can cancel it.  Under asyncio before the cut (every
    request and every stream chunk of a process's life but those of its last seconds) it
    is lazy: entering only notes the task and its count of pending cancellations, for a
    fraction of a scope's CPU (a scope is a dozen fields, a timer check and a tree of
    parents and children kept in step at each entry and exit).  The cut, once per
    process, then does what the scope would have: it cancels the task where it waits
    (`Task.cancel`), not while a shielded anyio scope entered inside the block runs nor
    while the task's wait has already completed (anyio's own delivery skips both), and
    again at each turn of the loop until the block ends, as anyio redelivers; the exit
    takes back exactly its own cancellations (`Task.uncancel`) and swallows the
    `CancelledError` only when no other cancellation of the task is pending, as anyio's
    scope does.
    """

    __slots__ = ("_cancelling", "_cancels", "_drain", "_outer", "_scope", "_task")

    def __init__(self, drain: Drain) -> None:
        self._drain = drain
        self._scope: anyio.CancelScope | None = None
        self._task: asyncio.Task[Any] | None = None
        self._outer: Any = None  # the anyio scope the block began in
        self._cancelling = 0  # the task's pending cancellations when the block began
        self._cancels = 0  # the task's cancellations requested by the cut

    def __enter__(self) -> None:
        drain = self._drain
        # Lazy only on asyncio (no running asyncio loop: trio) and before the cut.
        loop = None if drain._cut else asyncio._get_running_loop()
        task = None if loop is None else asyncio.current_task(loop)
        if task is None:
            scope = self._scope = new_scope()
            if drain._cut:
                scope.cancel()
            scope.__enter__()
        else:
            self._task = task
            self._cancelling = task.cancelling()
            state = None if _TASK_STATES is None else _TASK_STATES.get(task)
            self._outer = None if state is None else state.cancel_scope
        drain._waits.add(self)

    def cancel(self) -> None:
        """What the cut does to this block."""
        if self._scope is not None:
            self._scope.cancel()
        else:
            self._deliver()

    def _deliver(self) -> None:
        task = self._task
        if self not in self._drain._waits or task is None or task.done():
            return
        task.get_loop().call_soon(self._deliver)  # until the block ends
        if task._must_cancel:  # type: ignore[attr-defined]
            return  # a cancellation is on its way already
        if _shielded_within(_innermost_scope(task), self._outer):
            return
        waiter = task._fut_waiter  # type: ignore[attr-defined]
        if isinstance(waiter, asyncio.Future) and waiter.done():
            return  # what it waited for came: it resumes with it, and is cut at its next wait
        task.cancel()
        self._cancels += 1

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        self._drain._waits.discard(self)
        if self._scope is not None:
            return bool(self._scope.__exit__(kind, error, traceback))
        if not self._cancels:
            return False
        task = self._task
        assert task is not None
        for _ in range(self._cancels):
            task.uncancel()
        # Another cancellation of the task (its caller's) is never swallowed.
        return isinstance(error, asyncio.CancelledError) and not (
            task.cancelling() > self._cancelling
        )


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
