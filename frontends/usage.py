"""Usage, asked for: the command line's table and `GET /resource_server/usage`.

Both read the request log through the store's usage query.  Over HTTP, a caller sees
their own usage; an operator (setting `INFERENCE_GATEWAY_OPERATORS`: usernames, and
groups written `group:NAME`) may ask for everyone's with `all=true`, or for one user's
with `user=`; anyone else asking for that gets 403.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime

import attrs

from core import JSON_HEADERS, ClientError, Identity, clip, error_response
from frontends.gateway import GatewayResponse
from frontends.store import GroupBy, Store, UsageRow, usage

__all__ = ["GROUPINGS", "Operators", "parse_since", "usage_answer", "usage_table"]

GROUPINGS: tuple[GroupBy, ...] = ("user", "model", "day")
GROUP_PREFIX = "group:"


@attrs.frozen
class Operators:
    """Who may see everyone's usage: these usernames, and members of these groups."""

    usernames: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()

    @classmethod
    def of(cls, entries: Iterable[str]) -> Operators:
        """From the setting's entries: `group:NAME` is a group, anything else a username."""
        users, groups = set(), set()
        for entry in entries:
            if entry.startswith(GROUP_PREFIX):
                groups.add(entry.removeprefix(GROUP_PREFIX))
            else:
                users.add(entry)
        return cls(frozenset(users), frozenset(groups))

    def include(self, identity: Identity) -> bool:
        return identity.username in self.usernames or bool(self.groups & set(identity.groups))


def parse_since(text: str) -> date | datetime:
    """`2026-11-01` (midnight UTC) or an ISO time (without an offset, UTC)."""
    try:
        if "T" not in text and " " not in text:
            return date.fromisoformat(text)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"since: not a date (YYYY-MM-DD) or ISO time: {clip(text)!r}") from None
    return moment if moment.utcoffset() is not None else moment.replace(tzinfo=UTC)


def _refuse(message: str, status: int = 400, param: str | None = None) -> GatewayResponse:
    kind = "invalid_request_error" if status == 400 else "permission_error"
    code = "invalid_value" if status == 400 else "not_an_operator"
    response = error_response(
        ClientError(message, status=status, type=kind, code=code, param=param)
    )
    return GatewayResponse(status=response.status, headers=response.headers, body=response.body)


def _row(row: UsageRow) -> dict[str, object]:
    key = row.key.isoformat() if isinstance(row.key, date) else row.key
    return {
        "key": key,
        "requests": row.requests,
        "prompt_tokens": row.prompt_tokens,
        "completion_tokens": row.completion_tokens,
        "total_tokens": row.total_tokens,
        "estimated_tokens": row.estimated_tokens,
    }


async def usage_answer(
    store: Store, identity: Identity, params: Mapping[str, str], operators: Operators
) -> GatewayResponse:
    """The caller's usage (everyone's for an operator with `all=true`) as JSON:
    `{"object": "usage", "by", "user", "data": [{"key", "requests", ...tokens}]}`."""
    by = params.get("by", "user")
    if by not in GROUPINGS:
        return _refuse(f"by must be one of {', '.join(GROUPINGS)}", param="by")
    everyone = params.get("all", "false").lower()
    if everyone not in ("true", "false", "1", "0"):
        return _refuse("all must be true or false", param="all")
    operator = operators.include(identity)
    wants_all = everyone in ("true", "1")
    user = params.get("user")
    if (wants_all or (user is not None and user != identity.username)) and not operator:
        return _refuse("Only an operator may see other users' usage.", status=403)
    if not wants_all and user is None:
        user = identity.username
    since: date | datetime | None = None
    if params.get("since"):
        try:
            since = parse_since(params["since"])
        except ValueError as exc:
            return _refuse(str(exc), param="since")
    rows = await usage(store, user=user, model=params.get("model"), since=since, by=by)
    payload = {"object": "usage", "by": by, "user": user, "data": [_row(r) for r in rows]}
    return GatewayResponse(status=200, headers=JSON_HEADERS, body=json.dumps(payload).encode())


def usage_table(rows: Sequence[UsageRow], by: GroupBy) -> str:
    """The command line's table: one line per group and a total."""
    header: tuple[str, ...] = (by, "requests", "prompt", "completion", "total", "estimated")
    lines: list[tuple[str, ...]] = [header]
    for row in rows:
        key = (
            "-"
            if row.key is None
            else (row.key.isoformat() if isinstance(row.key, date) else row.key)
        )
        lines.append(
            (
                key,
                str(row.requests),
                str(row.prompt_tokens),
                str(row.completion_tokens),
                str(row.total_tokens),
                str(row.estimated_tokens),
            )
        )
    lines.append(
        (
            "total",
            str(sum(r.requests for r in rows)),
            str(sum(r.prompt_tokens for r in rows)),
            str(sum(r.completion_tokens for r in rows)),
            str(sum(r.total_tokens for r in rows)),
            str(sum(r.estimated_tokens for r in rows)),
        )
    )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]

    def render(line: tuple[str, ...]) -> str:
        cells = [line[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True)]
        return "  ".join(cells).rstrip()

    return "\n".join(render(line) for line in lines)
