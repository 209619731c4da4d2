"""What a client's request may be: limits on its JSON, and text a backend could not read.

The web server refuses what is too large before the body is read (its bytes, its
headers); what is left is only visible once the JSON is parsed: how deeply it nests,
how many chat messages it carries, and text that no UTF-8 encoder can write.  The last
is a lone surrogate: JSON lets a client escape one (`"\\ud800"`), Python reads it into a
`str`, and the first backend (or encoder) that needs the text as UTF-8 fails on it.  So
the gateway refuses it as the client's mistake, naming where it is, instead of passing
it on to fail as a backend error.

Everything here is pure: limits come in as a validated `RequestLimits`, findings go out
as the path of the offending value (`messages[0].content`), clipped like every other
piece of the client's input an error message repeats.
"""

from __future__ import annotations

import re
from typing import Any

import attrs

__all__ = [
    "DEFAULT_LIMITS",
    "ECHO_LIMIT",
    "RequestLimits",
    "clip",
    "deeper_than",
    "lone_surrogate_at",
]

# How much of any one thing the client sent an error message repeats.
ECHO_LIMIT = 64


def clip(text: str, limit: int = ECHO_LIMIT) -> str:
    """`text` as an error message may repeat it: at most `limit` characters, then "…"."""
    return text if len(text) <= limit else text[:limit] + "…"


def _positive(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be a positive integer, got {value!r}")


# Python's JSON parser gives up near 1,000 levels (RecursionError); a limit must stay
# well below that, or the refusal would depend on the parser's stack rather than on it.
MAX_DEPTH_LIMIT = 512


def _depth(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    _positive(instance, attribute, value)
    if value > MAX_DEPTH_LIMIT:
        raise ValueError(f"{attribute.name} must be at most {MAX_DEPTH_LIMIT}, got {value}")


@attrs.frozen(kw_only=True)
class RequestLimits:
    """How deeply a request's JSON may nest (the top-level object is depth 1) and how
    many messages a chat request may carry."""

    max_json_depth: int = attrs.field(default=64, validator=_depth)
    max_messages: int = attrs.field(default=2048, validator=_positive)


DEFAULT_LIMITS = RequestLimits()


def _child_path(path: str, key: object) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else str(key))


def _children(value: Any) -> Any:
    return value.items() if isinstance(value, dict) else enumerate(value)


def deeper_than(value: Any, limit: int) -> str | None:
    """The path of the first array or object nested deeper than `limit`, else None.

    Depth-first in document order, without recursion (the value may be as deep as the
    parser allowed).  The fast pass counts containers only; the path is found on refusal.
    """
    stack: list[tuple[Any, int]] = [(value, 1)] if type(value) in (dict, list) else []
    push, pop = stack.append, stack.pop
    while stack:
        node, depth = pop()
        if depth > limit:
            return _path_at_depth(value, limit + 1)
        depth += 1
        for child in node.values() if type(node) is dict else node:
            kind = type(child)  # parsed JSON: exactly dict or list, never a subclass
            if kind is dict or kind is list:
                push((child, depth))
    return None


def _path_at_depth(value: Any, depth: int) -> str:
    """The path of the first container (in document order) at exactly `depth`."""
    stack: list[tuple[Any, str, int]] = [(value, "", 1)]
    while stack:
        node, path, level = stack.pop()
        if level == depth:
            return path
        found = [
            (child, _child_path(path, key), level + 1)
            for key, child in _children(node)
            if isinstance(child, dict | list)
        ]
        stack.extend(reversed(found))
    return ""  # not reached when deeper_than found the depth exceeded


# An escaped UTF-16 surrogate: where a lone one could come from (a raw one is not UTF-8).
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogate_at(raw: bytes, value: Any) -> str | None:
    """The path of the first string (or key) holding a lone surrogate, else None.

    A well-formed pair (`"\\ud83d\\ude00"`) is joined into one character by the parser,
    so any surrogate left in the parsed text is a lone one.  Bodies without an escaped
    surrogate in their bytes, nearly all of them, are not walked at all.
    """
    if _ESCAPED_SURROGATE.search(raw) is None:
        return None
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if _SURROGATE.search(node):
                return path or None
            continue
        if not isinstance(node, dict | list):
            continue
        found: list[tuple[Any, str]] = []
        for key, child in _children(node):
            where = _child_path(path, key)
            if isinstance(key, str) and _SURROGATE.search(key):
                return where
            found.append((child, where))
        stack.extend(reversed(found))
    return None
