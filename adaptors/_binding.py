"""What the gateway hands every adaptor before its first call: a transport and its secrets.

Endpoint and cluster adaptors are bound alike, so it is written once, here.  The seed's
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

from transports import Transport

__all__ = ["Bindable"]


class Bindable:
    """The transport and secrets of one adaptor; the base classes add `bind`."""

    # Class-level defaults: the seed's `__init__` never sets these, `bind` does.
    _transport: Transport | None = None
    _secrets: Mapping[str, str] | None = None

    def _describe(self) -> str:
        """How errors name the adaptor, e.g. "endpoint 'slug'"; never its config."""
        raise NotImplementedError

    def _bind_io(self, transport: Transport, secrets: Mapping[str, str] | None) -> None:
        self._transport = transport
        if secrets is not None:
            self._secrets = dict(secrets)

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
