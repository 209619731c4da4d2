"""The seed guides' example adaptors, written as the guides show them (imports added).

They are here, importable by dotted path, to prove the contract: code copied from
"Building Custom Adaptors" and "Connecting to Direct API Backend" must load through the
fixture loader and run unchanged.
"""

# ruff: noqa: UP006, UP035, B006, RUF013
# mypy: ignore-errors
# (The guides' code as written: implicit Optional, bare dict, a wrong return type.)
from __future__ import annotations

import logging
from typing import Dict, List

from resource_server_async.clusters.cluster import BaseCluster, GetJobsResponse
from resource_server_async.endpoints.direct_api import DirectAPIEndpoint
from resource_server_async.endpoints.endpoint import (
    BaseEndpoint,
    SubmitStreamingTaskResponse,
    SubmitTaskResponse,
)

log = logging.getLogger(__name__)


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


class ExtendedDirectAPIEndpoint(DirectAPIEndpoint):
    """Custom endpoint implementation of DirectAPIEndpoint."""

    # Class initialization
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
        super().__init__(
            id,
            endpoint_slug,
            cluster,
            framework,
            model,
            endpoint_adapter,
            allowed_globus_groups,
            allowed_domains,
            config,
        )

    # Inject custom logics to required submit_task function
    async def submit_task(self, data: dict) -> SubmitTaskResponse:
        """Add custom logic before calling the parent submit_task function."""

        # Do some checks with model status [recommended to avoid overloading the backend API]
        response = await self.get_endpoint_status()
        if response.error_message:
            return SubmitStreamingTaskResponse(
                error_message=response.error_message, error_code=response.error_code
            )

        # Modify input data to be compliant with the backend API
        api_request_data = {**data["model_params"]}
        api_request_data["stream"] = False

        # Additional logging
        log.info(f"Making API call to model {self.model}")

        # Call sumbit_task function of the parent DirectAPIEndpoint class
        return await super().submit_task(api_request_data)


class CustomCluster(BaseCluster):
    """Custom implementation of BaseCluster."""

    # Class initialization
    def __init__(
        self,
        id: str,
        cluster_name: str,
        cluster_adapter: str,
        frameworks: List[str],
        openai_endpoints: List[str],
        allowed_globus_groups: List[str] = [],
        allowed_domains: List[str] = [],
        config: Dict = None,
    ):
        # [Optional] Do something with custom config if needed
        self.config = config

        # Initialize the rest of the common attributes
        super().__init__(
            id,
            cluster_name,
            cluster_adapter,
            frameworks,
            openai_endpoints,
            allowed_globus_groups,
            allowed_domains,
        )

    # [Required function]
    async def get_jobs(self) -> GetJobsResponse:
        """Provides a status of the cluster as a whole, including which models are running."""

        # Get cluster status (the guide's example answer, "queued" models from the config)
        cluster_status = {
            "running": [
                {
                    "Models": "gpt-oss-120b-131072",
                    "Framework": "api",
                    "Cluster": "metis",
                    "Model Status": "running",
                    "Description": "gpt-oss-120b-131072 - gpt oss 131K",
                    "Model Version": 1,
                }
            ],
            "queued": [
                {"Models": m, "Framework": "api", "Cluster": "metis"}
                for m in self.config.get("queued", [])
            ],
            "stopped": [],
            "cluster_status": {
                "cluster": "metis",
                "total_models": 1,
                "live_models": 1,
                "stopped_models": 0,
            },
        }

        # Format and return model status
        try:
            return GetJobsResponse(jobs=cluster_status)
        except Exception as e:
            return GetJobsResponse(
                error_message=f"Error: Could not generate GetJobsResponse: {e}", error_code=500
            )
