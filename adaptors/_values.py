"""Coercions shared by endpoint and cluster adaptors.

The seed database stored allowed groups and domains either as JSON lists or as one
comma-separated string, and adaptor code written against it passes either; both become
the same list here so nothing downstream has to care which it was.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["string_list"]


def string_list(value: str | Iterable[str] | None) -> list[str]:
    """A list of non-empty, stripped strings from None, a comma-separated string or an iterable."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else value
    return [text for text in (str(item).strip() for item in items) if text]
