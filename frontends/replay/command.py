"""`inference-gateway replay`: cassettes in, a table of differences out, 0/1/2 as exit code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from frontends.replay.runner import Replayed, replay_cassette
from transports.cassette import CassetteError

__all__ = ["add_replay_command", "run_replay_command"]


def _table(results: Sequence[Replayed]) -> str:
    header = ("cassette", "#", "request", "result")
    rows = [(r.cassette, str(r.index), r.label, "pass" if r.passed else "DIFF") for r in results]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str], tail: str) -> str:
        padded = [c.ljust(w) for c, w in zip(cells, widths, strict=True)]
        return "  ".join([*padded, tail]).rstrip()

    lines = [line(header, "first difference")]
    for row, result in zip(rows, results, strict=True):
        first, *more = result.differences or ("",)
        lines.append(line(row, first))
        lines += [f"    - {d}" for d in more]
        lines += [f"    note: {n}" for n in result.notes]
    return "\n".join(lines)


def add_replay_command(commands: Any) -> None:
    """Register `replay` on the CLI's sub-parsers (`argparse` `_SubParsersAction`)."""
    replay = commands.add_parser(
        "replay", help="replay recorded traffic through the gateway, offline; report differences"
    )
    replay.add_argument("cassettes", type=Path, nargs="+", metavar="CASSETTE")
    replay.add_argument("--loop", choices=("asyncio", "trio"), default="asyncio")
    replay.add_argument(
        "--fixtures", type=Path, help="fixtures folder for cassettes without a fixtures record"
    )


def run_replay_command(args: argparse.Namespace) -> int:
    """0 when every cassette replays identically, 1 on any difference, 2 if one is unreadable."""

    async def run() -> list[Replayed]:
        results: list[Replayed] = []
        for path in args.cassettes:
            results += await replay_cassette(path, fixtures_dir=args.fixtures)
        return results

    try:
        results = anyio.run(run, backend=args.loop)
    except CassetteError as exc:
        print(f"inference-gateway: cannot replay: {exc}", file=sys.stderr)
        return 2
    print(_table(results))
    differing = [r for r in results if not r.passed]
    cassettes = {r.cassette for r in results}
    bad = {r.cassette for r in differing}
    print(
        f"\n{len(cassettes)} cassette(s), {len(results)} request(s): "
        f"{len(results) - len(differing)} passed, {len(differing)} differed "
        f"({len(bad)} cassette(s) with differences) [loop: {args.loop}]"
    )
    return 1 if differing else 0
