"""The cluster adaptor contract, exactly as the seed's "Building Custom Adaptors" guide shows.

A cluster adaptor answers one question, `get_jobs()`: which models are up.  The models
are the guide's; lists the guide's own example leaves out default to empty so its
example answers validate.  As for endpoints, `BaseCluster.__init__` never touches
`self.config` (subclasses set it first) and the gateway `bind`s the transport.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, Field

from adaptors._common import AdaptorBase
from adaptors._values import string_list
from transports import Timeout, Transport

__all__ = ["BaseCluster", "GetJobsResponse", "JobInfo", "Jobs"]


class JobInfo(BaseModel):
    Models: str
    Framework: str
    Cluster: str
    # Open dictionary that allow more fields ("Model Status", "Description", ...)
    model_config = {"extra": "allow"}


class Jobs(BaseModel):
    running: list[JobInfo] = Field(default_factory=list)
    queued: list[JobInfo] = Field(default_factory=list)
    stopped: list[JobInfo] = Field(default_factory=list)
    others: list[JobInfo] = Field(default_factory=list)
    private_batch_running: list[JobInfo] = Field(default_factory=list)
    private_batch_queued: list[JobInfo] = Field(default_factory=list)
    cluster_status: dict[str, Any] = Field(default_factory=dict)


class GetJobsResponse(BaseModel):
    jobs: Jobs | None = None
    error_message: str | None = None
    error_code: int | None = None


class BaseCluster(AdaptorBase, ABC):
    """A place endpoints run, and the one that knows which of its models are up."""

    _kind = "cluster"
    _name_field = "cluster_name"

    def __init__(
        self,
        id: str,
        cluster_name: str,
        cluster_adapter: str,
        frameworks: str | Iterable[str] | None,
        openai_endpoints: str | Iterable[str] | None,
        allowed_globus_groups: str | Iterable[str] | None = None,
        allowed_domains: str | Iterable[str] | None = None,
    ) -> None:
        self._id = str(id)
        self._cluster_name = cluster_name
        self._cluster_adapter = cluster_adapter
        self._frameworks = string_list(frameworks)
        self._openai_endpoints = string_list(openai_endpoints)
        self._allowed_globus_groups = string_list(allowed_globus_groups)
        self._allowed_domains = string_list(allowed_domains)

    @property
    def id(self) -> str:
        return self._id

    @property
    def cluster_name(self) -> str:
        return self._cluster_name

    @property
    def cluster_adapter(self) -> str:
        return self._cluster_adapter

    @property
    def frameworks(self) -> list[str]:
        return list(self._frameworks)

    @property
    def openai_endpoints(self) -> list[str]:
        return list(self._openai_endpoints)

    def bind(
        self,
        *,
        transport: Transport,
        secrets: Mapping[str, str] | None = None,
        timeouts: Timeout | None = None,
    ) -> None:
        """Give the adaptor the gateway's shared transport, the secrets its config names
        and the default time limits of backend calls (its endpoints read them)."""
        self._bind_io(transport, secrets, timeouts)

    @abstractmethod
    async def get_jobs(self) -> GetJobsResponse:
        """Provides a status of the cluster as a whole, including which models are running."""
