"""The asyncio event loop `serve` runs on: uvloop when it is installed (the `fast`
extra, `pip install 'inference-gateway[fast]'`), else asyncio's own.

uvloop is libuv's loop behind asyncio's interface; Hypercorn, Quart and anyio run on it
unchanged, and its socket and scheduling work costs a fraction of the selector loop's.
`python -m bench` serves its framework floor through the same function, so both sides
of the comparison run on the same loop.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["asyncio_loop_name", "run_asyncio"]


def _uvloop() -> Any:
    try:
        return importlib.import_module("uvloop")
    except ImportError:
        return None


def asyncio_loop_name() -> str:
    """'uvloop' or 'asyncio': the loop `run_asyncio` will run on."""
    return "asyncio" if _uvloop() is None else "uvloop"


def run_asyncio(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run `main()` to its end on uvloop if installed, else on asyncio's default loop."""
    uvloop = _uvloop()
    factory = None if uvloop is None else uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())
