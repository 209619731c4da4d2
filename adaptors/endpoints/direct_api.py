"""`DirectAPIEndpoint`: a model behind an existing OpenAI-compatible HTTP API.

The seed's guide configures it with a full route URL and the *name* of the environment
variable holding the key; both stay exactly as the seed wrote them.  The body is sent as
the client wrote it, byte for byte, unless an adaptor changed it (then it is serialised
once), and the answer comes back as the backend's text with its exact bytes kept beside
it: the core checks and relays those, so nothing is re-serialised on the way.

The key is handed in by the gateway at `bind` (read from the environment variable the
config names, once, at start) and lives only in the request headers this adaptor
builds.  No message this module writes holds the key or the backend URL, because
messages reach clients and logs; the backend is named by model and cluster instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from pydantic import ConfigDict, Field, field_validator

from adaptors._failures import failure_of
from adaptors._timeouts import TimeoutConfig, endpoint_timeout
from adaptors._tls import TLSConfig
from adaptors._urls import resolve_url
from adaptors.endpoints._body import body_bytes
from adaptors.endpoints.endpoint import (
    BaseEndpoint,
    StreamingResponse,
    SubmitStreamingTaskResponse,
    SubmitTaskResponse,
    unpack_task_data,
)
from core import is_plain_value
from transports import BackendRequest, BackendStream, Timeout, TLSOptions, TransportError

_Headers = tuple[tuple[str, str], ...]

__all__ = [
    "PASSED_HEADERS",
    "STORED_OPERATIONS",
    "DirectAPIEndpoint",
    "DirectAPIEndpointConfig",
]


class DirectAPIEndpointConfig(TLSConfig, TimeoutConfig):
    """The `config` of a Direct API entry in `endpoints.json` (TLS options: `TLSConfig`;
    time limits: `TimeoutConfig`, with `api_request_timeout` as `adaptors._timeouts`
    says)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_url: str
    api_key_env_name: str
    api_request_timeout: float = Field(default=120, gt=0)

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value


def _refusal(status: int, body: bytes) -> tuple[str, int]:
    """The message and status for a non-2xx answer: the backend's own words."""
    if status >= 400:
        return body.decode("utf-8", "replace"), status
    return f"The backend answered with unexpected HTTP status {status}.", 502


