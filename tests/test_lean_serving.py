"""A served worker carries only what its settings use: a gateway on static keys, quotas
counted in process and an SQLite request log never imports Alembic (nor Mako behind it),
not even on the first start that creates the schema (a child process migrates), nor
redis-py, PyJWT or SQLAlchemy's PostgreSQL dialect; and on
the default transport (h11) not httpx either (nor httpcore, nor the Pygments httpx's own
CLI module pulls in).  Each costs megabytes of RSS in every worker."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from frontends.store import Store, create_store_engine, current_revision, head_revision
from tests.support.gateway_server import write_tokens

ROOT = Path(__file__).resolve().parents[1]

UNUSED = (
    "alembic",
    "mako",
    "redis",
    "jwt",
    "sqlalchemy.dialects.postgresql",
    "httpx",
    "httpcore",
    "pygments",
)

# `serve` as the CLI runs it, up to the point where Hypercorn would start serving: there
# the modules the worker holds are printed, and it returns instead.
SERVE_UNTIL_LISTENING = """
import sys
import frontends.cli as cli

def report(*args, **kwargs):
    unused = sys.argv[1].split(",")
    print(sorted(m for m in sys.modules if any(m == u or m.startswith(u + ".") for u in unused)))

cli._serve_asyncio = report
sys.exit(cli.main(["serve", "--port", "0", "--fixtures", sys.argv[2]]))
"""


def _serve_until_listening(tmp_path: Path, state: Path) -> list[str]:
    """The unused modules a `serve` worker on this state folder holds when it listens."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERENCE_GATEWAY_")}
    env |= {
        "INFERENCE_GATEWAY_STATE_DIR": str(state),
        "INFERENCE_GATEWAY_TOKENS_FILE": str(write_tokens(tmp_path)),
        "INFERENCE_GATEWAY_QUOTAS": "true",
        "INFERENCE_GATEWAY_LOG_LEVEL": "WARNING",
    }
    ran = subprocess.run(
        [sys.executable, "-c", SERVE_UNTIL_LISTENING, ",".join(UNUSED), str(ROOT / "fixtures")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    held: list[str] = ast.literal_eval(ran.stdout.strip().splitlines()[-1])
    return held


@pytest.mark.parametrize(
    "database",
    ["at the newest schema, as every start after the first finds it", "not there yet"],
)
def test_a_worker_on_static_keys_and_sqlite_imports_nothing_it_does_not_use(
    tmp_path: Path, database: str
) -> None:
    state = tmp_path / "state"
    if database.startswith("at the newest"):
        Store.connect(f"sqlite:///{state}/gateway.db").close()
    assert _serve_until_listening(tmp_path, state) == []
    # The schema is there all the same: the first start's child process made it.
    engine = create_store_engine(f"sqlite:///{state}/gateway.db")
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
