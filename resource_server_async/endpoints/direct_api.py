"""The seed's import path for `DirectAPIEndpoint`; the very same class as in `adaptors`."""

from adaptors.endpoints.direct_api import DirectAPIEndpoint, DirectAPIEndpointConfig

__all__ = ["DirectAPIEndpoint", "DirectAPIEndpointConfig"]
