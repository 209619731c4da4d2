# A delegating endpoint written as "Building Custom Adaptors" shows it (the constructor,
# the required functions and the optional batch functions, with the guide's imports),
# standing in for a seed adaptor that hands the batch to a remote system.  Its "remote
# system" is the dict JOBS, which the test drives.
import uuid
from typing import List

from resource_server_async.endpoints.endpoint import (
    BaseEndpoint,
    BatchStatusEnum,
    GetBatchStatusResponse,
    SubmitBatchResponse,
    SubmitStreamingTaskResponse,
    SubmitTaskResponse,
)

# task id -> {"batch_data", "username", "status", "result", "seen"}
JOBS = {}


class RemoteBatchEndpoint(BaseEndpoint):
    """Custom endpoint implementation of BaseEndpoint."""

    def __init__(self,
        id: str,
        endpoint_slug: str,
        cluster: str,
        framework: str,
        model: str,
        endpoint_adapter: str,
        allowed_globus_groups: List[str] = None,
        allowed_domains: List[str] = None,
        config: dict = None
    ):
        # Assign custom config dictionary
        # From config fields in endpoints.json
        self.config = config

        # Initialize the rest of the common attributes
        super().__init__(
            id,
            endpoint_slug,
            cluster,
            framework,
            model,
            endpoint_adapter,
            allowed_globus_groups,
            allowed_domains
        )

    async def submit_task(self, data: dict) -> SubmitTaskResponse:
        """Submits a single interactive task to the compute resource."""
        return SubmitTaskResponse(error_message="batch only", error_code=400)

    async def submit_streaming_task(self, data: dict, request_log_id: str) -> SubmitStreamingTaskResponse:
        """Submits a single interactive task to the compute resource with streaming enabled."""
        return SubmitStreamingTaskResponse(error_message="batch only", error_code=400)

    def has_batch_enabled(self) -> bool:
        """Return True if batch can be used for this endpoint, False otherwise."""
        return True

    async def submit_batch(self, batch_data: dict, username: str) -> SubmitBatchResponse:
        """Submits a batch job to the compute resource."""
        task_id = str(uuid.uuid4())
        JOBS[task_id] = {
            "batch_data": dict(batch_data),
            "username": username,
            "status": BatchStatusEnum.pending,
            "result": None,
            "seen": [],
        }
        return SubmitBatchResponse(
            batch_id=str(uuid.uuid4()),
            task_ids=task_id,
            status=BatchStatusEnum.pending,
            error_message=None,
            error_code=None,
        )

    async def get_batch_status(self, batch) -> GetBatchStatusResponse:
        """Get the status and results of a batch job."""
        job = JOBS[batch.task_ids]
        job["seen"].append(batch.status)
        return GetBatchStatusResponse(
            status=job["status"],
            result=job["result"],
            error_message=None,
            error_code=None,
        )
