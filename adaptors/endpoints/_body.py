"""The client's body as the seed's `model_params` dict, without losing its bytes.

Seed adaptors read and change `data["model_params"]` as a dict (the Direct API guide
copies it with `{**data["model_params"]}` and passes the copy to `super().submit_task`),
so that is what they get.  But a body no adaptor changed must reach the backend byte for
byte: re-serialising it would turn `1.0E2` into `100.0`, collapse duplicate keys and
reorder nothing less than the client's own request.  `ClientBody` is therefore a real
`dict` that remembers the bytes it was parsed from, and `body_bytes()` sends those bytes
whenever the dict still says what they say; a changed body is serialised once.

The parse itself can wait: an adaptor that never looks at `model_params` (the Direct
API endpoint's own path) never pays for it.  A lazy `ClientBody` fills itself on the
first read through any dict method; the driver makes it eager for adaptors that may hand
it to C code reading dict storage directly (pydantic, orjson), where laziness would
show an empty dict.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["ClientBody", "body_bytes"]


def _same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values, with types compared strictly (`true` is not `1`)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_json(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


class ClientBody(dict[str, Any]):
    """`dict(json.loads(raw))`, parsed on first use, that remembers `raw`."""

    __slots__ = ("_loaded", "_raw")

    def __init__(self, raw: bytes, *, lazy: bool = True) -> None:
        super().__init__()
        self._raw = raw
        self._loaded = False
        if not lazy:
            self._load()

    @property
    def raw(self) -> bytes:
        """The bytes the client sent (after the gateway's model-name spelling fix)."""
        return self._raw

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            dict.update(self, json.loads(self._raw))

    def to_bytes(self) -> bytes:
        """The bytes to send: the client's own unless the dict now says something else."""
        if not self._loaded:
            return self._raw
        # Looked at, perhaps changed (nested values too): compare with a fresh parse.
        if _same_json(dict(self), json.loads(self._raw)):
            return self._raw
        return _serialise(self)

    # Every read goes through _load first.  dict's C fast paths ({**d}, dict(d), d | x)
    # skip overridden methods only for subclasses that keep dict's own __iter__.
    def __iter__(self) -> Iterator[str]:
        self._load()
        return super().__iter__()

    def __len__(self) -> int:
        self._load()
        return super().__len__()

    def __contains__(self, key: object) -> bool:
        self._load()
        return super().__contains__(key)

    def __getitem__(self, key: str) -> Any:
        self._load()
        return super().__getitem__(key)

    def __eq__(self, other: object) -> bool:
        self._load()
        return super().__eq__(other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None

    def __repr__(self) -> str:
        self._load()
        return super().__repr__()

    def __or__(self, other: Any) -> dict[str, Any]:  # type: ignore[override]
        self._load()
        return {**self, **other}

    def __ror__(self, other: Any) -> dict[str, Any]:  # type: ignore[override]
        self._load()
        return {**other, **self}

    def __ior__(self, other: Any) -> ClientBody:  # type: ignore[override]
        self.update(other)
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        self._load()
        return (dict, (dict(self),))

    def __copy__(self) -> dict[str, Any]:
        self._load()
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return json.loads(self.to_bytes())  # type: ignore[no-any-return]

    def keys(self) -> Any:
        self._load()
        return super().keys()

    def values(self) -> Any:
        self._load()
        return super().values()

    def items(self) -> Any:
        self._load()
        return super().items()

    def get(self, key: str, default: Any = None) -> Any:
        self._load()
        return super().get(key, default)

    def copy(self) -> dict[str, Any]:
        self._load()
        return dict(self)

    def __setitem__(self, key: str, value: Any) -> None:
        self._load()
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self._load()
        super().__delitem__(key)

    def pop(self, key: str, *default: Any) -> Any:
        self._load()
        return super().pop(key, *default)

    def popitem(self) -> tuple[str, Any]:
        self._load()
        return super().popitem()

    def setdefault(self, key: str, default: Any = None) -> Any:
        self._load()
        return super().setdefault(key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._load()
        super().update(*args, **kwargs)

    def clear(self) -> None:
        self._load()
        super().clear()


def _serialise(params: Mapping[str, Any]) -> bytes:
    # ASCII escapes keep any text the client escaped (lone surrogates too) valid JSON,
    # and allow_nan=False refuses numbers no backend's JSON parser accepts.
    return json.dumps(params, allow_nan=False).encode()


def body_bytes(params: Mapping[str, Any]) -> bytes:
    """What to send for `model_params`: the client's bytes if unchanged, else JSON once."""
    if isinstance(params, ClientBody):
        return params.to_bytes()
    return _serialise(params)
