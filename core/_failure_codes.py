"""The backend failures the gateway names precisely, each with its own OpenAI error code.

An edge that knows which limit a failed call ran into (the transports raise one error
per time limit, see `adaptors._failures`) hands its code to the core; the client then
hears which it was, with the status it implies, and the request log records the code.
Saturation is the odd one: the gateway's own connection limit for a backend was
reached, so it is a 503 with `Retry-After`, and its message says so rather than blaming
the backend.
"""

from __future__ import annotations

import attrs

__all__ = ["KNOWN_FAILURES", "SATURATED", "KnownFailure"]

SATURATED = "gateway_saturated"


@attrs.frozen(kw_only=True)
class KnownFailure:
    status: int
    phrase: str  # completes "The backend serving <model> failed: ..."


KNOWN_FAILURES = {
    "backend_connect_timeout": KnownFailure(
        status=504, phrase="it did not accept a connection in time (connect timeout)"
    ),
    "backend_first_byte_timeout": KnownFailure(
        status=504, phrase="it sent no first byte of an answer in time (first-byte timeout)"
    ),
    "backend_stream_idle_timeout": KnownFailure(
        status=504, phrase="its stream went silent for longer than the idle timeout"
    ),
    "backend_timeout": KnownFailure(
        status=504, phrase="it did not finish its answer in time (total timeout)"
    ),
    "backend_answer_too_large": KnownFailure(
        status=502,
        phrase="its answer was larger than the gateway accepts (max_answer_bytes)",
    ),
    SATURATED: KnownFailure(
        status=503, phrase="every connection the gateway allows to its backend is in use"
    ),
}
