"""The replay runner builds its gateway in memory and hands the throwaway key in: no
temporary fixture folder, no write to the process environment."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, MutableMapping
from pathlib import Path

import pytest

from frontends.replay import replay_cassette
from frontends.replay.cases import THROWAWAY_KEY_ENV, synthetic_catalog
from transports.cassette import Exchange, RecordedRequest, RecordedResponse, write_records

BODY = json.dumps({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]})
ANSWER = json.dumps({"id": "c-1", "object": "chat.completion", "choices": []})


class WatchedEnviron(MutableMapping[str, str]):
    """The process environment, with every write noted."""

    def __init__(self, inner: MutableMapping[str, str]) -> None:
        self._inner = inner
        self.writes: list[str] = []

    def __getitem__(self, key: str) -> str:
        return self._inner[key]

    def __setitem__(self, key: str, value: str) -> None:
        self.writes.append(key)
        self._inner[key] = value

    def __delitem__(self, key: str) -> None:
        self.writes.append(key)
        del self._inner[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._inner)

    def __len__(self) -> int:
        return len(self._inner)


def _exchange() -> Exchange:
    return Exchange(
        request=RecordedRequest(
            method="POST",
            url="https://api.example.invalid/v1/chat/completions",
            headers={"content-type": "application/json"},
            body=BODY.encode(),
        ),
        response=RecordedResponse(
            status=200, headers={"content-type": "application/json"}, body=ANSWER.encode()
        ),
    )


def test_a_synthetic_catalog_is_built_from_the_records() -> None:
    catalog = synthetic_catalog([_exchange(), _exchange()])
    assert [c.cluster_name for c in catalog.clusters] == ["replay"]
    [endpoint] = catalog.endpoints
    assert endpoint.model == "gpt-test"
    assert endpoint.config["api_key_env_name"] == THROWAWAY_KEY_ENV


@pytest.mark.anyio
async def test_replay_neither_writes_the_environment_nor_a_fixtures_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cassette = tmp_path / "bare.jsonl"
    write_records(cassette, [_exchange()])
    watched = WatchedEnviron(os.environ)
    monkeypatch.setattr(os, "environ", watched)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "no-temporary-files-here"))
    [result] = await replay_cassette(cassette)
    assert result.passed, result.differences
    assert watched.writes == []
    assert THROWAWAY_KEY_ENV not in os.environ
