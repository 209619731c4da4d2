"""schemathesis against the live gateway: every operation of `/openapi.json`, generated
from its own schemas (valid and invalid alike), never answers with a 5xx and always
answers as the document says (status, media type, headers, body schema).

The gateway is the real `serve` on the embedded demo catalog, as a user starts it, in a
subprocess on a free port (its request log, files and batches on SQLite in a temporary
state folder).  Derandomised and bounded: the same cases every run, within a minute or
two on a busy two-core machine.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES_PER_OPERATION = 25

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


class LiveGateway:
    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token


@pytest.fixture(scope="module")
def live_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    state = tmp_path_factory.mktemp("openapi-live")
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERENCE_GATEWAY_")}
    env.update(INFERENCE_GATEWAY_STATE_DIR=str(state / "state"), PYTHONPATH=str(ROOT))
    process = subprocess.Popen(
        [sys.executable, "-m", "frontends.cli", "serve", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = [process.stdout.readline() for _ in range(4)]
        url = re.search(r"on (http://\S+)/v1", banner[0])
        token = re.search(r"your token \(new.*\): (\S+)", banner[3])
        assert url and token, banner
        yield LiveGateway(url[1], token[1])
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)
    assert process.returncode == 0


@pytest.fixture(scope="module")
def live_schema(live_gateway: LiveGateway) -> Any:
    """The document as the live server serves it."""
    # Unknown query parameters are ignored, as most HTTP APIs do (not refused); the key
    # is the caller's own, sent on every case, not a parameter to break.
    config = schemathesis.Config.from_dict(
        {"generation": {"allow-extra-parameters": False, "with-security-parameters": False}}
    )
    return schemathesis.openapi.from_url(f"{live_gateway.url}/openapi.json", config=config)


def fuzz(
    operation: Any, mode: GenerationMode, headers: dict[str, str], statuses: Counter[int]
) -> int:
    """Run one operation's cases in one mode; the number of cases sent."""
    sent = 0

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],  # no shrinking: the first case is reported
    )
    def run(case: Any) -> None:
        nonlocal sent
        sent += 1
        response = case.call_and_validate(headers=headers, checks=CHECKS, timeout=30)
        statuses[response.status_code] += 1

    try:
        run()
    except Unsatisfiable:  # nothing to break: no parameters and no body (negative mode)
        assert mode is GenerationMode.NEGATIVE and sent == 0, operation.label
    return sent


def test_every_operation_answers_as_documented(live_schema: Any, live_gateway: LiveGateway) -> None:
    operations = [result.ok() for result in live_schema.get_all_operations()]
    headers = {"Authorization": f"Bearer {live_gateway.token}"}
    sent = 0
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                sent += fuzz(operation, mode, headers, statuses)
            except (AssertionError, FailureGroup) as failure:  # all run, all are reported
                failures.append(f"{operation.label} ({mode.value}): {failure}")
    print(f"schemathesis: {len(operations)} operations, {sent} cases, statuses {dict(statuses)}")
    assert len(operations) >= 20
    assert not failures, "\n\n".join(failures)
