"""The data the core decides on: endpoints, clusters, identities and routes, as records.

The core never sees adaptor classes; it sees what the fixtures say about them.  Records
are frozen and validate in their constructors, so a record that exists is a valid one.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import attrs

__all__ = [
    "DEFAULT_TPM_MODEL",
    "DEFAULT_TPM_USER",
    "ClusterRecord",
    "EndpointRecord",
    "Headers",
    "Identity",
    "OpenAIRoute",
    "Response",
    "Usage",
    "checked",
    "header_pairs",
    "http_status",
    "non_empty",
    "non_negative",
    "status_fields",
]


class OpenAIRoute(enum.Enum):
    """The OpenAI operations the gateway forwards; the value is the seed's spelling."""

    CHAT_COMPLETIONS = "chat/completions"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"
    # OpenAI's Responses API and Anthropic's Messages API (vLLM serves both).
    RESPONSES = "responses"
    MESSAGES = "messages"

    @classmethod
    def from_path(cls, path: str) -> OpenAIRoute | None:
        try:
            return cls(path.strip("/"))
        except ValueError:
            return None


def _strings(value: Iterable[str] | None) -> tuple[str, ...]:
    return tuple(str(v) for v in (value or ()))


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


def _tokens_per_minute(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{attribute.name} must be a whole number >= 0 (0 disables the limit)")


# The seed system's defaults for its tokens-per-minute columns.
DEFAULT_TPM_MODEL = 100_000
DEFAULT_TPM_USER = 60_000


@attrs.frozen(kw_only=True)
class EndpointRecord:
    """One fixture entry of `endpoints.json`: a model served by one adaptor on one cluster."""

    id: str = attrs.field(converter=str)
    endpoint_slug: str
    cluster: str
    framework: str
    model: str
    endpoint_adapter: str
    allowed_globus_groups: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    allowed_domains: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    config: Mapping[str, Any] = attrs.field(
        factory=dict, converter=_frozen_mapping, eq=False, hash=False
    )
    # Tokens per minute for the model as a whole and for each user; 0 disables.  Kept as
    # the seed system stores them; the quota machinery enforces them.
    tpm_model: int = attrs.field(default=DEFAULT_TPM_MODEL, validator=_tokens_per_minute)
    tpm_user: int = attrs.field(default=DEFAULT_TPM_USER, validator=_tokens_per_minute)

    @property
    def aliases(self) -> tuple[str, ...]:
        """Other names clients use for this model: the config's `aliases` (its type is
        checked when fixtures load; anything but non-empty text is ignored here)."""
        names = self.config.get("aliases")
        if not isinstance(names, list | tuple):
            return ()
        return tuple(name for name in names if isinstance(name, str) and name)


@attrs.frozen(kw_only=True)
class ClusterRecord:
    """One fixture entry of `clusters.json`: where endpoints run and what they accept."""

    id: str = attrs.field(converter=str)
    cluster_name: str
    cluster_adapter: str
    frameworks: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    openai_endpoints: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    allowed_globus_groups: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    allowed_domains: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    config: Mapping[str, Any] = attrs.field(
        factory=dict, converter=_frozen_mapping, eq=False, hash=False
    )

    def accepts(self, route: OpenAIRoute) -> bool:
        return route.value in self.openai_endpoints


def _group_set(value: Iterable[str]) -> frozenset[str]:
    return frozenset(value)


def _domain_of(username: str) -> str | None:
    _, at, domain = username.rpartition("@")
    return domain.lower() if at and domain else None


@attrs.frozen(kw_only=True)
class Identity:
    """Who is calling, as an identity provider vouched for it (never the token itself)."""

    username: str
    groups: frozenset[str] = attrs.field(factory=frozenset, converter=_group_set)
    provider: str = "static"
    subject: str | None = None
    # When the provider stops vouching for this identity (epoch seconds); None: no expiry.
    expires_at: float | None = None

    @property
    def domain(self) -> str | None:
        """The part after `@` of the username, lower-cased; None when there is none."""
        return _domain_of(self.username)


# -- what the gateway answers and counts ---------------------------------------------------

Headers = tuple[tuple[str, str], ...]


Kind = type | tuple[type, ...]


def _named(kind: Kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join("None" if k is type(None) else k.__name__ for k in kinds)


def checked(*rules: Callable[[Any], None], **kinds: Kind) -> Callable[[Any], None]:
    """An `__attrs_post_init__` that checks each named field's type in one pass, then the
    value rules: the same guarantee as a validator per field, at a fraction of the cost
    for the records made on every request.  `int` fields refuse `bool`.

    The pass is compiled once, when the class is made, into one expression of plain
    `isinstance` tests (`isinstance(self.status, _kind0) and ...`), as attrs compiles its
    own `__init__`; only a record that fails is looked at field by field (to name the
    field).  About a dozen records a request come through here."""
    items = tuple(kinds.items())
    scope: dict[str, Any] = {"_refuse": _refuse, "_items": items}
    tests: list[str] = []
    for index, (name, kind) in enumerate(items):
        if not name.isidentifier():
            raise ValueError(f"checked: {name!r} is not a field name")
        scope[f"_kind{index}"] = kind
        tests.append(f"isinstance(self.{name}, _kind{index})")
        if kind is int:
            tests.append(f"self.{name}.__class__ is not bool")
    lines = ["def __attrs_post_init__(self):"]
    if tests:
        lines += [f"    if not ({' and '.join(tests)}):", "        _refuse(self, _items)"]
    for index, rule in enumerate(rules):
        scope[f"_rule{index}"] = rule
        lines.append(f"    _rule{index}(self)")
    if len(lines) == 1:
        lines.append("    pass")
    exec("\n".join(lines), scope)  # our own text, built from field names
    post_init: Callable[[Any], None] = scope["__attrs_post_init__"]
    return post_init


def _refuse(instance: object, items: tuple[tuple[str, Kind], ...]) -> None:
    """The TypeError naming the first field of `instance` that is not of its kind."""
    for name, kind in items:
        value = getattr(instance, name)
        if not isinstance(value, kind) or (value.__class__ is bool and kind is int):
            raise TypeError(
                f"{type(instance).__name__}.{name} must be {_named(kind)}, "
                f"got {type(value).__name__}"
            )


def status_fields(*names: str) -> Callable[[Any], None]:
    """A `checked` rule: these fields, when not None, are HTTP statuses (100..599)."""

    def rule(instance: Any) -> None:
        for name in names:
            value = getattr(instance, name)
            if value is not None and not 100 <= value <= 599:
                raise ValueError(f"{name} must be an HTTP status in 100..599, got {value!r}")

    return rule


def non_empty(*names: str) -> Callable[[Any], None]:
    """A `checked` rule: these text fields are not empty."""

    def rule(instance: Any) -> None:
        for name in names:
            if not getattr(instance, name):
                raise ValueError(f"{name} must not be empty")

    return rule


def non_negative(*names: str) -> Callable[[Any], None]:
    """A `checked` rule: these integer fields are >= 0."""

    def rule(instance: Any) -> None:
        for name in names:
            if getattr(instance, name) < 0:
                raise ValueError(f"{name} must be >= 0")

    return rule


def http_status(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    """attrs validator: an HTTP status code, 100..599."""
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
        raise ValueError(f"{attribute.name} must be an HTTP status in 100..599, got {value!r}")


def header_pairs(value: Iterable[tuple[str, str]]) -> Headers:
    """attrs converter: header pairs as a tuple of (str, str), order and repeats kept."""
    if value.__class__ is tuple and all(
        p.__class__ is tuple and len(p) == 2 and p[0].__class__ is str and p[1].__class__ is str
        for p in value
    ):
        return value  # already the exact shape: no copy
    pairs = tuple(tuple(pair) for pair in value)
    for pair in pairs:
        if len(pair) != 2 or not all(isinstance(part, str) for part in pair):
            raise ValueError(f"a header must be a (name, value) pair of strings, got {pair!r}")
    return pairs  # type: ignore[return-value]


@attrs.frozen(kw_only=True)
class Response:
    """A whole answer for the client: status, headers and the exact body bytes."""

    status: int
    headers: Headers = attrs.field(default=(), converter=header_pairs)
    body: bytes = b""

    __attrs_post_init__ = checked(status_fields("status"), status=int, body=bytes)


def _count(instance: object, attribute: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"{attribute.name} must be a non-negative integer, got {value!r}")


@attrs.frozen(kw_only=True)
class Usage:
    """The token counts a backend reported for one request (OpenAI's `usage` object).

    Each count is None when the backend did not report it; counts of the wrong type are
    not the gateway's to guess at, so `from_json` leaves them out rather than failing.
    """

    prompt_tokens: int | None = attrs.field(default=None, validator=_count)
    completion_tokens: int | None = attrs.field(default=None, validator=_count)
    total_tokens: int | None = attrs.field(default=None, validator=_count)

    @classmethod
    def from_json(cls, value: object) -> Usage | None:
        """The counts of a decoded `usage` object; None when it is not an object.

        Reads OpenAI's chat names (`prompt_tokens`, `completion_tokens`) and the names the
        Responses and Messages APIs use (`input_tokens`, `output_tokens`); the Messages
        API gives no total, so with those names a missing total is their sum, and its
        cache counts (kept apart from `input_tokens`) are prompt tokens too.
        """
        if not isinstance(value, dict):
            return None

        def count(name: str) -> int | None:
            number = value.get(name)
            if isinstance(number, bool) or not isinstance(number, int) or number < 0:
                return None
            return number

        prompt, completion, total = (
            count("prompt_tokens"),
            count("completion_tokens"),
            count("total_tokens"),
        )
        if prompt is None and completion is None:
            prompt, completion = count("input_tokens"), count("output_tokens")
            cached = [count(n) for n in ("cache_creation_input_tokens", "cache_read_input_tokens")]
            if prompt is not None and "total_tokens" not in value:
                prompt += sum(c for c in cached if c is not None)
            if total is None and prompt is not None and completion is not None:
                total = prompt + completion
        return cls(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total)

    def then(self, later: Usage) -> Usage:
        """These counts updated by a later report of the same request (a Messages stream
        reports the input in `message_start` and the output in `message_delta`)."""
        prompt = self.prompt_tokens if later.prompt_tokens is None else later.prompt_tokens
        completion = (
            self.completion_tokens if later.completion_tokens is None else later.completion_tokens
        )
        total = later.total_tokens
        complete_report = later.prompt_tokens is not None and later.completion_tokens is not None
        if not complete_report or total is None:
            total = None if prompt is None or completion is None else prompt + completion
            if total is None:
                total = self.total_tokens if later.total_tokens is None else later.total_tokens
        return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total)