class DirectAPIEndpoint(BaseEndpoint):
    """Forwards OpenAI calls to one backend API with one key."""

    def __init__(
        self,
        id: str,
        endpoint_slug: str,
        cluster: str,
        framework: str,
        model: str,
        endpoint_adapter: str,
        allowed_globus_groups: str | Iterable[str] | None = None,
        allowed_domains: str | Iterable[str] | None = None,
        config: Mapping[str, Any] | DirectAPIEndpointConfig | None = None,
    ) -> None:
        super().__init__(
            id,
            endpoint_slug,
            cluster,
            framework,
            model,
            endpoint_adapter,
            allowed_globus_groups,
            allowed_domains,
        )
        self._config = (
            config
            if isinstance(config, DirectAPIEndpointConfig)
            else DirectAPIEndpointConfig.model_validate(dict(config or {}))
        )
        self._api_url = self._config.api_url
        # timeout(): by stream or not, the limits and the inputs they were worked from.
        self._timeouts: dict[bool, tuple[Timeout, object, Timeout]] = {}
        self._tls: tuple[DirectAPIEndpointConfig, TLSOptions | None] | None = None
        # _fixed(): by (route, accept), the URL and key they were made for, and them.
        self._calls: dict[tuple[str | None, str], tuple[str, str | None, str, _Headers]] = {}

    @property
    def config(self) -> DirectAPIEndpointConfig:
        return self._config

    @property
    def _api_key(self) -> str | None:
        """The key named by `api_key_env_name`, as the gateway handed it in at `bind`."""
        return self.secret(self._config.api_key_env_name)

    @property
    def api_url(self) -> str:
        return self._api_url

    def set_api_url(self, url: str) -> None:
        """Point later calls at another URL (full route URL or base, as in the config)."""
        self._api_url = url

    # -- requests -------------------------------------------------------------------------

    def reads_model_params(self, stream: bool) -> bool:
        """Only a subclass that overrides the method about to run may read the body."""
        name = "submit_streaming_task" if stream else "submit_task"
        return getattr(type(self), name) is not getattr(DirectAPIEndpoint, name)

    def timeout(self, *, stream: bool) -> Timeout:
        """The time limits of one call (see `adaptors._timeouts` for where each comes
        from); a stream gets no total limit, so it is never cut while it keeps sending.

        Worked out once per kind of call and kept while the inputs are the same objects
        (the config is frozen; `bind` may hand in other defaults or another cluster):
        every request asks."""
        config = self._config
        cluster_config = getattr(self.cluster_adaptor, "config", None)
        defaults = self.timeout_defaults
        kept = self._timeouts.get(stream)
        if kept is not None and kept[0] is defaults and kept[1] is cluster_config:
            return kept[2]
        timeout = endpoint_timeout(
            config,
            legacy=config.api_request_timeout
            if "api_request_timeout" in config.model_fields_set
            else None,
            cluster_config=cluster_config,
            defaults=defaults,
            stream=stream,
        )
        self._timeouts[stream] = (defaults, cluster_config, timeout)
        return timeout

    def _request(
        self,
        body: dict[str, Any] | None,
        route: str | None,
        accept: str,
        request_id: object = None,
        passed: object = None,
        method: str = "POST",
    ) -> BackendRequest:
        url, headers = self._fixed(route, accept, body is not None)
        if is_plain_value(request_id):
            headers = (*headers, ("x-request-id", str(request_id)))
        if passed is not None:
            headers = (*headers, *_passed_headers(passed))
        return BackendRequest(
            method=method,
            url=url,
            headers=headers,
            body=b"" if body is None else body_bytes(body),
            timeout=self.timeout(stream=accept == "text/event-stream"),
            tls=self._tls_options(),
        )

    def _fixed(self, route: str | None, accept: str, with_body: bool) -> tuple[str, _Headers]:
        """The URL and the headers every call of this kind sends, kept per kind while the
        URL and the key are the same (`set_api_url`, or `bind` with other secrets, makes
        them anew): every request asks.  Only calls with a body are kept; the others
        name a stored response in their route, and those are without number."""
        api_url, api_key = self._api_url, self._api_key
        key = (route, accept)
        kept = self._calls.get(key) if with_body else None
        if kept is not None and kept[0] is api_url and kept[1] == api_key:
            return kept[2], kept[3]
        headers = [("accept", accept)]
        if with_body:
            headers.insert(0, ("content-type", "application/json"))
        if api_key:
            headers.append(("authorization", f"Bearer {api_key}"))
        url = resolve_url(api_url, route)
        if with_body:
            if len(self._calls) >= _KEPT_CALLS:
                self._calls.clear()
            self._calls[key] = (api_url, api_key, url, tuple(headers))
        return url, tuple(headers)

    def _tls_options(self) -> TLSOptions | None:
        """The config's TLS options, worked out once per config (it is frozen): the
        property builds them anew on each read, and every request asks."""
        config = self._config
        kept = self._tls
        if kept is None or kept[0] is not config:
            kept = self._tls = (config, config.tls_options)
        return kept[1]

    async def stored_response(
        self, response_id: str, operation: str, request_id: str
    ) -> SubmitTaskResponse:
        """One of the Responses API's calls on a response the backend stored
        (`STORED_OPERATIONS`: retrieve, cancel, delete, input_items), answered as it is."""
        method, suffix = STORED_OPERATIONS[operation]
        route = f"responses/{quote(response_id, safe='')}{suffix}"
        request = self._request(None, route, "application/json", request_id, method=method)
        return await self._send(request)

    async def submit_task(self, data: dict[str, Any]) -> SubmitTaskResponse:
        body, route = unpack_task_data(data)
        request = self._request(
            body, route, "application/json", data.get("request_id"), data.get(PASSED_HEADERS)
        )
        return await self._send(request)

    async def _send(self, request: BackendRequest) -> SubmitTaskResponse:
        try:
            response = await self.transport.send(request)
        except TransportError as exc:
            failure = failure_of(exc, request.timeout)
            return SubmitTaskResponse(
                error_message=failure.message,
                error_code=failure.status,
                failure_code=failure.code,
            )
        headers = _as_dict(response.headers)
        if not 200 <= response.status < 300:
            message, code = _refusal(response.status, response.body)
            return SubmitTaskResponse(error_message=message, error_code=code, headers=headers)
        try:
            text = response.body.decode("utf-8")
        except UnicodeDecodeError:
            return SubmitTaskResponse(
                error_message="The backend answered with a body that is not UTF-8 text.",
                error_code=502,
            )
        return SubmitTaskResponse(result=text, headers=headers).keep_body(response.body)

    async def submit_streaming_task(
        self, data: dict[str, Any], request_log_id: str
    ) -> SubmitStreamingTaskResponse:
        body, route = unpack_task_data(data)
        request = self._request(
            body, route, "text/event-stream", data.get("request_id"), data.get(PASSED_HEADERS)
        )
        try:
            stream = await self.transport.open_stream(request)
        except TransportError as exc:
            failure = failure_of(exc, request.timeout)
            return SubmitStreamingTaskResponse(
                error_message=failure.message,
                error_code=failure.status,
                failure_code=failure.code,
            )
        headers = _as_dict(stream.headers)
        if not 200 <= stream.status < 300:
            message, code, known = await _read_refusal(stream, request.timeout)
            return SubmitStreamingTaskResponse(
                error_message=message, error_code=code, headers=headers, failure_code=known
            )
        headers.setdefault("content-type", "text/event-stream")
        return SubmitStreamingTaskResponse(
            response=StreamingResponse(
                content=stream.chunks(),
                status_code=stream.status,
                headers=headers,
                on_close=stream.aclose,
            ),
            task_id=request_log_id,
        )


