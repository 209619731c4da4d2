"""Static API keys: the embedded default provider.

The tokens file holds only a salted SHA-256 of each key, never the key:

    {"keys": [{"id": "k-3f9a0c2e1b7d", "username": "ada@example.org", "groups": ["g1"],
               "salt": "<32 hex>", "sha256": "<64 hex>", "created": "2026-01-01T00:00:00Z"}]}

Keys are 256-bit random strings, so a salted SHA-256 is as strong as a slow hash here
and cheap enough to check on every request.  A key presented for the first time is
hashed with every entry's salt and compared with `hmac.compare_digest`, all entries, so
how long a lookup takes says nothing about which entry (or how much of one) matched.
The entry a key matched is then remembered under an unsalted SHA-256 of the key (in
memory only, forgotten when the file is re-read), so the same key later costs one
salted hash and one constant-time comparison with that entry, however many keys the
file holds; a key that matched nothing is not remembered (random keys cannot fill
memory) and is scanned against every entry each time, as before.  The file
is watched (off the event loop, at most once a second) and re-read when it changes, so
`inference-gateway keys revoke` takes effect within a second, without a restart.

The local user's own key (made on first start) is kept in a separate 0600 file in the
state dir, like an SSH private key; `inference-gateway token` prints it.
"""

from __future__ import annotations

import datetime
import getpass
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio
import anyio.to_thread
import attrs
import pydantic

from core import ConfigurationError, Identity
from frontends.identity._base import acceptable_username

__all__ = [
    "StaticKeys",
    "add_key",
    "ensure_tokens_file",
    "first_token",
    "holds_key",
    "local_key_path",
    "local_username",
    "read_entries",
    "revoke_keys",
]

KEY_PREFIX = "igw-"
# How stale the keys in memory may get: a revoked key works at most this long (seconds).
RECHECK_EVERY = 1.0


class _KeyEntry(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True)
    id: str = pydantic.Field(min_length=1)
    username: str = pydantic.Field(min_length=1)
    groups: list[str] = []
    salt: str = pydantic.Field(pattern=r"^[0-9a-f]{32}$")
    sha256: str = pydantic.Field(pattern=r"^[0-9a-f]{64}$")
    created: str = ""

    @pydantic.field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        if not acceptable_username(value):
            raise ValueError("username may not contain '<', '>', whitespace or two '@'")
        return value


class _KeysFile(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True)
    keys: list[_KeyEntry]


def _hash(salt: bytes, key: str) -> bytes:
    return hashlib.sha256(salt + key.encode()).digest()


_Entry = tuple[bytes, bytes, Identity]  # salt, salted digest, who the key is


@attrs.frozen
class _Loaded:
    entries: tuple[_Entry, ...]
    stamp: tuple[int, int, int] | None
    # The entry each key seen so far matched, by the key's unsalted SHA-256: these
    # entries' own, so a re-read file (a new `_Loaded`) starts with none remembered.
    matched: dict[bytes, _Entry] = attrs.field(factory=dict, eq=False, repr=False)


