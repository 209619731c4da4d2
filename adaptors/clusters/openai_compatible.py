"""`OpenAICompatibleCluster`: model status read from a vLLM/OpenAI-style `GET /models`.

Such a server serves exactly the models it lists, so every listed model is "running"
and nothing is ever queued or stopped.  An unreachable server answers 503 (the cluster
is down), a reply we cannot read answers 502; neither message holds the URL or the key.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ConfigDict, Field, field_validator

from adaptors._timeouts import TimeoutConfig
from adaptors._urls import resolve_url
from adaptors.clusters.cluster import BaseCluster, GetJobsResponse, JobInfo, Jobs
from transports import BackendRequest, ConnectError, Timeout, TransportError, TransportTimeout

__all__ = ["OpenAICompatibleCluster", "OpenAICompatibleClusterConfig"]


class OpenAICompatibleClusterConfig(TimeoutConfig):
    """The `config` of an OpenAI-compatible entry in `clusters.json`; the time-limit keys
    (`TimeoutConfig`) are defaults for the endpoints on this cluster."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_url: str
    api_key_env_name: str | None = None
    api_request_timeout: float = Field(default=10, gt=0)

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value


def _model_ids(body: bytes) -> list[str] | None:
    """The ids of an OpenAI model list, or None if the body is not one."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return None
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        return None
    ids = [item.get("id") if isinstance(item, dict) else None for item in data]
    strings = [i for i in ids if isinstance(i, str) and i]
    return strings if len(strings) == len(ids) else None


class OpenAICompatibleCluster(BaseCluster):
    """A cluster that is one OpenAI-compatible server (vLLM, SGLang, llama.cpp, ...)."""

    def __init__(
        self,
        id: str,
        cluster_name: str,
        cluster_adapter: str,
        frameworks: str | Iterable[str] | None,
        openai_endpoints: str | Iterable[str] | None,
        allowed_globus_groups: str | Iterable[str] | None = None,
        allowed_domains: str | Iterable[str] | None = None,
        config: Mapping[str, Any] | OpenAICompatibleClusterConfig | None = None,
    ) -> None:
        super().__init__(
            id,
            cluster_name,
            cluster_adapter,
            frameworks,
            openai_endpoints,
            allowed_globus_groups,
            allowed_domains,
        )
        self._config = (
            config
            if isinstance(config, OpenAICompatibleClusterConfig)
            else OpenAICompatibleClusterConfig.model_validate(dict(config or {}))
        )

    @property
    def config(self) -> OpenAICompatibleClusterConfig:
        return self._config

    def _unavailable(self, why: str, code: int) -> GetJobsResponse:
        return GetJobsResponse(error_message=f"Cluster {self.cluster_name}: {why}", error_code=code)

    async def get_jobs(self) -> GetJobsResponse:
        seconds = self._config.api_request_timeout
        headers = [("accept", "application/json")]
        key = self.secret(self._config.api_key_env_name)
        if key:
            headers.append(("authorization", f"Bearer {key}"))
        request = BackendRequest(
            method="GET",
            url=resolve_url(self._config.api_url, "models"),
            headers=headers,
            timeout=Timeout(connect=seconds, read=seconds, total=seconds),
        )
        try:
            response = await self.transport.send(request)
        except TransportTimeout:
            return self._unavailable(f"the model server did not answer within {seconds:g}s", 503)
        except ConnectError:
            return self._unavailable("the model server is unreachable", 503)
        except TransportError as exc:
            # The type only: another transport's message might hold the URL.
            return self._unavailable(f"the model server failed ({type(exc).__name__})", 503)
        if response.status == 503:
            return self._unavailable("the model server is unavailable (HTTP 503)", 503)
        if not 200 <= response.status < 300:
            return self._unavailable(
                f"the model server answered the model list with HTTP {response.status}", 502
            )
        ids = _model_ids(response.body)
        if ids is None:
            return self._unavailable("the model server's model list is malformed", 502)
        framework = self.frameworks[0] if self.frameworks else "unknown"
        running = [
            JobInfo(
                Models=model,
                Framework=framework,
                Cluster=self.cluster_name,
                **{"Model Status": "running"},
            )
            for model in ids
        ]
        return GetJobsResponse(
            jobs=Jobs(
                running=running,
                cluster_status={
                    "cluster": self.cluster_name,
                    "total_models": len(running),
                    "live_models": len(running),
                    "stopped_models": 0,
                },
            )
        )
