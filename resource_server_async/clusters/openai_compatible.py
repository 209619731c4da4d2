"""The seed-style import path for `OpenAICompatibleCluster`; the same class as in `adaptors`."""

from adaptors.clusters.openai_compatible import (
    OpenAICompatibleCluster,
    OpenAICompatibleClusterConfig,
)

__all__ = ["OpenAICompatibleCluster", "OpenAICompatibleClusterConfig"]
