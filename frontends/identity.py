"""Identity at the edge: turning a bearer token into an `Identity` for the core.

For now one provider, static tokens from a JSON file that the operator owns.  The file
maps each token to a username and groups; lookups go through the token's SHA-256, so
timing cannot tell how much of a guessed token was right.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import attrs
import pydantic

from core import ConfigurationError, Identity

__all__ = ["IdentityProvider", "StaticTokens", "ensure_tokens_file", "local_username"]


class IdentityProvider(Protocol):
    async def resolve(self, credentials: str) -> Identity | None:
        """The identity behind the credentials, or None when they are not valid."""
        ...


class _TokenEntry(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True)
    token: str = pydantic.Field(min_length=16)
    username: str = pydantic.Field(min_length=1)
    groups: list[str] = []


class _TokensFile(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True)
    tokens: list[_TokenEntry]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@attrs.frozen
class StaticTokens:
    _by_digest: Mapping[bytes, Identity]

    @classmethod
    def from_file(cls, path: Path) -> StaticTokens:
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read tokens file: {exc.strerror}", file=str(path)
            ) from None
        try:
            parsed = _TokensFile.model_validate_json(text)
        except pydantic.ValidationError as exc:
            error = exc.errors()[0]
            loc = [str(p) for p in error["loc"]]
            entry = loc[1] if len(loc) > 1 and loc[0] == "tokens" else None
            field = ".".join(loc[2:]) if entry is not None else ".".join(loc)
            raise ConfigurationError(
                str(error["msg"]), file=str(path), entry=entry, field=field or None
            ) from None
        identities = {
            _digest(e.token): Identity(username=e.username, groups=e.groups, provider="static")
            for e in parsed.tokens
        }
        return cls(identities)

    async def resolve(self, credentials: str) -> Identity | None:
        # Keyed by digest: how far a lookup gets says nothing about how close a guess was.
        return self._by_digest.get(_digest(credentials))


def local_username() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "user"
    return f"{user}@localhost"


def ensure_tokens_file(path: Path) -> str | None:
    """Create a tokens file with one random token for the local user if there is none.

    Returns the new token (to show once in the start-up banner), or None if the file
    already existed.
    """
    if path.exists():
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    token = "igw-" + secrets.token_urlsafe(32)
    content = {"tokens": [{"token": token, "username": local_username(), "groups": []}]}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(content, handle, indent=2)
    return token


def first_token(path: Path) -> str | None:
    """The first token of a tokens file, for `inference-gateway token` on one's own machine."""
    try:
        data = json.loads(path.read_text())
        return str(data["tokens"][0]["token"])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None