# The Responses API's calls on a stored response: (HTTP method, path after its id).
STORED_OPERATIONS = {
    "retrieve": ("GET", ""),
    "cancel": ("POST", "/cancel"),
    "delete": ("DELETE", ""),
    "input_items": ("GET", "/input_items"),
}

# How many kinds of call `_fixed` keeps (routes times accepts: a handful in practice).
_KEPT_CALLS = 32

# The task data key under which the gateway hands on the client's headers that the API
# itself defines (the Messages API's `anthropic-version` and `anthropic-beta`).
PASSED_HEADERS = "passed_headers"


def _passed_headers(value: object) -> list[tuple[str, str]]:
    # None first: most requests pass none, and a test against the Mapping ABC costs more.
    if value is None or not isinstance(value, Mapping):
        return []
    return [(str(k), str(v)) for k, v in value.items() if is_plain_value(v)]


async def _read_refusal(stream: BackendStream, timeout: Timeout) -> tuple[str, int, str | None]:
    """The message, status and failure code of a stream the backend refused."""
    try:
        body = await stream.aread()
    except TransportError as exc:
        failure = failure_of(exc, timeout)
        return failure.message, failure.status, failure.code
    finally:
        await stream.aclose()
    return (*_refusal(stream.status, body), None)


def _as_dict(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Header pairs keyed by lower-case name; repeated headers joined as HTTP allows."""
    merged: dict[str, str] = {}
    for name, value in headers:
        # A name already in lower case (as transports give them) is kept, not copied:
        # an open stream keeps these for its whole life.
        key = name if name.islower() else name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return merged
