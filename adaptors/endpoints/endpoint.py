"""The endpoint adaptor contract, exactly as the seed's "Building Custom Adaptors" guide shows.

Adaptors written for the seed must import and run unchanged, so the names, fields and
constructor order here are the guide's.  Two things differ because this gateway is not
Django: a stream is our own `StreamingResponse`, and adaptors do no IO setup of their
own; the gateway `bind`s each one to its shared transport (and its cluster's adaptor)
before the first call.

`BaseEndpoint.__init__` never touches `self.config`: the guide's subclasses assign it
*before* calling `super().__init__`, and each adaptor owns what its config means.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from adaptors._common import AdaptorBase
from adaptors._values import string_list
from adaptors.clusters.cluster import BaseCluster
from adaptors.endpoints._body import ClientBody
from transports import Timeout, Transport

__all__ = [
    "BaseEndpoint",
    "BatchStatusEnum",
    "GetBatchStatusResponse",
    "GetEndpointStatusResponse",
    "StreamingResponse",
    "SubmitBatchResponse",
    "SubmitStreamingTaskResponse",
    "SubmitTaskResponse",
    "unpack_task_data",
]


class BatchStatusEnum(str, Enum):  # noqa: UP042 (the guide's exact base classes)
    pending = "pending"
    running = "running"
    failed = "failed"
    completed = "completed"


class StreamingResponse:
    """A streamed answer: what Django's `StreamingHttpResponse` was to the seed.

    `content` is iterated once by the gateway; `aclose()` must release whatever feeds it
    (the backend connection), whether or not it was read to the end.
    """

    def __init__(
        self,
        content: AsyncIterable[bytes | str],
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.content = content
        self.status_code = status_code
        self.headers: dict[str, str] = dict(headers or {})
        self._on_close = on_close
        self._closed = False

    async def aclose(self) -> None:
        """Close the content (if it can be closed), then run `on_close`; once only."""
        if self._closed:
            return
        self._closed = True
        close_content = getattr(self.content, "aclose", None)
        try:
            if close_content is not None:
                await close_content()
        finally:
            if self._on_close is not None:
                await self._on_close()

    def __repr__(self) -> str:
        return f"StreamingResponse(status_code={self.status_code})"


class SubmitTaskResponse(BaseModel):
    # The backend's exact bytes behind `result` (see `keep_body`), in a slot of its own
    # rather than a pydantic private attribute: a model with one runs pydantic's Python
    # `init_private_attributes` on every construction, about two thirds of the cost of
    # the one answer every non-streamed request makes.  A copy of the model does not
    # carry the bytes: its `body()` is None and the text is encoded instead.
    __slots__ = ("_kept",)

    result: str | None = None
    task_id: str | None = None
    error_message: str | None = None
    error_code: int | None = None
    # Extension to the seed contract: the backend's response headers.  The gateway relays
    # only an allow-list of them (content type, request id), never hop-by-hop ones.
    headers: dict[str, str] | None = None
    # Extension: the OpenAI error code of a failure the adaptor recognised (which time
    # limit ran out, the gateway's saturation; see `adaptors._failures`).
    failure_code: str | None = None

    def keep_body(self, body: bytes) -> SubmitTaskResponse:
        """Remember the bytes `result` was decoded from; returns self."""
        if self.result is not None:
            object.__setattr__(self, "_kept", (self.result, body))
        return self

    def body(self) -> bytes | None:
        """The bytes behind `result`, while `result` is still the text decoded from them
        (an adaptor that replaced `result` gets its new text sent instead)."""
        kept = getattr(self, "_kept", None)
        if kept is None or kept[0] is not self.result:
            return None
        return kept[1]  # type: ignore[no-any-return]


class SubmitStreamingTaskResponse(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    response: StreamingResponse | AsyncIterable[bytes | str] | None = None
    task_id: str | None = None
    error_message: str | None = None
    error_code: int | None = None
    headers: dict[str, str] | None = None  # as on SubmitTaskResponse, for error answers
    failure_code: str | None = None  # as on SubmitTaskResponse

    @field_validator("response", mode="plain")
    @classmethod
    def _is_stream(cls, value: object) -> object:
        """Accept our stream or any async iterable, as pydantic cannot check the latter."""
        if value is None or isinstance(value, StreamingResponse | AsyncIterable):
            return value
        raise ValueError("must be a StreamingResponse or an async iterable of bytes/str")


class SubmitBatchResponse(BaseModel):
    batch_id: str | None = None
    task_ids: str | None = None
    status: BatchStatusEnum | None = None
    error_message: str | None = None
    error_code: int | None = None


class GetBatchStatusResponse(BaseModel):
    status: BatchStatusEnum | None = None
    result: str | None = None
    error_message: str | None = None
    error_code: int | None = None


class GetEndpointStatusResponse(BaseModel):
    status: str | None = None
    error_message: str | None = None
    error_code: int | None = None


_ROUTE_BY_INPUT = (
    ("messages", "chat/completions"),
    ("prompt", "completions"),
    ("input", "embeddings"),
)


def unpack_task_data(data: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The client's body and the OpenAI route from what `submit_task` received.

    The gateway passes the seed's envelope (`model_params`, `openai_endpoint`); an
    extension adaptor may pass the bare body instead (the Direct API guide does), in
    which case the route is read off the body's input field.
    """
    params = data.get("model_params")
    if isinstance(params, dict):
        route = data.get("openai_endpoint")
        return params, route if isinstance(route, str) else None
    body = data if isinstance(data, ClientBody) else dict(data)
    route = next((r for key, r in _ROUTE_BY_INPUT if key in body), None)
    return body, route


