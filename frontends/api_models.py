"""The shapes of what the gateway answers by itself (listings, health, usage, files,
batches) and of those routes' inputs, as pydantic models for the OpenAPI document.

The inference routes' bodies and answers are the core's (`core._api_models`); these are
the rest.  A batch's creation body is checked with `BatchCreateRequest` itself
(`frontends.batches`); the answers are checked against their models on the live server
by schemathesis (`tests/test_openapi_live.py`), so a builder that drifts from its model
fails a test.
"""

from __future__ import annotations

from typing import Any, Literal

import pydantic

from frontends.store import GroupBy

__all__ = [
    "MAX_METADATA_PAIRS",
    "BatchCreateRequest",
    "BatchEndpoint",
    "BatchList",
    "BatchObject",
    "ClusterModels",
    "ClusterModelsQuery",
    "EndpointListing",
    "FileDeleted",
    "FileList",
    "FileObject",
    "FileUpload",
    "Health",
    "JobsAnswer",
    "ListBatchesQuery",
    "ListFilesQuery",
    "ModelEntry",
    "ModelList",
    "PublicStatus",
    "StatusCluster",
    "StatusFigures",
    "StatusModel",
    "StatusSummary",
    "StatusUsage",
    "UsageAnswer",
    "UsageQuery",
    "Whoami",
]


