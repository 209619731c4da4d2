"""How many connections the gateway may hold to each backend and to all of them, and the
bounded wait for one: what keeps one slow backend from starving the others.

Theory of operation.  Every exchange (a `send`, or a stream from `open_stream` to its
`aclose`) holds one permit of its backend (scheme, host, port) and one of the whole
transport.  A permit is taken backend first, then global, always in that order, so two
exchanges never wait on each other crosswise.  A backend that hangs can hold at most
`per_backend` permits, and with `per_backend < total` the others always find global
permits left.  Waiting for permits is bounded, both together, by `pool_wait`; a wait
that runs out raises `Saturated`, which says the gateway's own limit was reached, never
that the backend timed out.  The transports keep their pools of idle connections as
before: a permit bounds the exchanges in flight, the pool decides which socket carries
one.
"""

from __future__ import annotations

import anyio
import attrs

from transports._base import Saturated

__all__ = ["DEFAULT_MAX_ANSWER_BYTES", "Admission", "ConnectionLimits", "Permit"]

BackendKey = tuple[str, str, int]
# The largest whole (non-streamed) answer a transport reads by default: far above any
# chat completion or embedding batch, far below what would hurt a gateway's memory.
DEFAULT_MAX_ANSWER_BYTES = 16 * 1024 * 1024


def _at_least_one(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be at least 1, not {value}")


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be more than 0 seconds, not {value}")


def _within_total(instance: ConnectionLimits, _: object, value: int) -> None:
    if value > instance.total:
        raise ValueError(
            f"per_backend ({value}) must not exceed total ({instance.total}): one backend "
            "could then hold every connection"
        )


@attrs.frozen(kw_only=True)
class ConnectionLimits:
    """Connections in use at once, per backend and in all, and how long a call waits
    for one (seconds) before it is refused as `Saturated`."""

    total: int = attrs.field(default=1000, validator=_at_least_one)
    per_backend: int = attrs.field(default=100, validator=[_at_least_one, _within_total])
    pool_wait: float = attrs.field(default=5.0, validator=_positive)


class Permit:
    """The right to one exchange: released exactly once, when the exchange ends."""

    def __init__(self, backend: anyio.Semaphore, everyone: anyio.Semaphore) -> None:
        self._held: tuple[anyio.Semaphore, ...] = (backend, everyone)

    def release(self) -> None:
        held, self._held = self._held, ()
        for semaphore in held:
            semaphore.release()


class Admission:
    """The semaphores behind `ConnectionLimits`, made on first use in the running loop."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self._everyone: anyio.Semaphore | None = None
        self._backends: dict[BackendKey, anyio.Semaphore] = {}

    def in_use(self, backend: BackendKey) -> int:
        """Permits of this backend held right now (for tests and health)."""
        semaphore = self._backends.get(backend)
        return 0 if semaphore is None else self.limits.per_backend - semaphore.value

    async def acquire(self, backend: BackendKey) -> Permit:
        """Both permits, or `Saturated` once `pool_wait` has passed without them."""
        if self._everyone is None:
            self._everyone = anyio.Semaphore(self.limits.total)
        everyone = self._everyone
        mine = self._backends.get(backend)
        if mine is None:
            mine = self._backends[backend] = anyio.Semaphore(self.limits.per_backend)
        # Uncontended (the usual case): both permits at once, with no checkpoint and no
        # cancel scope; the exchange's own IO is where a cancellation is noticed.
        got_mine = _took(mine)
        if got_mine and _took(everyone):
            return Permit(mine, everyone)
        try:
            with anyio.fail_after(self.limits.pool_wait):
                if not got_mine:
                    await mine.acquire()
                    got_mine = True
                await everyone.acquire()
        except TimeoutError:
            if got_mine:
                mine.release()
            which = "to this backend" if not got_mine else "to all backends together"
            raise Saturated(
                f"every connection the gateway allows {which} stayed in use for "
                f"{self.limits.pool_wait:g}s"
            ) from None
        except BaseException:
            if got_mine:
                mine.release()
            raise
        return Permit(mine, everyone)


def _took(semaphore: anyio.Semaphore) -> bool:
    """Whether a permit could be taken without waiting (then it is held)."""
    try:
        semaphore.acquire_nowait()
    except anyio.WouldBlock:
        return False
    return True
