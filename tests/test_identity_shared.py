"""Replicas share Globus's answers through Redis: a token is introspected once for all
of them, a refusal is shared too, and the cache never holds a token."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import redis

from core import Identity, Rule
from frontends.identity import AccessRefused, CredentialsRejected
from frontends.identity._shared import decode_answer, encode_answer
from tests.support.fake_globus import CLIENT_ID, CLIENT_SECRET, GlobusUser, running_fake_globus
from tests.support.fake_openai import running_fake_openai
from tests.support.quota import REDIS_URL, limited_fixtures, redis_prefix, serve_process

pytestmark = pytest.mark.e2e
TOKEN = "globus-token-shared-by-replicas-0001"
CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hello"}]}


@pytest.mark.parametrize(
    "answer",
    [
        Identity(username="ada@anl.gov", groups={"g1", "g2"}, provider="globus", subject="s"),
        Identity(username="bo@anl.gov", provider="globus", expires_at=4_000_000_000.0),
        CredentialsRejected("inactive"),
        AccessRefused(Rule.DOMAIN),
    ],
    ids=["identity", "expiring", "rejected", "refused"],
)
def test_an_answer_reads_back_as_written(answer: object) -> None:
    again = decode_answer(encode_answer(answer))  # type: ignore[arg-type]
    if isinstance(answer, Identity):
        assert again == answer
    else:
        assert type(again) is type(answer) and str(again) == str(answer)


def test_two_replicas_introspect_one_token_once(tmp_path: Path) -> None:
    with (
        running_fake_globus() as (globus, globus_url),
        running_fake_openai(models=["gpt-test"]) as (_, backend_url),
        redis_prefix() as prefix,
        ExitStack() as servers,
    ):
        globus.add(GlobusUser(token=TOKEN, username="ada@anl.gov"))
        fixtures = limited_fixtures(tmp_path / "fixtures", backend_url, ["gpt-test"])
        shared = {
            "redis_url": REDIS_URL,
            "redis_key_prefix": prefix,
            "identity_providers": "globus",
            "globus_client_id": CLIENT_ID,
            "globus_client_secret": CLIENT_SECRET,
            "globus_auth_base_url": globus_url,
            "globus_groups_base_url": globus_url,
        }
        urls = [
            servers.enter_context(serve_process(tmp_path, fixtures, loop, **shared))
            for loop in ("asyncio", "trio")
        ]

        def chat(url: str, token: str = TOKEN) -> int:
            return httpx.post(
                f"{url}/v1/chat/completions",
                json=CHAT,
                headers={"Authorization": f"Bearer {token}"},
                timeout=60,
            ).status_code

        # Twenty requests at once, half to each replica, none of them known yet.
        with ThreadPoolExecutor(20) as pool:
            statuses = list(pool.map(chat, urls * 10))
        assert statuses == [200] * 20
        assert globus.calls["introspect"] == 1
        # A refused token is shared as well: 401 from both, Globus asked once.
        assert [chat(url, "globus-token-never-issued-00001") for url in urls] == [401, 401]
        assert globus.calls["introspect"] == 2
        stored = redis.Redis.from_url(REDIS_URL).keys(f"{prefix}identity:*")
    assert stored and all(TOKEN.encode() not in key for key in stored)
