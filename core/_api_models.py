"""The OpenAI request bodies as pydantic models: what the core validates a body with, and
what the OpenAPI document (`frontends.web.openapi`) describes it with; beside them the
shapes of OpenAI's answers and of the gateway's errors.

One set of models for both, so the document cannot drift from what is enforced: the
gateway checks only what it relies on (a non-empty `model`, a boolean `stream`, the type
of the input field, no field of its own envelope) and lets every other field through
untouched, because vLLM and friends accept extensions OpenAI does not know; hence
`extra="allow"`.  `strict=True` because JSON has no coercions: `"true"` is not a boolean
and `1.0` is not a token.  `core._validation` turns the first `ValidationError` into the
`ClientError` that names the field to fix.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pydantic

from core._records import OpenAIRoute

__all__ = [
    "RESERVED_FIELDS",
    "AnthropicErrorDetail",
    "AnthropicErrorResponse",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "Completion",
    "CompletionRequest",
    "Embedding",
    "EmbeddingList",
    "EmbeddingRequest",
    "ErrorDetail",
    "ErrorResponse",
    "InputItemList",
    "Message",
    "MessageStreamEvent",
    "MessagesRequest",
    "OpenAIRequest",
    "ReservedField",
    "ResponseDeleted",
    "ResponseObject",
    "ResponseStreamEvent",
    "ResponsesRequest",
    "request_model",
]

# Keys of the envelope the gateway hands adaptors; in a body they would be misread.
RESERVED_FIELDS = frozenset({"model_params", "openai_endpoint"})


class ReservedField(ValueError):
    """A body that sends a field of the gateway's own envelope (`name`)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"'{name}' is reserved by the gateway and may not be sent.")
        self.name = name


ModelName = Annotated[
    str,
    pydantic.Field(
        pattern=r"\S",
        description="The model to use: one of `GET /v1/models` (it picks the endpoint).",
        examples=["demo-model"],
    ),
]
Tokens = Annotated[list[int], pydantic.Field(min_length=1)]
TextOrTokens = (
    str
    | Annotated[list[str], pydantic.Field(min_length=1)]
    | Tokens
    | Annotated[list[list[int]], pydantic.Field(min_length=1)]
)


def _no_reserved_fields(schema: dict[str, Any]) -> None:
    """The schema's half of the reserved-field rule (`_refuse_reserved` is the check's)."""
    schema["not"] = {"anyOf": [{"required": [name]} for name in sorted(RESERVED_FIELDS)]}


