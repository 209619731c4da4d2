"""What a failed backend call tells the client: a status, an OpenAI error code, a message.

The one table from transport errors to answers, shared by the Direct API adaptor (which
returns them, as the seed's adaptors do) and by the gateway (for an adaptor that let a
transport error escape).  Each time limit keeps its own code, so a client and the
request log can tell a backend that never connected from one that went silent
mid-stream; a full pool is the gateway's own saturation (503), never a backend timeout.
Messages name the limit and its seconds, never the backend's URL or key.
"""

from __future__ import annotations

import attrs

from transports import (
    AnswerTooLarge,
    ConnectError,
    ConnectTimeout,
    FirstByteTimeout,
    IdleTimeout,
    Saturated,
    Timeout,
    TransportError,
    TransportTimeout,
)

__all__ = ["Failure", "failure_of"]


@attrs.frozen(kw_only=True)
class Failure:
    """A failed call as the client should hear of it."""

    message: str
    status: int
    code: str | None


def _seconds(value: float | None) -> str:
    return "no limit" if value is None else f"{value:g}s"


def failure_of(exc: TransportError, timeout: Timeout | None = None) -> Failure:
    """The answer for a call that never got (all of) its HTTP answer; `timeout` the
    limits it ran under, to name their seconds (None: unnamed).

    Messages of the named failures are clauses completing "The backend serving <model>
    failed: ...", the form in which the gateway shows them."""

    def after(seconds: float | None) -> str:
        return "" if timeout is None else f" after {_seconds(seconds)}"

    t = timeout or Timeout()
    if isinstance(exc, Saturated):
        return Failure(message=str(exc), status=503, code="gateway_saturated")
    if isinstance(exc, ConnectTimeout):
        return Failure(
            message=f"it timed out{after(t.connect)} connecting (connect_timeout)",
            status=504,
            code="backend_connect_timeout",
        )
    if isinstance(exc, FirstByteTimeout):
        return Failure(
            message=f"it timed out{after(t.first_byte)} waiting for the first byte of its "
            "answer (first_byte_timeout)",
            status=504,
            code="backend_first_byte_timeout",
        )
    if isinstance(exc, IdleTimeout):
        silent = "" if timeout is None else f" for more than {_seconds(t.idle)}"
        return Failure(
            message=f"its stream went silent{silent} (stream_idle_timeout)",
            status=504,
            code="backend_stream_idle_timeout",
        )
    if isinstance(exc, TransportTimeout):
        return Failure(
            message=f"it timed out{after(t.total)} before finishing its answer (total_timeout)",
            status=504,
            code="backend_timeout",
        )
    if isinstance(exc, AnswerTooLarge):
        return Failure(
            message=f"its answer exceeded the gateway's limit of {exc.limit} bytes for a "
            "non-streamed answer (max_answer_bytes)",
            status=502,
            code="backend_answer_too_large",
        )
    if isinstance(exc, ConnectError):
        return Failure(
            message="The gateway could not connect to the backend.", status=502, code=None
        )
    return Failure(
        message=f"The connection to the backend failed ({type(exc).__name__}).",
        status=502,
        code=None,
    )