async def _endpoint_status(cluster: BaseCluster | None, model: str) -> GetEndpointStatusResponse:
    """Whether `model` is up on `cluster`, from the cluster adaptor's job report."""
    if cluster is None:
        return GetEndpointStatusResponse(status="unknown")
    name = cluster.cluster_name
    unavailable = GetEndpointStatusResponse(
        error_message=f"The status of cluster {name} is unavailable; model {model} "
        "cannot be checked.",
        error_code=503,
    )
    try:
        answer = await cluster.get_jobs()
    except Exception:
        # Only `Exception`: cancellation must pass through untouched.
        return unavailable
    if answer.jobs is None:
        return unavailable
    wanted = model.casefold()

    def listed(jobs: Iterable[Any]) -> bool:
        return any(str(job.Models).casefold() == wanted for job in jobs)

    if listed(answer.jobs.running):
        return GetEndpointStatusResponse(status="running")
    if listed(answer.jobs.queued):
        return GetEndpointStatusResponse(
            status="queued",
            error_message=f"Model {model} is queued on cluster {name} and still starting; "
            "try again shortly.",
            error_code=503,
        )
    return GetEndpointStatusResponse(
        status="stopped",
        error_message=f"Model {model} is not running on cluster {name}.",
        error_code=503,
    )


class BaseEndpoint(AdaptorBase, ABC):
    """One model on one cluster, served through one backend protocol."""

    _kind = "endpoint"
    _name_field = "endpoint_slug"

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
    ) -> None:
        self._id = str(id)
        self._endpoint_slug = endpoint_slug
        self._cluster = cluster
        self._framework = framework
        self._model = model
        self._endpoint_adapter = endpoint_adapter
        self._allowed_globus_groups = string_list(allowed_globus_groups)
        self._allowed_domains = string_list(allowed_domains)
        self._cluster_adaptor: BaseCluster | None = None

    # -- identity (read-only) -------------------------------------------------------------

    @property
    def id(self) -> str:
        return self._id

    @property
    def endpoint_slug(self) -> str:
        return self._endpoint_slug

    @property
    def cluster(self) -> str:
        return self._cluster

    @property
    def framework(self) -> str:
        return self._framework

    @property
    def model(self) -> str:
        return self._model

    @property
    def endpoint_adapter(self) -> str:
        return self._endpoint_adapter

    # -- IO the gateway provides ----------------------------------------------------------

    def bind(
        self,
        *,
        transport: Transport,
        cluster: BaseCluster | None = None,
        secrets: Mapping[str, str] | None = None,
        timeouts: Timeout | None = None,
    ) -> None:
        """Give the adaptor the gateway's transport, its cluster's adaptor, the secrets
        its config names and the default time limits of backend calls."""
        self._bind_io(transport, secrets, timeouts)
        self._cluster_adaptor = cluster

    @property
    def cluster_adaptor(self) -> BaseCluster | None:
        return self._cluster_adaptor

    async def get_endpoint_status(self) -> GetEndpointStatusResponse:
        """Whether this model is running, per the bound cluster (status "unknown" if none)."""
        return await _endpoint_status(self._cluster_adaptor, self._model)

    def reads_model_params(self, stream: bool) -> bool:
        """Whether the method the gateway calls next may look at `data["model_params"]`.

        True unless an adaptor knows better: the gateway then hands it a parsed dict up
        front.  An adaptor answering False gets a dict that is parsed only if touched.
        """
        return True

    # -- required ---------------------------------------------------------------------------

    @abstractmethod
    async def submit_task(self, data: dict[str, Any]) -> SubmitTaskResponse:
        """Submits a single interactive task to the compute resource."""

    @abstractmethod
    async def submit_streaming_task(
        self, data: dict[str, Any], request_log_id: str
    ) -> SubmitStreamingTaskResponse:
        """Submits a single interactive task to the compute resource with streaming enabled."""

    # -- optional batch mode ----------------------------------------------------------------

    def has_batch_enabled(self) -> bool:
        """Return True if batch can be used for this endpoint, False otherwise."""
        return False

    def _batch_disabled(self) -> str:
        return f"Batch mode is not enabled for endpoint {self._endpoint_slug}."

    async def submit_batch(self, batch_data: dict[str, Any], username: str) -> SubmitBatchResponse:
        """Submits a batch job to the compute resource."""
        return SubmitBatchResponse(error_message=self._batch_disabled(), error_code=501)

    async def get_batch_status(self, batch: Any) -> GetBatchStatusResponse:
        """Get the status and results of a batch job."""
        return GetBatchStatusResponse(error_message=self._batch_disabled(), error_code=501)
