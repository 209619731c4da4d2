"""The asyncio event loop `serve` runs on: asyncio's own, or uvloop with the `UVLOOP`
setting (installed by the `fast` extra, `pip install 'inference-gateway[fast]'`).

uvloop is libuv's loop behind asyncio's interface; Hypercorn, Quart and anyio run on it
unchanged, and its socket and scheduling work costs less than the selector loop's.  It
is not the default because libuv reads a readable socket up to 32 times per wake-up
before the stream's reader can pause it: a backend sending a huge answer fast gets
megabytes read ahead per connection before the answer cap refuses it (ten 50 MB answers
at once grew one process by up to ~65 MB on uvloop under load, ~14 MB on asyncio's
loop).  `python -m bench` serves its framework floor through the same function, so both
sides of the comparison run on the same loop.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["run_asyncio", "uvloop_installed"]


def _uvloop() -> Any:
    try:
        return importlib.import_module("uvloop")
    except ImportError:
        return None


def uvloop_installed() -> bool:
    return _uvloop() is not None


def run_asyncio(main: Callable[[], Coroutine[Any, Any, None]], *, uvloop: bool = False) -> None:
    """Run `main()` to its end on asyncio's default loop, or on uvloop if asked (it must
    be installed: `uvloop_installed()`)."""
    factory = None
    if uvloop:
        module = _uvloop()
        if module is None:
            raise RuntimeError("uvloop is not installed: pip install 'inference-gateway[fast]'")
        factory = module.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())
