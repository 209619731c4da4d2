"""The least of each route's answer that OpenAI's clients rely on, checked on a success.

The gateway relays a backend's answer byte for byte and does not validate it against
OpenAI's full schema: backends add fields, omit optional ones, and vary in the rest.
But a 200 that lacks what every client reads first is no answer at all: the official
clients index `choices` of a (chat) completion and `data` of an embeddings list, and
fail on the caller's side with an error that blames nobody.  So only that much is
checked, and a backend that fails it has failed (502 `backend_invalid_response`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core._records import OpenAIRoute

__all__ = ["ANSWER_LISTS", "answer_problem"]

# Route -> the field each answer must carry as a JSON array.
ANSWER_LISTS: Mapping[OpenAIRoute, str] = {
    OpenAIRoute.CHAT_COMPLETIONS: "choices",
    OpenAIRoute.COMPLETIONS: "choices",
    OpenAIRoute.EMBEDDINGS: "data",
    # The Responses API's `output` items; the Messages API's `content` blocks.
    OpenAIRoute.RESPONSES: "output",
    OpenAIRoute.MESSAGES: "content",
}


def answer_problem(route: OpenAIRoute, payload: Mapping[str, Any]) -> str | None:
    """What is wrong with a successful answer's JSON object for `route`, or None."""
    field = ANSWER_LISTS[route]
    if field not in payload:
        return f"has no '{field}'"
    if not isinstance(payload[field], list):
        return f"has a '{field}' that is not an array"
    return None
