"""What a value carried on as a header may be: one rule for the front-end (keeping a
client's request id) and the Direct API adaptor (sending an embedder's request id and
the passed API headers on to a backend)."""

from __future__ import annotations

__all__ = ["MAX_PLAIN_VALUE", "is_plain_value"]

MAX_PLAIN_VALUE = 128


def is_plain_value(value: object) -> bool:
    """Printable ASCII (`" "` to `"~"`), 1 to 128 characters, no spaces at the ends: a
    value that travels safely as a header and in a log line."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_PLAIN_VALUE
        and value.isascii()
        and value.isprintable()  # of ASCII, exactly " " to "~"
        and value.strip() == value
    )
