"""`DirectAPICluster`: the seed system's base for clusters whose status is a `status_url`.

The seed's cluster adaptors (its Metis cluster, say) subclass it and write `get_jobs`
as: fetch `self.config.status_url` with `self.httpx_client.get(...)`, which answers the
parsed JSON, then build `Jobs` from it.  Here `httpx_client` keeps that shape but does
its IO through the transport the gateway binds, with the config's timeout and TLS
options, so such a subclass runs unchanged over any transport and event loop.  The base
`get_jobs` does what the seed's does: the status page already is a `Jobs` document.

Config, as the seed's: `status_url`, `api_request_timeout` (seconds, default 10), and
the TLS options of `adaptors._tls.TLSConfig`.  Failures are the transport's errors
(`TransportTimeout`, `ConnectError`, ...) or `StatusError` for an answer that is not a
2xx JSON document; a subclass that lets them escape `get_jobs` gets the gateway's 502.
No message here holds the status URL: messages reach clients and logs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ConfigDict, Field, ValidationError, field_validator

from adaptors._timeouts import TimeoutConfig
from adaptors._tls import TLSConfig
from adaptors.clusters.cluster import BaseCluster, GetJobsResponse
from transports import (
    BackendRequest,
    ConnectError,
    Timeout,
    TransportError,
    TransportTimeout,
)

__all__ = ["DirectAPICluster", "DirectAPIClusterConfig", "StatusClient", "StatusError"]


class DirectAPIClusterConfig(TLSConfig, TimeoutConfig):
    """The `config` of a Direct API cluster entry in `clusters.json`; the time-limit keys
    (`TimeoutConfig`) are defaults for the endpoints on this cluster."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status_url: str
    api_request_timeout: float = Field(default=10, gt=0)

    @field_validator("status_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value


class StatusError(TransportError):
    """The status server answered, but not with a 2xx JSON document."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class StatusClient:
    """The seed's `AsyncHttpClient` shape (`get`, `post` answering parsed JSON), over the
    cluster's bound transport."""

    def __init__(self, cluster: DirectAPICluster) -> None:
        self._cluster = cluster

    async def get(self, url: str) -> Any:
        return await self._call("GET", url, None)

    async def post(self, url: str, data: Any = None) -> Any:
        return await self._call("POST", url, data)

    async def _call(self, method: str, url: str, data: Any) -> Any:
        config = self._cluster.config
        seconds = config.api_request_timeout
        headers = [("accept", "application/json")]
        body = b""
        if method == "POST":
            headers.append(("content-type", "application/json"))
            body = json.dumps(data).encode()
        response = await self._cluster.transport.send(
            BackendRequest(
                method=method,
                url=url,
                headers=headers,
                body=body,
                timeout=Timeout(connect=seconds, read=seconds, total=seconds),
                tls=config.tls_options,
            )
        )
        if not 200 <= response.status < 300:
            raise StatusError(
                f"the status server answered HTTP {response.status}",
                status_code=response.status,
            )
        try:
            return json.loads(response.body)
        except (ValueError, RecursionError):
            raise StatusError("the status server's answer is not JSON") from None


class DirectAPICluster(BaseCluster):
    """A cluster whose model status is read from `config.status_url`."""

    def __init__(
        self,
        id: str,
        cluster_name: str,
        cluster_adapter: str,
        frameworks: str | Iterable[str] | None,
        openai_endpoints: str | Iterable[str] | None,
        allowed_globus_groups: str | Iterable[str] | None = None,
        allowed_domains: str | Iterable[str] | None = None,
        config: Mapping[str, Any] | DirectAPIClusterConfig | None = None,
    ) -> None:
        # The seed's later signature puts `config` sixth; a subclass passing it there
        # positionally still means the config.
        if isinstance(allowed_globus_groups, Mapping | DirectAPIClusterConfig) and config is None:
            config, allowed_globus_groups = allowed_globus_groups, None
        self._config = (
            config
            if isinstance(config, DirectAPIClusterConfig)
            else DirectAPIClusterConfig.model_validate(dict(config or {}))
        )
        self._httpx_client = StatusClient(self)
        super().__init__(
            id,
            cluster_name,
            cluster_adapter,
            frameworks,
            openai_endpoints,
            allowed_globus_groups,
            allowed_domains,
        )

    @property
    def config(self) -> DirectAPIClusterConfig:
        return self._config

    @property
    def httpx_client(self) -> StatusClient:
        """The seed's name for its HTTP client; here it speaks through the transport."""
        return self._httpx_client

    async def get_status(self) -> Any:
        """The status page, parsed; subclasses may reshape it (the seed's hook)."""
        return await self.httpx_client.get(self.config.status_url)

    def _unavailable(self, why: str, code: int) -> GetJobsResponse:
        return GetJobsResponse(error_message=f"Cluster {self.cluster_name}: {why}", error_code=code)

    async def get_jobs(self) -> GetJobsResponse:
        """The status page as `Jobs`, as the seed's base class reads it."""
        seconds = self.config.api_request_timeout
        try:
            status = await self.get_status()
        except TransportTimeout:
            return self._unavailable(f"the status server did not answer within {seconds:g}s", 504)
        except ConnectError:
            return self._unavailable("the status server is unreachable", 503)
        except StatusError as exc:
            return self._unavailable(str(exc), 502)
        except TransportError as exc:
            return self._unavailable(f"the status server failed ({type(exc).__name__})", 502)
        try:
            return GetJobsResponse(jobs=status)
        except ValidationError:
            return self._unavailable("the status server's answer is not a Jobs document", 502)
