"""Request ids: 32 random hex digits, never handed out twice, not across threads and not
across a fork (a worker forked from a parent that had made ids of its own)."""

from __future__ import annotations

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

from frontends.ids import new_id

HEX32 = re.compile(r"[0-9a-f]{32}")


def test_an_id_is_thirty_two_hex_digits_like_a_uuid4_hex() -> None:
    assert HEX32.fullmatch(new_id())


def test_threads_drawing_at_once_never_get_the_same_id() -> None:
    with ThreadPoolExecutor(8) as pool:
        batches = list(pool.map(lambda _: [new_id() for _ in range(2000)], range(8)))
    drawn = [i for batch in batches for i in batch]
    assert len(set(drawn)) == len(drawn) == 16_000


def test_a_forked_child_never_hands_out_an_id_its_parent_will() -> None:
    new_id()  # the parent now holds ids it has not handed out yet
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first ids, to the parent, then out without cleanup
        os.write(write, "".join(new_id() for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        text = pipe.read().decode()
    os.waitpid(pid, 0)
    child = {text[i : i + 32] for i in range(0, len(text), 32)}
    parent = {new_id() for _ in range(50)}
    assert len(child) == 50
    assert not child & parent


def test_an_id_starts_with_the_millisecond_it_was_made_so_later_ids_sort_after() -> None:
    before = time.time_ns() // 1_000_000
    made = new_id()
    after = time.time_ns() // 1_000_000
    assert before <= int(made[:12], 16) <= after
    assert new_id()[:12] >= made[:12]
