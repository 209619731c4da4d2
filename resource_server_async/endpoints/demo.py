"""The seed-style import path for `DemoEndpoint`; the very same class as in `adaptors`."""

from adaptors.endpoints.demo import DemoEndpoint

__all__ = ["DemoEndpoint"]
