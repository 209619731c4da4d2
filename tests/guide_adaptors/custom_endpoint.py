# The guide's CustomEndpoint ("Connecting to Direct API Backend"), as written there; only
# the imports the guide leaves implicit are added.
import logging
from typing import List

from resource_server_async.endpoints.direct_api import DirectAPIEndpoint
from resource_server_async.endpoints.endpoint import (
    SubmitStreamingTaskResponse,
    SubmitTaskResponse,
)

log = logging.getLogger(__name__)


class CustomEndpoint(DirectAPIEndpoint):
    """Custom endpoint implementation of DirectAPIEndpoint."""

    # Class initialization
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
        super().__init__(
            id,
            endpoint_slug,
            cluster,
            framework,
            model,
            endpoint_adapter,
            allowed_globus_groups,
            allowed_domains,
            config
        )

    # Inject custom logics to required submit_task function
    async def submit_task(self, data: dict) -> SubmitTaskResponse:
        """Add custom logic before calling the parent submit_task function."""

        # Do some checks with model status [recommended to avoid overloading the backend API]
        response = await self.get_endpoint_status()
        if response.error_message:
            return SubmitStreamingTaskResponse(
                error_message=response.error_message,
                error_code=response.error_code
            )

        # Modify input data to be compliant with the backend API
        api_request_data = {**data["model_params"]}
        api_request_data["stream"] = False

        # Additional logging
        log.info(f"Making API call to model {self.model}")

        # Call sumbit_task function of the parent DirectAPIEndpoint class
        return await super().submit_task(api_request_data)
