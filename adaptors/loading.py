"""From fixture records to adaptor instances, failing at start-up with a useful message.

An operator's typo in an adaptor path or config should stop the gateway before it
serves anything, with a `ConfigurationError` that names the file, the entry and the
field to fix; never with a traceback from deep inside importlib or pydantic.
Adaptors are called with keyword arguments, so a seed adaptor whose parameters are in a
different order still receives the right values.  An endpoint's adaptor gets its config
without the keys that are the gateway's (`core.GATEWAY_CONFIG_KEYS`: the model's public
metadata and `aliases`), so an adaptor with a strict config never has to know them.
"""

from __future__ import annotations

import copy
import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from pydantic import ValidationError

from adaptors.clusters.cluster import BaseCluster
from adaptors.endpoints.endpoint import BaseEndpoint
from core import GATEWAY_CONFIG_KEYS, ClusterRecord, ConfigurationError, EndpointRecord

__all__ = ["build_cluster", "build_endpoint", "import_adaptor"]

T = TypeVar("T")


def _brief(exc: BaseException, limit: int = 200) -> str:
    """One line about an exception: its type and the first line of its message."""
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else ""
    if len(first) > limit:
        first = first[: limit - 3] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def import_adaptor(
    path: str, base: type[Any], *, file: str, entry: object, field: str
) -> type[Any]:
    """The class at dotted `path` (`package.module.Class`), checked to subclass `base`.

    Typed loosely because `base` is abstract, which `type[T]` would refuse.
    """

    def fail(reason: str) -> ConfigurationError:
        return ConfigurationError(reason, file=file, entry=entry, field=field)

    module_name, _, attribute = path.rpartition(".")
    if not module_name or not all(part.isidentifier() for part in path.split(".")):
        raise fail(f"{path!r} is not a dotted path like 'package.module.Class'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise fail(f"module {module_name!r} cannot be imported ({_brief(exc)})") from exc
    found = getattr(module, attribute, None)
    if found is None:
        raise fail(f"module {module_name!r} has no attribute {attribute!r}")
    if not (isinstance(found, type) and issubclass(found, base)):
        raise fail(f"{path!r} is not a subclass of {base.__name__}")
    if inspect.isabstract(found):
        missing = ", ".join(sorted(getattr(found, "__abstractmethods__", ())))
        raise fail(f"{path!r} is abstract: it does not define {missing}")
    return found


def _construct(
    factory: Callable[..., T], arguments: dict[str, Any], *, file: str, entry: object
) -> T:
    """Call the adaptor; any failure is the entry's `config` (or its constructor) at fault."""
    try:
        return factory(**arguments)
    except ValidationError as exc:
        problems = exc.errors(include_url=False, include_input=False)
        first = problems[0] if problems else None
        loc = ".".join(str(part) for part in first["loc"]) if first else ""
        reason = first["msg"] if first else "is invalid"
        if len(problems) > 1:
            others = "; ".join(
                f"{'.'.join(str(p) for p in problem['loc']) or 'config'}: {problem['msg']}"
                for problem in problems[1:]
            )
            reason = f"{reason} (also: {others})"
        field = f"config.{loc}" if loc else "config"
        raise ConfigurationError(reason, file=file, entry=entry, field=field) from None
    except Exception as exc:
        raise ConfigurationError(
            f"the adaptor could not be built ({_brief(exc)})",
            file=file,
            entry=entry,
            field="config",
        ) from exc


# The seed constructors' keyword arguments, each taken from the record field of that name.
_ENDPOINT_ARGUMENTS = (
    "id",
    "endpoint_slug",
    "cluster",
    "framework",
    "model",
    "endpoint_adapter",
    "allowed_globus_groups",
    "allowed_domains",
    "config",
)
_CLUSTER_ARGUMENTS = (
    "id",
    "cluster_name",
    "cluster_adapter",
    "frameworks",
    "openai_endpoints",
    "allowed_globus_groups",
    "allowed_domains",
    "config",
)


def _plain(value: Any) -> Any:
    """What seed adaptors expect: lists for the record's tuples, a private dict for config."""
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return copy.deepcopy(dict(value))
    return value


def _build(
    record: EndpointRecord | ClusterRecord,
    base: type[Any],
    adapter_field: str,
    names: tuple[str, ...],
    *,
    file: str,
) -> Any:
    cls = import_adaptor(
        getattr(record, adapter_field), base, file=file, entry=record.id, field=adapter_field
    )
    arguments = {name: _plain(getattr(record, name)) for name in names}
    if isinstance(record, EndpointRecord):
        # The model's public metadata and aliases are the gateway's, not the adaptor's.
        config = arguments["config"]
        arguments["config"] = {k: v for k, v in config.items() if k not in GATEWAY_CONFIG_KEYS}
    return _construct(cls, arguments, file=file, entry=record.id)


def build_endpoint(record: EndpointRecord, *, file: str) -> BaseEndpoint:
    """An unbound endpoint adaptor for `record` (the gateway binds its transport)."""
    endpoint: BaseEndpoint = _build(
        record, BaseEndpoint, "endpoint_adapter", _ENDPOINT_ARGUMENTS, file=file
    )
    return endpoint


def build_cluster(record: ClusterRecord, *, file: str) -> BaseCluster:
    """An unbound cluster adaptor for `record` (the gateway binds its transport)."""
    cluster: BaseCluster = _build(
        record, BaseCluster, "cluster_adapter", _CLUSTER_ARGUMENTS, file=file
    )
    return cluster
