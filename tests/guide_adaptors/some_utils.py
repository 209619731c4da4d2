"""What the guide's CustomCluster calls `some_utils.fetch_status()`: here, the cluster's
own status report in the guide's Metis format, naming which models run."""

from typing import Any

RUNNING_MODELS = ["guide-model", "gpt-oss-120b-131072"]
QUEUED_MODELS = ["Queued-Model"]


async def fetch_status() -> dict[str, Any]:
    running = [
        {
            "Models": model,
            "Framework": "api",
            "Cluster": "guide-cluster",
            "Model Status": "running",
            "Description": f"{model} - served by the guide's adaptor",
            "Model Version": 1,
        }
        for model in RUNNING_MODELS
    ]
    queued = [{"Models": m, "Framework": "api", "Cluster": "guide-cluster"} for m in QUEUED_MODELS]
    return {
        "running": running,
        "queued": queued,
        "stopped": [],
        "cluster_status": {
            "cluster": "guide-cluster",
            "total_models": len(running),
            "live_models": len(running),
            "stopped_models": 0,
        },
    }