class _Open(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")


class _Closed(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")


# -- models and listings ------------------------------------------------------------------


class _ModelMetadata(_Closed):
    """A model's public metadata (`core._listing`): shown only when set."""

    display_name: str | None = None
    description: str | None = None
    capabilities: dict[str, Any] | None = None
    aliases: list[str] | None = pydantic.Field(
        default=None, description="Other names the gateway accepts for this model."
    )
    rate_limit_token_per_minute: int | None = pydantic.Field(
        default=None, description="Tokens per minute for the model, all users together."
    )
    rate_limit_token_per_minute_per_user: int | None = pydantic.Field(
        default=None, description="Tokens per minute for the model, per user."
    )


class ModelEntry(_ModelMetadata):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str = pydantic.Field(description="The cluster serving the model.")


class ClusterModel(_ModelMetadata):
    id: str
    object: Literal["model"]
    cluster: str
    framework: str


class ClusterModels(pydantic.RootModel[list[ClusterModel]]):
    """The models of a cluster you may use, by name."""


class ClusterModelsQuery(_Closed):
    model_id: str | None = pydantic.Field(
        default=None, description="One model (its name or an alias)."
    )


class PublicStatus(pydantic.RootModel[dict[str, bool]]):
    """Cluster → whether its status service answers (clusters open to everyone)."""


class ModelList(_Closed):
    object: Literal["list"]
    data: list[ModelEntry]


class Whoami(_Closed):
    username: str
    subject: str | None
    domain: str | None
    groups: list[str]
    provider: str
    expires_at: float | None = pydantic.Field(description="Epoch seconds; null: no expiry.")


class EndpointModel(_Closed):
    model: str
    endpoint_slug: str


class FrameworkEndpoints(_Closed):
    models: list[EndpointModel]
    endpoints: dict[str, str] = pydantic.Field(description="Operation → the URL path to call.")


class ClusterEndpoints(_Closed):
    frameworks: dict[str, FrameworkEndpoints]


class EndpointListing(_Closed):
    clusters: dict[str, ClusterEndpoints]


class Job(_Open):
    Models: str
    Framework: str
    Cluster: str


class JobsAnswer(_Closed):
    """A cluster's jobs, cut to the models the caller may use."""

    running: list[Job]
    queued: list[Job]
    stopped: list[Job]
    others: list[Job]
    private_batch_running: list[Job]
    private_batch_queued: list[Job]
    cluster_status: dict[str, Any]


class Health(_Open):
    """Liveness; `quota` and `request_log` when those are in use."""

    status: Literal["ok"]
    quota: str | None = None
    request_log: dict[str, Any] | None = None


# -- usage --------------------------------------------------------------------------------


class UsageQuery(_Closed):
    by: GroupBy = "user"
    all: Literal["true", "false", "1", "0"] = pydantic.Field(
        default="false", description="Everyone's usage (operators only)."
    )
    user: str | None = pydantic.Field(default=None, description="Another user (operators only).")
    model: str | None = None
    since: str | None = pydantic.Field(
        default=None, description="A day (YYYY-MM-DD, UTC) or an ISO time.", examples=["2026-11-01"]
    )


class UsageRow(_Closed):
    key: str | None
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    estimated_tokens: int


class UsageAnswer(_Closed):
    object: Literal["usage"]
    by: GroupBy
    user: str | None
    data: list[UsageRow]


# -- files and batches --------------------------------------------------------------------


class FileUpload(_Closed):
    """`POST /v1/files` as multipart/form-data."""

    purpose: Literal["batch"]
    file: bytes = pydantic.Field(
        json_schema_extra={"format": "binary"}, description="JSONL, one request per line."
    )


class ListFilesQuery(_Closed):
    purpose: str | None = None
    after: str | None = None
    limit: int = pydantic.Field(default=10_000, ge=1, le=10_000)
    order: Literal["asc", "desc"] = "desc"


class FileObject(_Closed):
    id: str
    object: Literal["file"]
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str
    status_details: str | None


class FileList(_Closed):
    object: Literal["list"]
    data: list[FileObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class FileDeleted(_Closed):
    id: str
    object: Literal["file"]
    deleted: bool


BatchEndpoint = Literal["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]
MAX_METADATA_PAIRS = 16


class BatchCreateRequest(_Closed):
    """`POST /v1/batches`: what `frontends.batches` validates a creation with."""

    model_config = pydantic.ConfigDict(extra="forbid", strict=True, frozen=True)

    input_file_id: str = pydantic.Field(min_length=1, description="An uploaded file's id.")
    endpoint: BatchEndpoint = pydantic.Field(description="The route every line calls.")
    completion_window: Literal["24h"]
    metadata: dict[str, str] | None = pydantic.Field(
        default=None, max_length=MAX_METADATA_PAIRS
    )


class ListBatchesQuery(_Closed):
    after: str | None = None
    limit: int = pydantic.Field(default=20, ge=1, le=100)


class BatchErrors(_Open):
    object: Literal["list"]
    data: list[dict[str, Any]]


class RequestCounts(_Closed):
    total: int
    completed: int
    failed: int


class BatchObject(_Closed):
    id: str
    object: Literal["batch"]
    endpoint: str
    errors: BatchErrors | None
    input_file_id: str
    completion_window: str
    status: str
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    in_progress_at: int | None
    expires_at: int | None
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    expired_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    request_counts: RequestCounts
    metadata: dict[str, str] | None
    model: str | None


class BatchList(_Closed):
    object: Literal["list"]
    data: list[BatchObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


# -- the seed system's batch routes (frontends.seed_batches) -----------------------------

SeedStatusName = Literal["pending", "running", "failed", "completed"]


class SeedBatchCreate(_Closed):
    """`POST /resource_server/{cluster}/{framework}/v1/batches`: any other field is a 400."""

    input_file: str
    model: str
    output_folder_path: str | None = None


class SeedBatchCreated(_Closed):
    batch_id: str
    input_file: str
    status: SeedStatusName


class SeedBatchSummary(_Closed):
    batch_id: str
    cluster: str
    framework: str
    input_file: str
    in_progress_at: str | None
    completed_at: str | None
    failed_at: str | None
    status: SeedStatusName


class SeedBatchList(pydantic.RootModel[list[SeedBatchSummary]]):
    """The caller's batches, a bare JSON array as the seed answers."""


class SeedBatchesQuery(_Closed):
    status: SeedStatusName | None = None


class SeedBatchStatus(pydantic.RootModel[SeedStatusName]):
    """A batch's status, a bare JSON string as the seed answers."""


class SeedBatchResult(pydantic.RootModel[str]):
    """A completed batch's result: the output file's text (or the adaptor's result)."""


# -- the status page (`frontends.web.status_page`) ----------------------------------------


class StatusFigures(_Closed):
    requests: int = pydantic.Field(description="Successful requests in the window.")
    latency_p50_seconds: float | None
    first_token_p50_seconds: float | None = pydantic.Field(description="Streams only.")
    output_tokens_per_second: float | None


class StatusUsage(_Closed):
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class StatusModel(_Closed):
    model: str
    framework: str
    endpoint_slug: str
    state: Literal["running", "queued", "stopped", "unknown"]
    figures: StatusFigures | None = pydantic.Field(description="null: no request log.")
    usage: StatusUsage | None = pydantic.Field(
        default=None, description="With a key: the caller's own, since `usage_since`."
    )
    tokens_per_minute_per_user: int | None = None
    remaining_tokens_per_minute: int | None = pydantic.Field(
        default=None, description="With a key: what is left of the caller's tokens per minute."
    )


class StatusCluster(_Closed):
    name: str
    models: list[StatusModel]


class StatusSummary(_Closed):
    object: Literal["status"]
    window_seconds: float = pydantic.Field(description="The figures' window.")
    request_log: bool
    user: str | None = pydantic.Field(description="Whose key was given; null: none.")
    usage_since: str | None = pydantic.Field(description="ISO time; null without a key.")
    clusters: list[StatusCluster]
