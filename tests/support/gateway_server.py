"""A real gateway for end-to-end tests: fixtures written to disk, a tokens file, the
Quart app under a real Hypercorn server on a free port."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from core import QuotaPolicy
from frontends.assembly import build_gateway
from frontends.endpoint_health import HealthPolicy
from frontends.identity import IdentityProvider, StaticKeys
from frontends.quota import QuotaCounters
from frontends.web import create_app
from tests.support.servers import serve_app
from transports import Transport
from transports.httpx_transport import HttpxTransport

REPO_FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"

ALICE = "igw-test-alice-0123456789abcdef"
BOB = "igw-test-bob-0123456789abcdef01"
TOKENS = [
    {"token": ALICE, "username": "alice@example.org", "groups": ["g-physics"]},
    {"token": BOB, "username": "bob@elsewhere.net", "groups": []},
]


def hashed_entry(token: str, username: str, groups: Sequence[str] = ()) -> dict[str, Any]:
    """A tokens-file entry for a known test key: only its salted hash is written."""
    salt = hashlib.sha256(b"test-salt:" + token.encode()).digest()[:16]
    return {
        "id": "k-" + hashlib.sha256(token.encode()).hexdigest()[:12],
        "username": username,
        "groups": list(groups),
        "salt": salt.hex(),
        "sha256": hashlib.sha256(salt + token.encode()).hexdigest(),
    }


def write_tokens(folder: Path, entries: Sequence[Mapping[str, Any]] = TOKENS) -> Path:
    """A tokens file holding the salted hashes of these {token, username, groups}."""
    path = folder / "tokens.json"
    keys = [hashed_entry(e["token"], e["username"], e.get("groups", ())) for e in entries]
    path.write_text(json.dumps({"keys": keys}))
    return path


def write_fixtures(
    folder: Path,
    clusters: Sequence[Mapping[str, Any]],
    endpoints: Sequence[Mapping[str, Any]],
) -> Path:
    """Fixture files in the seed's Django format, from the `fields` of each entry."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, kind, entries in (
        ("clusters.json", "resource_server_async.cluster", clusters),
        ("endpoints.json", "resource_server_async.endpoint", endpoints),
    ):
        rows = [{"model": kind, "pk": i, "fields": dict(f)} for i, f in enumerate(entries, 1)]
        (folder / name).write_text(json.dumps(rows, indent=2))
    return folder


@contextmanager
def running_gateway(
    fixtures: Path,
    tokens_file: Path | None = None,
    *,
    identity: IdentityProvider | None = None,
    transport: Transport | None = None,
    quota: QuotaCounters | None = None,
    quota_policy: QuotaPolicy | None = None,
    health: HealthPolicy | None = None,
) -> Iterator[str]:
    """The base URL of a gateway serving these fixtures through a real server; the
    identity provider is static keys from `tokens_file` unless one is given, the
    transport httpx unless one is given; quotas only with `quota` counters (which the
    gateway closes when the server stops)."""
    if identity is None:
        assert tokens_file is not None
        identity = StaticKeys.from_file(tokens_file)
    gateway = build_gateway(
        fixtures,
        identity=identity,
        transport=transport or HttpxTransport(),
        quota=quota,
        quota_policy=quota_policy,
        health=health,
    )
    with serve_app(create_app(gateway)) as url:
        yield url
