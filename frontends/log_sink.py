"""Where the driver's `WriteLog` effects go: one finished request, one record.

The driver only needs `write(entry)`, which must not block or await (it is called on the
request path); a store that keeps records elsewhere implements the same method.
"""

from __future__ import annotations

import json
import logging
from typing import Protocol

import attrs

from core import LogEntry

__all__ = ["LogSink", "LoggerSink"]


class LogSink(Protocol):
    def write(self, entry: LogEntry) -> None:
        """Take one finished request's record; never block, never raise."""
        ...


class LoggerSink:
    """Each record as one JSON line on the `inference_gateway.requests` logger."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger or logging.getLogger("inference_gateway.requests")

    def write(self, entry: LogEntry) -> None:
        self._logger.info(json.dumps(attrs.asdict(entry), default=str))
