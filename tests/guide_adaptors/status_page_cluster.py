# A cluster adaptor written the way the seed system writes its own (its MetisCluster):
# a DirectAPICluster subclass whose get_jobs fetches config.status_url through
# self.httpx_client and builds Jobs from the Metis-format status page.  Only what the
# seed takes from Django (its cache, its User) is left out.
import logging
from typing import Dict, List

from resource_server_async.clusters.cluster import GetJobsResponse, JobInfo, Jobs
from resource_server_async.clusters.direct_api import DirectAPICluster

log = logging.getLogger(__name__)


# Metis implementation of a BaseCluster
class StatusPageCluster(DirectAPICluster):
    """Metis-style implementation of BaseCluster."""

    # Class initialization
    def __init__(
        self,
        id: str,
        cluster_name: str,
        cluster_adapter: str,
        frameworks: List[str],
        openai_endpoints: List[str],
        config: Dict,
        allowed_globus_groups: List[str] = [],
        allowed_domains: List[str] = [],
    ):
        # Initialize the rest of the common attributes
        super().__init__(
            id,
            cluster_name,
            cluster_adapter,
            frameworks,
            openai_endpoints,
            config=config,
            allowed_globus_groups=allowed_globus_groups,
            allowed_domains=allowed_domains,
        )

    # Get jobs
    async def get_jobs(self) -> GetJobsResponse:
        """Provides a status of the cluster as a whole, including which models are running."""

        # Get the raw status data
        try:
            metis_status = await self.httpx_client.get(self.config.status_url)
        except Exception as e:
            return GetJobsResponse(
                error_message=f"Error: Unexpected error calling status URL: {e}",
                error_code=500,
            )

        # Declare data structure
        formatted = Jobs(
            running=[],
            queued=[],
            stopped=[],
            others=[],
            private_batch_running=[],
            private_batch_queued=[],
            cluster_status={
                "cluster": self.cluster_name,
                "total_models": len(metis_status),
                "live_models": 0,
                "stopped_models": 0,
            },
        )

        # For each model in the Metis cluster status
        for model_info in metis_status.values():
            status = model_info.get("status", "Unknown")

            # Extract model name and description
            model_name = model_info.get("model", "")
            description = model_info.get("description", "")
            full_description = f"{model_name} - {description}"

            # Do not expose sensitive fields like model_key, endpoint_id, or url to users
            job_entry = JobInfo(
                **{
                    "Models": model_name,
                    "Framework": "api",
                    "Cluster": self.cluster_name,
                    "Model Status": "running" if status == "Live" else status.lower(),
                    "Description": full_description,
                    "Model Version": model_info.get("model_version", ""),
                }
            )

            if status == "Live":
                formatted.running.append(job_entry)
                formatted.cluster_status["live_models"] += 1
            elif status == "Stopped":
                formatted.stopped.append(job_entry)
                formatted.cluster_status["stopped_models"] += 1
            else:
                # Any other status goes to queued
                formatted.queued.append(job_entry)

        # Return jobs result
        return GetJobsResponse(jobs=formatted)
