"""The seed's import path for the endpoint contract; the very same objects as `adaptors`."""

from adaptors.endpoints.endpoint import (
    BaseEndpoint,
    BatchStatusEnum,
    GetBatchStatusResponse,
    GetEndpointStatusResponse,
    StreamingResponse,
    SubmitBatchResponse,
    SubmitStreamingTaskResponse,
    SubmitTaskResponse,
    unpack_task_data,
)

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
