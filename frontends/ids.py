"""Fresh ids for requests: 32 random hex digits, the shape `uuid4().hex` has.

Every request needs two (the HTTP request id, unless the client sent one, and the
gateway's own log id).  `uuid.uuid4()` asks the kernel for 16 bytes each time and builds
a UUID object around them; here the kernel is asked for 256 ids' worth at once and the
ids are cut from that, so a request pays a list `pop` instead of a system call.

The ids are as random as uuid4's (the same `os.urandom`), and unique as long as no two
holders cut the same buffer: `list.pop` is atomic, so threads never share an id, and a
forked child forgets the ids its parent had not used yet, so two workers never do.
"""

from __future__ import annotations

import os

__all__ = ["new_id"]

_BATCH = 256  # ids per system call
_ids: list[str] = []


def new_id() -> str:
    """A fresh id: 32 lower-case hex digits from the kernel's random source."""
    while True:
        try:
            return _ids.pop()
        except IndexError:
            block = os.urandom(16 * _BATCH).hex()
            _ids.extend([block[i : i + 32] for i in range(0, len(block), 32)])


os.register_at_fork(after_in_child=_ids.clear)
