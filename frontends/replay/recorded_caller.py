"""`RecordedCallerIdentity`: on replay, the caller is whoever the record says it was.

A cassette never holds a token, only the caller the token identified (or how the
provider refused it), so replay needs no tokens file: before each conversation the
runner sets `caller` and `refusal` from the record, and this provider answers with them.
"""

from __future__ import annotations

from core import Identity, Rule
from frontends.identity import AccessRefused, CredentialsRejected, ProviderUnavailable
from transports.cassette import Caller, ClientRequest

__all__ = ["RecordedCallerIdentity"]


class RecordedCallerIdentity:
    """Vouches for whoever the current conversation's recorded caller was."""

    def __init__(self) -> None:
        self.caller: Caller | None = None
        self.refusal: str | None = None

    def answer_as(self, request: ClientRequest) -> None:
        """Answer the next calls as the provider answered when `request` was recorded."""
        self.caller = request.caller
        self.refusal = request.refusal

    async def resolve(self, credentials: str) -> Identity | None:
        kind, _, detail = (self.refusal or "").partition(":")
        if kind == "rejected":
            raise CredentialsRejected(detail)
        if kind == "refused":
            raise AccessRefused(Rule(detail))
        if kind == "unavailable":
            raise ProviderUnavailable("the recorded identity provider was unavailable")
        caller = self.caller
        if caller is None:
            return None
        return Identity(username=caller.username, groups=caller.groups, provider=caller.provider)
