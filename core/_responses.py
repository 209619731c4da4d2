"""Which endpoint holds a stored Responses API response, so follow-ups go back to it.

A backend that serves the Responses API keeps each response (unless `store` is false),
and `previous_response_id` or `GET /v1/responses/{id}` only make sense on that same
backend.  The gateway remembers, per response id, the endpoint that answered and the
user it answered; only that user may follow up, and to anyone else the id does not
exist (404, as for an unknown id, so ids cannot be probed).

The directory is plain data in memory, bounded (the oldest entries leave first), with no
clock: the request machine reads it while selecting, and the driver writes it when the
machine asks (`RememberResponse`).  Each process keeps one; with Redis, the driver's edge
(`frontends.shared_responses`) also writes every entry there and reads an entry into
the directory before the machine looks for it, so any process finds any response.
"""

from __future__ import annotations

from collections import OrderedDict

from core._authorization import Allowed, authorize
from core._catalog import Catalog
from core._errors import ClientError
from core._records import EndpointRecord, Identity
from core._validation import ValidRequest

__all__ = ["ResponseDirectory", "follow_up_endpoint", "response_not_found"]

DEFAULT_CAPACITY = 100_000


class ResponseDirectory:
    """Response id -> (user, endpoint slug), the `capacity` most recent kept."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("a response directory holds at least one entry")
        self._capacity = capacity
        self._entries: OrderedDict[str, tuple[str, str]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, response_id: str, username: str, endpoint_slug: str) -> None:
        self._entries[response_id] = (username, endpoint_slug)
        self._entries.move_to_end(response_id)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def forget(self, response_id: str) -> None:
        """The backend deleted it: follow-ups have nowhere to go."""
        self._entries.pop(response_id, None)

    def endpoint_for(self, response_id: str, username: str) -> str | None:
        """The slug of the endpoint holding `response_id`, if `username` made it."""
        entry = self._entries.get(response_id)
        if entry is None or entry[0] != username:
            return None
        return entry[1]


def response_not_found(response_id: str, *, param: str | None = None) -> ClientError:
    return ClientError(
        f"Response with id '{response_id}' not found.",
        status=404,
        param=param,
        code="response_not_found",
    )


def follow_up_endpoint(
    catalog: Catalog,
    identity: Identity,
    request: ValidRequest,
    selected: EndpointRecord,
    slug: str,
    *,
    addressed: bool = False,
) -> EndpointRecord | ClientError:
    """The endpoint holding the previous response, for a request normal selection sent
    to `selected`: it must serve the same model (and, when the URL `addressed` a cluster,
    be on it), the caller must still pass both levels of rules for it, and its cluster
    must take the route."""
    if slug.lower() == selected.endpoint_slug.lower():
        return selected
    pinned = catalog.endpoint(slug)
    elsewhere = pinned is not None and (pinned.cluster, pinned.framework) != (
        selected.cluster,
        selected.framework,
    )
    if (
        pinned is None
        or pinned.model.casefold() != selected.model.casefold()
        or (addressed and elsewhere)
    ):
        return ClientError(
            "'previous_response_id' names a response made by another model or cluster; "
            "send the request where that response was made.",
            param="previous_response_id",
            code="previous_response_mismatch",
        )
    cluster = catalog.cluster_of(pinned)
    if not cluster.accepts(request.route) or not isinstance(
        authorize(identity, cluster, pinned), Allowed
    ):
        previous = str(request.body.get("previous_response_id"))
        return response_not_found(previous, param="previous_response_id")
    return pinned