class OpenAIRequest(pydantic.BaseModel):
    """What every OpenAI inference body must have for the gateway to route it."""

    model_config = pydantic.ConfigDict(
        extra="allow", strict=True, frozen=True, json_schema_extra=_no_reserved_fields
    )

    model: ModelName
    stream: bool | None = pydantic.Field(
        default=None, description="Answer as server-sent events, relayed chunk by chunk."
    )

    @pydantic.model_validator(mode="before")
    @classmethod
    def _refuse_reserved(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in sorted(RESERVED_FIELDS & data.keys()):
                raise ReservedField(name)
        return data


class ChatCompletionRequest(OpenAIRequest):
    """`POST /v1/chat/completions`: the messages are passed on as the client wrote them."""

    messages: list[dict[str, Any]] = pydantic.Field(
        min_length=1,
        description='The conversation: objects such as {"role": "user", "content": ...}.',
        examples=[[{"role": "user", "content": "Hello"}]],
    )


class CompletionRequest(OpenAIRequest):
    """`POST /v1/completions`."""

    prompt: TextOrTokens = pydantic.Field(
        description="A string, strings, a token array, or token arrays.", examples=["Hello"]
    )


class EmbeddingRequest(OpenAIRequest):
    """`POST /v1/embeddings`: never streamed."""

    # Not `Literal[False]`: a literal matches by equality, and `0 == False`.
    stream: bool | None = pydantic.Field(
        default=None,
        description="Embeddings are never streamed.",
        json_schema_extra={"not": {"const": True}},
    )
    input: TextOrTokens = pydantic.Field(
        description="A string, strings, a token array, or token arrays.", examples=["Hello"]
    )

    @pydantic.field_validator("stream")
    @classmethod
    def _never_streamed(cls, stream: bool | None) -> bool | None:
        if stream:
            raise ValueError("Streaming is not supported for embeddings.")
        return stream


class ResponsesRequest(OpenAIRequest):
    """`POST /v1/responses` (OpenAI's Responses API): the input items pass as written."""

    input: str | list[Any] = pydantic.Field(
        description="A string, or an array of input items (messages, tool outputs, ...).",
        examples=["Hello"],
    )
    previous_response_id: str | None = pydantic.Field(
        default=None,
        pattern=r"\S",
        description="Continue a stored response: sent to the endpoint that made it, which "
        "only the user it was made for may do.",
    )


class MessagesRequest(OpenAIRequest):
    """`POST /v1/messages` (Anthropic's Messages API); errors take Anthropic's shape."""

    messages: list[dict[str, Any]] = pydantic.Field(
        description='The conversation: objects such as {"role": "user", "content": ...}.',
        examples=[[{"role": "user", "content": "Hello"}]],
    )
    max_tokens: int = pydantic.Field(
        ge=1, description="The most tokens to generate (required).", examples=[256]
    )


_MODELS: dict[OpenAIRoute, type[OpenAIRequest]] = {
    OpenAIRoute.CHAT_COMPLETIONS: ChatCompletionRequest,
    OpenAIRoute.COMPLETIONS: CompletionRequest,
    OpenAIRoute.EMBEDDINGS: EmbeddingRequest,
    OpenAIRoute.RESPONSES: ResponsesRequest,
    OpenAIRoute.MESSAGES: MessagesRequest,
}


def request_model(route: OpenAIRoute) -> type[OpenAIRequest]:
    """The body model of an OpenAI route."""
    return _MODELS[route]


# -- answers ------------------------------------------------------------------------------
# A backend's answer is relayed as it came; these describe OpenAI's shape of it for the
# document (only the fields every OpenAI-compatible server sends are required).


class _Open(pydantic.BaseModel):
    """An OpenAI object: the fields named are there, others may be too."""

    model_config = pydantic.ConfigDict(extra="allow")


class ChatCompletion(_Open):
    """The answer of `POST /v1/chat/completions` without `stream`."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: dict[str, Any] | None = None


class ChatCompletionChunk(_Open):
    """One event's data in a streamed chat completion (the stream ends with `[DONE]`)."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[dict[str, Any]]


class Completion(_Open):
    """The answer of `POST /v1/completions` (each streamed event's data too)."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: dict[str, Any] | None = None


class Embedding(_Open):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str = pydantic.Field(
        description="The vector; base64 of little-endian float32s with encoding_format=base64."
    )


class EmbeddingList(_Open):
    """The answer of `POST /v1/embeddings`."""

    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: dict[str, Any] | None = None


class ErrorDetail(pydantic.BaseModel):
    """What went wrong; `param` names the field to fix, when there is one."""

    message: str
    type: str = pydantic.Field(examples=["invalid_request_error"])
    param: str | None
    code: str | None


class ErrorResponse(pydantic.BaseModel):
    """Every error the gateway answers with, from any layer: OpenAI's shape."""

    error: ErrorDetail


# -- the Responses and Messages APIs' answers (relayed as they come; described here) -------


class ResponseObject(_Open):
    """The answer of `POST /v1/responses` without `stream` (and of the calls on a stored
    response: retrieve, cancel)."""

    id: str
    object: Literal["response"]
    output: list[dict[str, Any]]
    usage: dict[str, Any] | None = None


class ResponseStreamEvent(_Open):
    """One event's data in a streamed response (`response.created` ... `response.completed`)."""

    type: str


class ResponseDeleted(_Open):
    """The answer of `DELETE /v1/responses/{id}`."""

    id: str
    deleted: bool


class InputItemList(_Open):
    """The answer of `GET /v1/responses/{id}/input_items`."""

    object: Literal["list"]
    data: list[dict[str, Any]]


class Message(_Open):
    """The answer of `POST /v1/messages` without `stream` (Anthropic's `message`)."""

    id: str
    type: Literal["message"]
    role: str
    content: list[dict[str, Any]]
    usage: dict[str, Any] | None = None


class MessageStreamEvent(_Open):
    """One event's data in a streamed message (`message_start` ... `message_stop`)."""

    type: str


class AnthropicErrorDetail(pydantic.BaseModel):
    type: str = pydantic.Field(examples=["invalid_request_error"])
    message: str


class AnthropicErrorResponse(pydantic.BaseModel):
    """Every error on `/v1/messages`, from any layer: Anthropic's shape."""

    type: Literal["error"]
    error: AnthropicErrorDetail
