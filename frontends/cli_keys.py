"""`inference-gateway keys add|list|revoke`: static API keys in the tokens file.

The file keeps only salted hashes; `add` prints the new key once and it is stored
nowhere else.  A running gateway notices the changed file at its next request.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from frontends.identity import add_key, read_entries, revoke_keys
from frontends.settings import Settings

__all__ = ["add_parser", "run"]


def add_parser(commands: Any) -> None:
    keys = commands.add_parser("keys", help="add, list or revoke static API keys")
    actions = keys.add_subparsers(dest="keys_command", required=True)
    add = actions.add_parser("add", help="make a new key for USER and print it once")
    add.add_argument("user", help="the username, e.g. ada@example.org")
    add.add_argument(
        "--group", action="append", default=[], help="a group of the user (repeatable)"
    )
    listing = actions.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("user", nargs="?", help="only this user's keys")
    revoke = actions.add_parser(
        "revoke", help="revoke USER's keys, or the key --id names (USER may then be left out)"
    )
    revoke.add_argument("user", nargs="?", help="the username whose keys go")
    revoke.add_argument("--id", dest="key_id", help="only the key with this id (k-...)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    path = settings.tokens_path
    if args.keys_command == "add":
        key_id, key = add_key(path, args.user, args.group)
        print(
            f"added key {key_id} for {args.user} to {path}; it is shown only now:", file=sys.stderr
        )
        print(key)
        return 0
    if not path.exists():
        print(f"inference-gateway: no tokens file at {path}", file=sys.stderr)
        return 1
    if args.keys_command == "list":
        for entry in read_entries(path):
            if args.user in (None, entry.username):
                groups = ",".join(entry.groups) or "-"
                print(f"{entry.id}  {entry.username}  groups={groups}  created={entry.created}")
        return 0
    if args.user is None and args.key_id is None:
        print(
            "inference-gateway: keys revoke: name a USER, a key with --id, or both", file=sys.stderr
        )
        return 2
    removed = revoke_keys(path, args.user, args.key_id)
    if args.key_id:
        which = f"key {args.key_id}" + (f" of {args.user}" if args.user else "")
    else:
        which = f"keys of {args.user}"
    print(f"revoked {removed} key(s): {which}")
    return 0 if removed else 1
