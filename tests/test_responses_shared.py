"""Stored Responses API answers found on any replica (`frontends.shared_responses`): two
`serve` processes on one Redis, the official `openai` client making a response on one
and following it up on the other; for its user only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.support.fake_openai import FakeOpenAI, running_fake_openai
from tests.support.gateway_server import ALICE, BOB
from tests.support.quota import REDIS_URL, limited_fixtures, redis_prefix
from tests.support.serve_process import ServeProcess, start_serve

pytestmark = pytest.mark.e2e
MODEL = "gpt-test"


@pytest.fixture
def backend() -> Iterator[tuple[FakeOpenAI, str]]:
    with running_fake_openai(models=[MODEL]) as running:
        yield running


def _client(replica: ServeProcess, key: str = ALICE) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{replica.url}/v1", api_key=key, max_retries=0)


def _two_replicas(tmp_path: Path, fixtures: Path, **settings: str) -> list[ServeProcess]:
    return [
        start_serve(tmp_path / name, fixtures=fixtures, loop=loop, settings=settings)
        for name, loop in (("one", "asyncio"), ("other", "trio"))
    ]


def test_a_response_made_on_one_replica_is_found_and_continued_on_the_other(
    tmp_path: Path, backend: tuple[FakeOpenAI, str]
) -> None:
    fake, backend_url = backend
    fixtures = limited_fixtures(tmp_path / "fixtures", backend_url, [MODEL])
    with redis_prefix() as prefix:
        replicas = _two_replicas(tmp_path, fixtures, redis_url=REDIS_URL, redis_key_prefix=prefix)
        try:
            one, other = (_client(r) for r in replicas)
            made = one.responses.create(model=MODEL, input="Once")
            assert other.responses.retrieve(made.id).id == made.id
            follow_up = other.responses.create(
                model=MODEL, input="Once more", previous_response_id=made.id
            )
            # ...and the follow-up, made on the other, is found back on the first.
            assert one.responses.retrieve(follow_up.id).id == follow_up.id
            with other.responses.create(model=MODEL, input="Streamed", stream=True) as events:
                streamed = [e.response.id for e in events if e.type == "response.completed"]
            assert one.responses.retrieve(streamed[0]).id == streamed[0]

            # For that user only: to another, on either replica, it does not exist.
            for replica in replicas:
                bob = _client(replica, BOB)
                with pytest.raises(openai.NotFoundError):
                    bob.responses.retrieve(made.id)
                with pytest.raises(openai.NotFoundError):
                    bob.responses.create(model=MODEL, input="x", previous_response_id=made.id)

            # Deleted through one, it is gone for the other too.
            one.responses.delete(made.id)
            with pytest.raises(openai.NotFoundError):
                other.responses.retrieve(made.id)
        finally:
            for replica in replicas:
                replica.stop()
    sent = [r.json() for r in fake.requests if r.method == "POST" and r.path == "/v1/responses"]
    assert [b.get("previous_response_id") for b in sent] == [None, made.id, None]


def test_without_redis_each_replica_knows_only_its_own_responses(
    tmp_path: Path, backend: tuple[FakeOpenAI, str]
) -> None:
    _, backend_url = backend
    fixtures = limited_fixtures(tmp_path / "fixtures", backend_url, [MODEL])
    replicas = _two_replicas(tmp_path, fixtures)
    try:
        one, other = (_client(r) for r in replicas)
        made = one.responses.create(model=MODEL, input="Once")
        assert one.responses.retrieve(made.id).id == made.id
        with pytest.raises(openai.NotFoundError):
            other.responses.retrieve(made.id)
    finally:
        for replica in replicas:
            replica.stop()
