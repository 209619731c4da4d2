"""Where each backend time limit comes from, and how each failure reaches client and log.

* Limits: an endpoint's own key, else its `api_request_timeout` (first byte and a whole
  answer only), else its cluster's key, else the settings; a stream never has a total.
* Failures: each transport error has its status and OpenAI code (`adaptors._failures`),
  the Direct API adaptor returns them, the core answers with them (saturation as a 503
  with Retry-After that blames no backend) and the log records the code, whether the
  call failed before its answer or a stream broke mid-way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from adaptors._failures import failure_of
from adaptors._timeouts import DEFAULT_TIMEOUTS, endpoint_timeout
from adaptors.clusters.openai_compatible import OpenAICompatibleClusterConfig
from adaptors.endpoints.direct_api import DirectAPIEndpoint, DirectAPIEndpointConfig
from core import (
    AdaptorFailed,
    AdaptorReturned,
    ChunkReceived,
    ConfigurationError,
    IdentityResolved,
    Respond,
    StreamOpened,
)
from frontends.assembly import build_gateway
from frontends.identity import StaticKeys
from frontends.settings import load_settings
from tests.support.gateway_server import write_fixtures
from tests.test_core_request_machine import ALICE, logs, request, run, sse_json
from transports import (
    AnswerTooLarge,
    BackendRequest,
    ConnectError,
    ConnectTimeout,
    FirstByteTimeout,
    FunctionTransport,
    IdleTimeout,
    ProtocolError,
    Saturated,
    Timeout,
    TotalTimeout,
    TransportError,
    TransportTimeout,
)

SETTINGS = Timeout(connect=3, read=30, first_byte=30, idle=40, total=30)


def _config(**extra: Any) -> DirectAPIEndpointConfig:
    return DirectAPIEndpointConfig.model_validate(
        {"api_url": "http://backend.invalid/v1", "api_key_env_name": "NO_KEY", **extra}
    )


def _limits(config: DirectAPIEndpointConfig, *, stream: bool, cluster: Any = None) -> Timeout:
    legacy = (
        config.api_request_timeout if "api_request_timeout" in config.model_fields_set else None
    )
    return endpoint_timeout(
        config, legacy=legacy, cluster_config=cluster, defaults=SETTINGS, stream=stream
    )


@pytest.mark.parametrize(
    ("config", "cluster", "expected"),
    [
        # (endpoint config, cluster config, (connect, first_byte, idle, total)): whole answers
        ({}, None, (3, 30, 40, 30)),
        ({}, {"first_byte_timeout": 7, "total_timeout": 9}, (3, 7, 40, 9)),
        ({"api_request_timeout": 5}, None, (3, 5, 40, 5)),
        ({"api_request_timeout": 2}, None, (2, 2, 40, 2)),  # connect never longer than it
        ({"api_request_timeout": 5}, {"first_byte_timeout": 7}, (3, 5, 40, 5)),
        ({"api_request_timeout": 5, "total_timeout": 60}, None, (3, 5, 40, 60)),
        (
            {"connect_timeout": 1, "first_byte_timeout": 2, "stream_idle_timeout": 3},
            {"stream_idle_timeout": 9},
            (1, 2, 3, 30),
        ),
    ],
)
def test_each_limit_comes_from_the_nearest_source(
    config: dict[str, Any], cluster: dict[str, Any] | None, expected: tuple[float, ...]
) -> None:
    cluster_config = (
        None
        if cluster is None
        else OpenAICompatibleClusterConfig(api_url="http://cluster.invalid/v1", **cluster)
    )
    whole = _limits(_config(**config), stream=False, cluster=cluster_config)
    assert (whole.connect, whole.first_byte, whole.idle, whole.total) == expected
    assert whole.read == expected[3]  # a whole answer's reads: bounded by its total alone
    streamed = _limits(_config(**config), stream=True, cluster=cluster_config)
    assert (streamed.connect, streamed.first_byte, streamed.idle) == expected[:3]
    assert streamed.total is None  # a stream that keeps sending is never cut


def test_the_built_in_defaults_keep_the_seeds_two_minutes() -> None:
    assert (DEFAULT_TIMEOUTS.first_byte, DEFAULT_TIMEOUTS.total) == (120, 120)
    endpoint = DirectAPIEndpoint("1", "e", "c", "api", "m", "direct", config=_config())
    assert endpoint.timeout(stream=True).total is None
    assert endpoint.timeout(stream=False).first_byte == 120


def test_the_settings_reach_an_endpoint_through_bind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFERENCE_GATEWAY_FIRST_BYTE_TIMEOUT", "4.5")
    monkeypatch.setenv("INFERENCE_GATEWAY_STREAM_IDLE_TIMEOUT", "6")
    settings = load_settings()
    gateway = build_gateway(
        _fixtures(tmp_path, {}),
        identity=StaticKeys(),
        transport=FunctionTransport(lambda r: None),  # type: ignore[arg-type,return-value]
        timeouts=settings.backend_timeouts,
    )
    (endpoint,) = gateway._endpoints.values()
    assert isinstance(endpoint, DirectAPIEndpoint)
    limits = endpoint.timeout(stream=True)
    assert (limits.first_byte, limits.idle, limits.total) == (4.5, 6, None)


def _fixtures(folder: Path, endpoint_config: dict[str, Any]) -> Path:
    cluster = {
        "cluster_name": "c",
        "frameworks": ["api"],
        "openai_endpoints": ["chat/completions"],
        "cluster_adapter": "adaptors.clusters.openai_compatible.OpenAICompatibleCluster",
        "config": {"api_url": "http://cluster.invalid/v1"},
    }
    endpoint = {
        "endpoint_slug": "e",
        "cluster": "c",
        "framework": "api",
        "model": "m",
        "endpoint_adapter": "adaptors.endpoints.direct_api.DirectAPIEndpoint",
        "config": {
            "api_url": "http://backend.invalid/v1",
            "api_key_env_name": "NO_KEY",
            **endpoint_config,
        },
    }
    return write_fixtures(folder / "fixtures", [cluster], [endpoint])


def test_a_limit_that_is_not_positive_stops_start_naming_entry_and_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as caught:
        build_gateway(
            _fixtures(tmp_path, {"stream_idle_timeout": 0}),
            identity=StaticKeys(),
            transport=FunctionTransport(lambda r: None),  # type: ignore[arg-type,return-value]
        )
    assert "endpoints.json" in str(caught.value) and "stream_idle_timeout" in str(caught.value)


def test_settings_refuse_a_backend_limit_above_the_global_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INFERENCE_GATEWAY_MAX_CONNECTIONS", "10")
    monkeypatch.setenv("INFERENCE_GATEWAY_MAX_CONNECTIONS_PER_BACKEND", "20")
    with pytest.raises(ConfigurationError, match="max_connections_per_backend"):
        load_settings()


def test_settings_give_the_transport_its_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERENCE_GATEWAY_MAX_CONNECTIONS_PER_BACKEND", "7")
    monkeypatch.setenv("INFERENCE_GATEWAY_POOL_WAIT_TIMEOUT", "0.25")
    settings = load_settings()
    limits = settings.connection_limits
    assert (limits.per_backend, limits.total, limits.pool_wait) == (7, 1000, 0.25)
    assert settings.max_answer_bytes == 16 * 1024 * 1024


# -- failures -------------------------------------------------------------------------------

LIMITS = Timeout(connect=1.5, read=8, first_byte=2, idle=3, total=8)


@pytest.mark.parametrize(
    ("error", "status", "code", "phrase"),
    [
        (ConnectTimeout("x"), 504, "backend_connect_timeout", "after 1.5s connecting"),
        (
            FirstByteTimeout("x"),
            504,
            "backend_first_byte_timeout",
            "after 2s waiting for the first",
        ),
        (IdleTimeout("x"), 504, "backend_stream_idle_timeout", "silent for more than 3s"),
        (TotalTimeout("x"), 504, "backend_timeout", "after 8s before finishing"),
        (TransportTimeout("x"), 504, "backend_timeout", "total_timeout"),
        (AnswerTooLarge("x", limit=1024), 502, "backend_answer_too_large", "limit of 1024 bytes"),
        (Saturated("every connection ... in use for 5s"), 503, "gateway_saturated", "in use"),
        (ConnectError("x"), 502, None, "could not connect"),
        (ProtocolError("x"), 502, None, "ProtocolError"),
        (TransportError("x"), 502, None, "TransportError"),
    ],
)
def test_each_transport_error_has_its_status_and_code(
    error: TransportError, status: int, code: str | None, phrase: str
) -> None:
    failure = failure_of(error, LIMITS)
    assert (failure.status, failure.code) == (status, code)
    assert phrase in failure.message


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.parametrize("stream", [False, True])
async def test_the_direct_api_adaptor_returns_the_code_of_its_failure(stream: bool) -> None:
    def refuse(request: BackendRequest) -> None:
        raise FirstByteTimeout("the backend sent no answer within the first-byte limit")

    endpoint = DirectAPIEndpoint("1", "e", "c", "api", "m", "direct", config=_config())
    endpoint.bind(transport=FunctionTransport(refuse), timeouts=SETTINGS)  # type: ignore[arg-type]
    data = {"model_params": {"model": "m", "messages": []}, "openai_endpoint": "chat/completions"}
    answer: Any
    if stream:
        answer = await endpoint.submit_streaming_task(data, "log-1")
    else:
        answer = await endpoint.submit_task(data)
    assert (answer.error_code, answer.failure_code) == (504, "backend_first_byte_timeout")
    assert "after 30s" in answer.error_message


# -- the core's answer and log ---------------------------------------------------------------


def _answer(effects: list[Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
    (respond,) = [e for e in effects if isinstance(e, Respond)]
    response = respond.response
    return response.status, dict(response.headers), json.loads(response.body)["error"]


def test_a_named_failure_answers_with_its_code_and_the_adaptors_words() -> None:
    _, effects = run(
        request(),
        IdentityResolved(identity=ALICE),
        AdaptorReturned(
            error_code=504,
            error_message="it timed out after 2s waiting for the first byte (first_byte_timeout)",
            failure_code="backend_first_byte_timeout",
        ),
    )
    status, _, error = _answer(effects)
    assert (status, error["code"], error["type"]) == (
        504,
        "backend_first_byte_timeout",
        "api_error",
    )
    assert error["message"].startswith("The backend serving model ")
    assert "after 2s waiting for the first byte" in error["message"]
    assert logs(effects)[0].entry.error_code == "backend_first_byte_timeout"


def test_saturation_is_a_503_with_retry_after_that_blames_no_backend() -> None:
    _, effects = run(
        request(),
        IdentityResolved(identity=ALICE),
        AdaptorFailed(status=503, code="gateway_saturated", detail="Saturated: all in use"),
    )
    status, headers, error = _answer(effects)
    assert (status, error["code"], headers["retry-after"]) == (503, "gateway_saturated", "1")
    assert error["message"].startswith("The gateway is saturated for model ")
    assert "timed out" not in error["message"]
    entry = logs(effects)[0].entry
    assert (entry.status, entry.error_code) == (503, "gateway_saturated")


def test_a_stream_gone_silent_ends_with_its_code_and_is_logged_so() -> None:
    _, effects = run(
        request(stream=True),
        IdentityResolved(identity=ALICE),
        StreamOpened(),
        ChunkReceived(data=b'data: {"id":"c1"}\n\n'),
        AdaptorFailed(status=504, code="backend_stream_idle_timeout", detail="IdleTimeout"),
    )
    tail = [e for e in effects if hasattr(e, "data")][-1].data
    assert sse_json(tail)["error"]["code"] == "backend_stream_idle_timeout"
    entry = logs(effects)[0].entry
    assert (entry.status, entry.error_code) == (504, "backend_stream_idle_timeout")


def test_an_unknown_failure_code_falls_back_to_the_status() -> None:
    _, effects = run(
        request(),
        IdentityResolved(identity=ALICE),
        AdaptorReturned(error_code=504, error_message="slow", failure_code="made_up"),
    )
    status, _, error = _answer(effects)
    assert (status, error["code"]) == (504, "backend_timeout")
    assert "slow" not in error["message"]  # an unnamed failure's words stay in the log
