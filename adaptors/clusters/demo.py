"""`DemoCluster`: reports its configured demo models as running, without any IO."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from adaptors.clusters.cluster import BaseCluster, GetJobsResponse, JobInfo, Jobs

__all__ = ["DemoCluster"]


class DemoCluster(BaseCluster):
    """The cluster of the built-in demo models: `config["models"]` lists their names."""

    def __init__(
        self,
        id: str,
        cluster_name: str,
        cluster_adapter: str,
        frameworks: str | Iterable[str] | None,
        openai_endpoints: str | Iterable[str] | None,
        allowed_globus_groups: str | Iterable[str] | None = None,
        allowed_domains: str | Iterable[str] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.config = dict(config or {})
        models = self.config.get("models", [])
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            raise ValueError("config.models must be a list of model names")
        self._models = list(models)
        super().__init__(
            id,
            cluster_name,
            cluster_adapter,
            frameworks,
            openai_endpoints,
            allowed_globus_groups,
            allowed_domains,
        )

    async def get_jobs(self) -> GetJobsResponse:
        framework = self.frameworks[0] if self.frameworks else "demo"
        running = [
            JobInfo(
                Models=model,
                Framework=framework,
                Cluster=self.cluster_name,
                **{"Model Status": "running"},
            )
            for model in self._models
        ]
        return GetJobsResponse(
            jobs=Jobs(
                running=running,
                cluster_status={
                    "cluster": self.cluster_name,
                    "total_models": len(running),
                    "live_models": len(running),
                    "stopped_models": 0,
                },
            )
        )
