"""One JSON call to an identity service, through the gateway's `Transport`.

Identity providers make their HTTP calls through the same transport as adaptors, so
those calls are recorded and replayed like any backend call and run natively under
either event loop.  Anything but a JSON answer with status 200 is an outage
(`ProviderUnavailable`), never the caller's fault; no message holds a token or a secret.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from frontends.identity._base import ProviderUnavailable
from transports import BackendRequest, Timeout, Transport, TransportError, TransportTimeout

__all__ = ["basic_authorization", "call_json", "timeout_of"]

log = logging.getLogger("inference_gateway.identity")


def timeout_of(seconds: float) -> Timeout:
    """The same limit on connecting, each read and the whole call."""
    return Timeout(connect=seconds, read=seconds, total=seconds)


def basic_authorization(user: str, password: str) -> str:
    """An HTTP Basic `Authorization` value (RFC 7617), as httpx's `auth=` builds it."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


async def call_json(
    transport: Transport,
    method: str,
    url: str,
    *,
    who: str,
    timeout: Timeout,
    headers: Sequence[tuple[str, str]] = (),
    form: Mapping[str, str] | None = None,
) -> Any:
    """The parsed JSON of a 200 answer; `who` names the service in errors."""
    pairs = [("accept", "application/json"), *headers]
    body = b""
    if form is not None:
        pairs.append(("content-type", "application/x-www-form-urlencoded"))
        body = urlencode(form).encode()
    request = BackendRequest(method=method, url=url, headers=pairs, body=body, timeout=timeout)
    try:
        response = await transport.send(request)
    except TransportTimeout:
        raise ProviderUnavailable(f"{who} did not answer in time") from None
    except TransportError as exc:
        raise ProviderUnavailable(f"{who} unreachable: {type(exc).__name__}") from None
    if response.status != 200:
        log.warning("%s answered %s to %s %s", who, response.status, method, url)
        raise ProviderUnavailable(f"{who} answered HTTP {response.status}")
    try:
        return json.loads(response.body)
    except (ValueError, RecursionError):
        raise ProviderUnavailable(f"{who} answered with something not JSON") from None
