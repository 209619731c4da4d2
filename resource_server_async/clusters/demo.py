"""The seed-style import path for `DemoCluster`; the very same class as in `adaptors`."""

from adaptors.clusters.demo import DemoCluster

__all__ = ["DemoCluster"]
