"""Static API keys: a tokens file of salted hashes, the `keys` command, the chain."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import anyio
import pytest

from core import ConfigurationError, Identity, Rule
from frontends.identity import (
    AccessRefused,
    ChainProvider,
    CredentialsRejected,
    ProviderUnavailable,
    StaticKeys,
    acceptable_username,
    add_key,
    read_entries,
    revoke_keys,
)
from frontends.identity import _static as static_module
from tests.support.clock import ManualClock
from tests.support.gateway_server import write_tokens

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "frontends.cli"]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERENCE_GATEWAY_")}
    env.update(INFERENCE_GATEWAY_STATE_DIR=str(tmp_path / "state"), PYTHONPATH=str(ROOT))
    return env


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=_env(tmp_path), capture_output=True, text=True, timeout=60
    )


@pytest.mark.anyio
async def test_added_keys_resolve_and_the_file_holds_no_key(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    _, key = add_key(path, "ada@example.org", ["g1"])
    _, other = add_key(path, "bob@example.org")
    assert key not in path.read_text() and other not in path.read_text()
    assert (path.stat().st_mode & 0o077) == 0
    keys = StaticKeys.from_file(path)
    identity = await keys.resolve(key)
    assert identity is not None
    assert (identity.username, identity.groups) == ("ada@example.org", {"g1"})
    assert await keys.resolve(key[:-1]) is None
    assert await keys.resolve(key + "x") is None
    assert await keys.resolve("") is None


def test_the_same_key_hashes_differently_in_each_entry(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    write_tokens(tmp_path, [{"token": "igw-same-key-000000000", "username": "a@x.org"}])
    first = read_entries(path)[0]
    add_key(path, "b@x.org")
    add_key(path, "c@x.org")
    salts = {e.salt for e in read_entries(path)}
    assert len(salts) == 3 and first.salt in salts


@pytest.mark.anyio
async def test_revocation_takes_effect_without_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    _, key = add_key(path, "ada@example.org")
    _, kept = add_key(path, "bob@example.org")
    clock = ManualClock()
    keys = StaticKeys.from_file(path, recheck_every=1.0, clock=clock)
    assert await keys.resolve(key) is not None
    assert revoke_keys(path, "ada@example.org") == 1
    clock.advance(1.0)
    assert await keys.resolve(key) is None
    assert await keys.resolve(kept) is not None


@pytest.mark.anyio
async def test_a_key_seen_before_costs_one_salted_hash_however_many_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tokens.json"
    keys_added = [add_key(path, f"user{i}@example.org")[1] for i in range(20)]
    clock = ManualClock()
    keys = StaticKeys.from_file(path, recheck_every=1.0, clock=clock)
    hashed: list[bytes] = []
    salted = static_module._hash

    def counted(salt: bytes, key: str) -> bytes:
        hashed.append(salt)
        return salted(salt, key)

    monkeypatch.setattr(static_module, "_hash", counted)
    first = await keys.resolve(keys_added[7])
    assert first is not None and first.username == "user7@example.org"
    assert len(hashed) == 20  # the first time: every entry, in constant time
    hashed.clear()
    assert await keys.resolve(keys_added[7]) == first
    assert len(hashed) == 1  # then the entry it matched, alone
    hashed.clear()
    assert await keys.resolve("igw-never-issued") is None
    assert await keys.resolve("igw-never-issued") is None
    assert len(hashed) == 40  # a key that matched nothing is scanned every time
    # A re-read file forgets what was matched: a revoked key stops working.
    assert revoke_keys(path, "user7@example.org") == 1
    clock.advance(1.0)
    assert await keys.resolve(keys_added[7]) is None
    assert await keys.resolve(keys_added[8]) is not None


@pytest.fixture(params=["asyncio", "trio"])
def loop(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_the_tokens_file_is_watched_off_the_loop_not_on_every_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loop: str
) -> None:
    path = tmp_path / "tokens.json"
    _, key = add_key(path, "ada@example.org")
    clock = ManualClock()
    keys = StaticKeys.from_file(path, recheck_every=1.0, clock=clock)
    looked: list[str] = []
    stamp = static_module._stamp

    def watched_stamp(at: Path) -> tuple[int, int, int] | None:
        looked.append(threading.current_thread().name)
        return stamp(at)

    monkeypatch.setattr(static_module, "_stamp", watched_stamp)

    async def main() -> None:
        loop_thread = threading.current_thread().name
        for _ in range(5):
            assert await keys.resolve(key) is not None
        assert looked == []  # within the interval: the keys in memory, no file access
        path.unlink()  # every key revoked
        clock.advance(0.5)
        assert await keys.resolve(key) is not None
        clock.advance(0.5)
        assert await keys.resolve(key) is None
        assert looked and loop_thread not in looked
        seen = len(looked)
        await keys.refresh()  # an explicit re-check, also off the loop
        assert len(looked) > seen and loop_thread not in looked

    anyio.run(main, backend=loop)


def test_a_file_of_plain_tokens_is_refused_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": [{"token": "x" * 20, "username": "a@b.org"}]}))
    with pytest.raises(ConfigurationError) as raised:
        StaticKeys.from_file(path)
    assert "field 'tokens'" in str(raised.value) and "hash" in str(raised.value)


@pytest.mark.parametrize(
    ("username", "acceptable"),
    [
        ("ada@example.org", True),
        ("ada", True),
        ("a b@example.org", False),
        ("ada@example.org ", False),
        ("<ada>@example.org", False),
        ("a@b@example.org", False),
        ("ada\t@example.org", False),
        ("", False),
    ],
)
def test_usernames_at_the_edge(username: str, acceptable: bool) -> None:
    assert acceptable_username(username) is acceptable


def test_a_bad_username_cannot_be_given_a_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        add_key(tmp_path / "tokens.json", "a@b@example.org")


def test_keys_command_add_list_revoke(tmp_path: Path) -> None:
    added = cli(tmp_path, "keys", "add", "ada@example.org", "--group", "g1", "--group", "g2")
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip()
    assert key.startswith("igw-")
    tokens = (tmp_path / "state" / "tokens.json").read_text()
    assert key not in tokens
    listed = cli(tmp_path, "keys", "list")
    assert "ada@example.org" in listed.stdout and "g1,g2" in listed.stdout
    assert key not in listed.stdout and key not in listed.stderr
    revoked = cli(tmp_path, "keys", "revoke", "ada@example.org")
    assert revoked.returncode == 0 and "revoked 1" in revoked.stdout
    assert "ada@example.org" not in cli(tmp_path, "keys", "list").stdout
    assert cli(tmp_path, "keys", "revoke", "ada@example.org").returncode == 1


def test_keys_revoke_by_id_alone_as_the_readme_says(tmp_path: Path) -> None:
    cli(tmp_path, "keys", "add", "ada@example.org")
    cli(tmp_path, "keys", "add", "ada@example.org")
    first, second = (line.split()[0] for line in cli(tmp_path, "keys", "list").stdout.splitlines())
    revoked = cli(tmp_path, "keys", "revoke", "--id", first)
    assert revoked.returncode == 0, revoked.stderr
    assert f"revoked 1 key(s): key {first}" in revoked.stdout
    listed = cli(tmp_path, "keys", "list").stdout
    assert first not in listed and second in listed
    # An id of another user's key, named with the wrong user, revokes nothing.
    assert cli(tmp_path, "keys", "revoke", "bob@example.org", "--id", second).returncode == 1
    assert second in cli(tmp_path, "keys", "list").stdout
    neither = cli(tmp_path, "keys", "revoke")
    assert neither.returncode == 2 and "name a USER, a key with --id, or both" in neither.stderr


class Answer:
    def __init__(self, outcome: Identity | Exception | None) -> None:
        self.outcome = outcome
        self.asked = 0

    async def resolve(self, credentials: str) -> Identity | None:
        self.asked += 1
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


@pytest.mark.anyio
async def test_the_chain_tries_providers_in_order() -> None:
    ada = Identity(username="ada@example.org")
    first, second = Answer(None), Answer(ada)
    assert await ChainProvider([first, second]).resolve("t") == ada
    late = Answer(Identity(username="late@example.org"))
    assert await ChainProvider([second, late]).resolve("t") == ada
    assert late.asked == 0


@pytest.mark.anyio
async def test_the_chain_prefers_an_identity_then_an_outage_then_a_refusal() -> None:
    ada = Identity(username="ada@example.org")
    down = ProviderUnavailable("down")
    expired = CredentialsRejected("expired")
    assert await ChainProvider([Answer(down), Answer(ada)]).resolve("t") == ada
    with pytest.raises(ProviderUnavailable):
        await ChainProvider([Answer(expired), Answer(down)]).resolve("t")
    with pytest.raises(CredentialsRejected):
        await ChainProvider([Answer(None), Answer(expired)]).resolve("t")
    with pytest.raises(AccessRefused):
        await ChainProvider([Answer(AccessRefused(Rule.GROUP)), Answer(None)]).resolve("t")
    assert await ChainProvider([Answer(None)]).resolve("t") is None
