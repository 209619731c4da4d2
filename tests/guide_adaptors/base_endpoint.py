# The "Building Custom Adaptors" guide's CustomEndpoint, a direct BaseEndpoint subclass,
# as written there; only the imports the guide leaves implicit are added, and the two
# required functions answer from the config so the contract can be exercised.
from typing import List

from resource_server_async.endpoints.endpoint import (
    BaseEndpoint,
    SubmitStreamingTaskResponse,
    SubmitTaskResponse,
)


class CustomEndpoint(BaseEndpoint):
    """Custom endpoint implementation of BaseEndpoint."""

    def __init__(
        self,
        id: str,
        endpoint_slug: str,
        cluster: str,
        framework: str,
        model: str,
        endpoint_adapter: str,
        allowed_globus_groups: List[str] = None,
        allowed_domains: List[str] = None,
        config: dict = None,
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
            allowed_domains,
        )

    async def submit_task(self, data: dict) -> SubmitTaskResponse:
        """Submits a single interactive task to the compute resource."""
        return SubmitTaskResponse(result=str(self.config["answer"]))

    async def submit_streaming_task(
        self, data: dict, request_log_id: str
    ) -> SubmitStreamingTaskResponse:
        """Submits a single interactive task to the compute resource with streaming enabled."""
        return SubmitStreamingTaskResponse(error_message="no streams here", error_code=400)
