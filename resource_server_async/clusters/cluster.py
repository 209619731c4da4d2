"""The seed's import path for the cluster contract; the very same objects as `adaptors`."""

from adaptors.clusters.cluster import BaseCluster, GetJobsResponse, JobInfo, Jobs

__all__ = ["BaseCluster", "GetJobsResponse", "JobInfo", "Jobs"]
