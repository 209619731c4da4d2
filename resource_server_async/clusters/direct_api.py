"""The seed's import path for `DirectAPICluster`; the very same class as in `adaptors`."""

from adaptors.clusters.direct_api import (
    DirectAPICluster,
    DirectAPIClusterConfig,
    StatusClient,
    StatusError,
)

# The seed names its config model `ClusterConfig`.
ClusterConfig = DirectAPIClusterConfig

__all__ = [
    "ClusterConfig",
    "DirectAPICluster",
    "DirectAPIClusterConfig",
    "StatusClient",
    "StatusError",
]
