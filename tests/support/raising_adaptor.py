"""An endpoint adaptor whose call raises, quoting a secret: the driver must turn that into
a failure the client sees as a 502 and the request log records with an error code and a
short, clean account."""

from __future__ import annotations

from typing import Any

from adaptors.endpoints.direct_api import DirectAPIEndpoint
from adaptors.endpoints.endpoint import SubmitTaskResponse

LEAKED = "pw-raised-7f3a9c"


class RaisingEndpoint(DirectAPIEndpoint):
    async def submit_task(self, data: dict[str, Any]) -> SubmitTaskResponse:
        raise RuntimeError(f"backend pool exhausted; password={LEAKED}; " + "trace " * 500)