def read_entries(path: Path) -> list[_KeyEntry]:
    """The entries of a tokens file; ConfigurationError names file, entry and field."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read tokens file: {exc.strerror}", file=str(path)
        ) from None
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ConfigurationError(f"not JSON: {exc}", file=str(path)) from None
    if isinstance(raw, dict) and "tokens" in raw:
        raise ConfigurationError(
            "this tokens file holds plain tokens; it must hold only salted hashes. "
            "Create keys with `inference-gateway keys add USER` and remove the file's "
            "'tokens' list",
            file=str(path),
            field="tokens",
        )
    try:
        return _KeysFile.model_validate(raw).keys
    except pydantic.ValidationError as exc:
        error = exc.errors()[0]
        loc = [str(p) for p in error["loc"]]
        entry = loc[1] if len(loc) > 1 and loc[0] == "keys" else None
        field = ".".join(loc[2:]) if entry is not None else ".".join(loc)
        raise ConfigurationError(
            str(error["msg"]), file=str(path), entry=entry, field=field or None
        ) from None


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What tells a changed file: writes go through a rename, so a new inode each time."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


def _load(path: Path) -> _Loaded:
    stamp = _stamp(path)
    entries = tuple(
        (
            bytes.fromhex(e.salt),
            bytes.fromhex(e.sha256),
            Identity(username=e.username, groups=e.groups, provider="static", subject=e.id),
        )
        for e in read_entries(path)
    )
    return _Loaded(entries=entries, stamp=stamp)


class StaticKeys:
    """Keys from a tokens file of salted hashes (or, for tests and `check`, from memory).

    The file is watched off the request path: a request finds the keys already in memory,
    and at most once per `recheck_every` seconds (by `clock`) one request has the file's
    stamp compared, in a worker thread, so the event loop never waits on the disk.  A
    changed file is re-read there too; `refresh()` re-checks at once.
    """

    name = "static"

    def __init__(
        self,
        path: Path | None = None,
        *,
        keys: Sequence[_KeyEntry] = (),
        recheck_every: float = RECHECK_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._recheck_every = recheck_every
        self._clock = clock
        self._next_check = clock() + recheck_every
        self._checking = False
        if path is not None:
            self._loaded = _load(path)
        else:
            self._loaded = _Loaded(
                entries=tuple(
                    (
                        bytes.fromhex(e.salt),
                        bytes.fromhex(e.sha256),
                        Identity(username=e.username, groups=e.groups, subject=e.id),
                    )
                    for e in keys
                ),
                stamp=None,
            )

    @classmethod
    def from_file(
        cls,
        path: Path,
        *,
        recheck_every: float = RECHECK_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> StaticKeys:
        return cls(path, recheck_every=recheck_every, clock=clock)

    def _reread(self, path: Path, loaded: _Loaded) -> _Loaded:
        """The keys now in the file (blocking: runs in a worker thread)."""
        if _stamp(path) == loaded.stamp:
            return loaded
        try:
            return _load(path)
        except ConfigurationError:
            # A half-written or broken file: keep the last good keys, but a file
            # that is gone revokes everything.
            return loaded if path.exists() else _Loaded(entries=(), stamp=None)

    async def refresh(self) -> None:
        """Re-check the tokens file now, off the event loop."""
        if self._path is None or self._checking:
            return
        self._checking = True
        try:
            self._next_check = self._clock() + self._recheck_every
            self._loaded = await anyio.to_thread.run_sync(self._reread, self._path, self._loaded)
        finally:
            self._checking = False

    async def resolve(self, credentials: str) -> Identity | None:
        if self._clock() >= self._next_check:
            await self.refresh()
        loaded = self._loaded
        seen = hashlib.sha256(credentials.encode()).digest()
        known = loaded.matched.get(seen)
        if known is not None:
            # The entry this key matched before, checked again as the scan checks it
            # (its salted hash, compared in constant time): one hash, not one per entry.
            salt, digest, identity = known
            return identity if hmac.compare_digest(_hash(salt, credentials), digest) else None
        found: _Entry | None = None
        for entry in loaded.entries:
            # Every entry, every time, in constant time: no early exit to time.
            if hmac.compare_digest(_hash(entry[0], credentials), entry[1]) and found is None:
                found = entry
        if found is None:
            return None
        loaded.matched[seen] = found
        return found[2]


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def _entry_for(key: str, username: str, groups: Sequence[str]) -> dict[str, object]:
    salt = secrets.token_bytes(16)
    return {
        "id": "k-" + secrets.token_hex(6),
        "username": username,
        "groups": list(groups),
        "salt": salt.hex(),
        "sha256": _hash(salt, key).hex(),
        "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _write_private(path: Path, content: str) -> None:
    """Write atomically (temp file + rename) with mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(content)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _create_private(path: Path, content: str) -> bool:
    """Create `path` (mode 0600) whole, only if nothing is there: False if something is.
    The content is written to a temporary file and linked in place, so a reader never
    sees a partial file and a file made meanwhile by someone else is never replaced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(content)
        try:
            os.link(temp, path)
        except FileExistsError:
            return False
        return True
    finally:
        Path(temp).unlink(missing_ok=True)


def _write_entries(path: Path, entries: Sequence[object]) -> None:
    _write_private(path, json.dumps({"keys": list(entries)}, indent=2) + "\n")


def add_key(path: Path, username: str, groups: Sequence[str] = ()) -> tuple[str, str]:
    """Add a new key for `username` to the tokens file; returns (key id, the key).

    The key itself is returned once and stored nowhere."""
    if not acceptable_username(username):
        raise ConfigurationError(
            "username may not contain '<', '>', whitespace or two '@'",
            file=str(path),
            field="username",
        )
    existing = [e.model_dump() for e in read_entries(path)] if path.exists() else []
    key = new_key()
    entry = _entry_for(key, username, groups)
    _write_entries(path, [*existing, entry])
    return str(entry["id"]), key


def revoke_keys(path: Path, username: str | None, key_id: str | None = None) -> int:
    """Remove the user's keys, or the one with `key_id` (of that user, if one is named);
    returns how many went."""
    if username is None and key_id is None:
        raise ValueError("name a user, a key id or both")
    entries = read_entries(path)
    kept = [e for e in entries if not (username in (None, e.username) and key_id in (None, e.id))]
    _write_entries(path, [e.model_dump() for e in kept])
    return len(entries) - len(kept)


def local_username() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "user"
    return f"{user}@localhost"


def local_key_path(tokens_path: Path) -> Path:
    """Where the local user's own copy of their first key lives, beside the tokens file."""
    return tokens_path.with_name("local-key")


def ensure_tokens_file(path: Path, key_path: Path | None = None) -> str | None:
    """On a first start, make the tokens file with a key for the local user.

    Only when no tokens file exists: it is created holding the new key's salted hash,
    and the key itself goes to `key_path` (default `local_key_path(path)`), mode 0600,
    for `inference-gateway token`.  Returns the new key (to show once in the start-up
    banner).  A tokens file that exists is the operator's (it may be kept by
    configuration management, shared by replicas, or read-only) and is never rewritten
    here: returns None, and the banner says how to add a key (`keys add`).
    """
    key_path = key_path or local_key_path(path)
    if path.exists():
        return None
    key = new_key()
    entries = [_entry_for(key, local_username(), [])]
    if not _create_private(path, json.dumps({"keys": entries}, indent=2) + "\n"):
        return None  # another process made it first: theirs stands
    _write_private(key_path, key + "\n")
    return key


def holds_key(path: Path, key: str) -> bool:
    """Whether the tokens file vouches for `key` (False for a missing or broken file)."""
    try:
        entries = read_entries(path)
    except ConfigurationError:
        return False
    return any(
        hmac.compare_digest(_hash(bytes.fromhex(e.salt), key), bytes.fromhex(e.sha256))
        for e in entries
    )


def first_token(path: Path, key_path: Path | None = None) -> str | None:
    """The local user's key, for `inference-gateway token` on one's own machine."""
    try:
        key = (key_path or local_key_path(path)).read_text().strip()
    except OSError:
        return None
    return key or None
