"""What endpoint and cluster adaptors share: their access rules, how they are named, and
what the gateway hands them before their first call (a transport and its secrets).

Both are bound alike, so it is written once, here.  The seed's
constructors stay exactly the guide's (subclasses call them positionally), which is why
nothing IO-related goes through them: the assembler calls `bind` afterwards.

Secrets are the values of the environment variables a fixture entry names
(`api_key_env_name`).  The assembler reads the environment once, at the edge, and hands
each adaptor only the values its entry names; an adaptor never bound with secrets (one
a program or a test builds and binds by hand, as the guides do) reads the process
environment instead, so guide-style code keeps finding its key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import ClassVar

from adaptors._timeouts import DEFAULT_TIMEOUTS
from transports import Timeout, Transport

__all__ = ["AdaptorBase"]


class AdaptorBase:
    """The part of `BaseEndpoint` and `BaseCluster` that is the same; they add `bind`."""

    _kind: ClassVar[str]  # "endpoint" or "cluster"
    _name_field: ClassVar[str]  # the property that names one: "endpoint_slug", ...
    _allowed_globus_groups: list[str]
    _allowed_domains: list[str]
    # Class-level defaults: the seed's `__init__` never sets these, `bind` does.
    _transport: Transport | None = None
    _secrets: Mapping[str, str] | None = None
    _timeout_defaults: Timeout = DEFAULT_TIMEOUTS

    @property
    def allowed_globus_groups(self) -> list[str]:
        return list(self._allowed_globus_groups)

    @property
    def allowed_domains(self) -> list[str]:
        return list(self._allowed_domains)

    def _name(self) -> str:
        return str(getattr(self, self._name_field))

    def __repr__(self) -> str:
        # Deliberately without config: a config may name secrets or internal hosts.
        return f"{type(self).__name__}({self._name_field}={self._name()!r})"

    def _describe(self) -> str:
        """How errors name the adaptor, e.g. "endpoint 'slug'"; never its config."""
        return f"{self._kind} '{self._name()}'"

    def _bind_io(
        self,
        transport: Transport,
        secrets: Mapping[str, str] | None,
        timeouts: Timeout | None = None,
    ) -> None:
        self._transport = transport
        if secrets is not None:
            self._secrets = dict(secrets)
        if timeouts is not None:
            self._timeout_defaults = timeouts

    @property
    def timeout_defaults(self) -> Timeout:
        """The gateway's default limits for backend calls (its settings), as bound;
        an entry's own config keys override them (`adaptors._timeouts`)."""
        return self._timeout_defaults

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            raise RuntimeError(
                f"{self._describe()} has no transport: the gateway must call "
                "bind(transport=...) before the adaptor is used"
            )
        return self._transport

    def secret(self, name: str | None) -> str | None:
        """The value of the secret `name` (an environment variable's name), or None.

        From what `bind` was handed; without that, from the process environment.
        """
        if not name:
            return None
        source = os.environ if self._secrets is None else self._secrets
        return source.get(name) or None
