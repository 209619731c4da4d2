"""Cassettes: recorded backend exchanges and gateway conversations, as plain records.

Theory of operation.  A cassette is a file of records.  Whatever the file format, loading
produces the same model, so replay has one code path:

* `Exchange`: one backend call as a transport saw it, the `RecordedRequest` (method,
  URL, headers, body) and the `RecordedResponse` (status, headers, and either the whole
  `body` or the stream's `chunks`, each with its time since the stream opened).  A call
  that failed below HTTP keeps the name of the `TransportError` class in `error`; a
  stream the reader abandoned is marked `cancelled`.
* `Conversation`: one client request to the gateway (`ClientRequest`), the gateway's
  answer (a `RecordedResponse`; for a stream, the events it relayed) and the backend
  exchanges that request caused, so a whole conversation replays offline.
* `Fixtures`: the catalog (`clusters.json`, `endpoints.json`) the conversations were
  recorded with, so a gateway-level cassette is self-contained.

Two formats load into it.  Ours is JSON Lines, one record per line with a `type` of
`exchange`, `conversation` or `fixtures`; bodies are UTF-8 text under `body`/`data`, or
base64 under `body_b64`/`data_b64` when they are not.  go-vcr v2 YAML (the format of
`tests/cassettes/openai-go-vcr`) becomes exchanges; a streamed answer (an
`text/event-stream` content type) is split into its SSE events, one chunk each, all at
time 0 because go-vcr keeps no timing.

Secrets never reach a file: `write_records` redacts secret headers (see
`redact_headers`) and the client's Authorization.  Loading does not redact (a file we
did not write may still hold one; it is the reader's data).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import attrs

from transports._base import Headers, _first_header, _headers

__all__ = [
    "REDACTED",
    "SECRET_HEADERS",
    "Caller",
    "Cassette",
    "CassetteError",
    "Chunk",
    "ClientRequest",
    "Conversation",
    "Exchange",
    "Fixtures",
    "RecordedRequest",
    "RecordedResponse",
    "append_record",
    "exchange_from_json",
    "load_cassette",
    "record_to_json",
    "redact_headers",
    "redact_value",
    "split_sse",
    "write_records",
]

REDACTED = "<redacted>"
SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "api-key",
        "x-api-key",
        "openai-api-key",
        "cookie",
        "set-cookie",
    }
)
# `Bearer <token68>` and nothing more; a challenge (`Bearer realm="..."`) is not a secret.
_BEARER = re.compile(r"^\s*bearer\s+[A-Za-z0-9._~+/-]+=*\s*$", re.IGNORECASE)


class CassetteError(ValueError):
    """A cassette file that cannot be read; the message names the file and the record."""


_SCHEME = re.compile(r"^\s*([A-Za-z][A-Za-z0-9._-]*)\s+\S")


def redact_value(value: str) -> str:
    """`REDACTED`, keeping an authorization scheme: `Bearer sk-1` -> `Bearer <redacted>`."""
    scheme = _SCHEME.match(value)
    return f"{scheme.group(1)} {REDACTED}" if scheme else REDACTED


def redact_headers(headers: Iterable[tuple[str, str]]) -> Headers:
    """Secret headers, and any header whose value looks like a bearer token, redacted."""
    return tuple(
        (name, redact_value(value))
        if name.lower() in SECRET_HEADERS or _BEARER.match(value)
        else (name, value)
        for name, value in headers
    )


# -- the model ----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Chunk:
    """One piece of a streamed body and when it arrived (seconds after the stream opened)."""

    data: bytes
    at: float = 0.0


def _chunks(value: Iterable[Chunk] | None) -> tuple[Chunk, ...] | None:
    return None if value is None else tuple(value)


def _upper(value: str) -> str:
    return value.upper()


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(str(v) for v in value)


def _exchanges(value: Iterable[Exchange]) -> tuple[Exchange, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class RecordedRequest:
    method: str = attrs.field(converter=_upper)
    url: str
    headers: Headers = attrs.field(default=(), converter=_headers)
    body: bytes = b""


@attrs.frozen(kw_only=True)
class RecordedResponse:
    """A whole answer (`body`) or a streamed one (`chunks`, not None), or a failure.

    `status` is 0 when no HTTP answer came (`error` names the `TransportError` class).
    A stream may also carry `error` (it broke after these chunks) or `cancelled` (the
    reader closed it before the end).
    """

    status: int
    headers: Headers = attrs.field(default=(), converter=_headers)
    body: bytes = b""
    chunks: tuple[Chunk, ...] | None = attrs.field(default=None, converter=_chunks)
    cancelled: bool = False
    error: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.chunks is not None and self.body:
            raise ValueError("a recorded response has a body or chunks, not both")

    @property
    def is_stream(self) -> bool:
        return self.chunks is not None

    @property
    def content(self) -> bytes:
        """The whole body, also of a stream (its chunks joined)."""
        if self.chunks is None:
            return self.body
        return b"".join(c.data for c in self.chunks)

    def header(self, name: str) -> str | None:
        return _first_header(self.headers, name)


@attrs.frozen(kw_only=True)
class Exchange:
    request: RecordedRequest
    response: RecordedResponse


@attrs.frozen(kw_only=True)
class Caller:
    """Who the identity provider said the client was, kept so replay needs no tokens."""

    username: str
    groups: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    provider: str = "static"


@attrs.frozen(kw_only=True)
class ClientRequest:
    """A `GatewayRequest` as recorded: `route` is the OpenAI route (`chat/completions`).

    `authorization` keeps only its scheme in a file (`Bearer <redacted>`); `caller` says
    whom it identified.  With no caller, `refusal` says how the identity provider said
    no: `rejected:<reason>`, `refused:<rule>` or `unavailable` (None: it found no one).
    """

    route: str
    body: bytes
    content_type: str | None = None
    authorization: str | None = None
    cluster: str | None = None
    framework: str | None = None
    caller: Caller | None = None
    refusal: str | None = None


@attrs.frozen(kw_only=True)
class Conversation:
    request: ClientRequest
    response: RecordedResponse
    exchanges: tuple[Exchange, ...] = attrs.field(default=(), converter=_exchanges)


@attrs.frozen(kw_only=True)
class Fixtures:
    """The text of `clusters.json` and `endpoints.json` the conversations ran against."""

    clusters: str
    endpoints: str


Record = Exchange | Conversation | Fixtures


@attrs.frozen(kw_only=True)
class Cassette:
    path: str
    format: str  # "jsonl" or "go-vcr"
    exchanges: tuple[Exchange, ...] = ()
    conversations: tuple[Conversation, ...] = ()
    fixtures: Fixtures | None = None

    def all_exchanges(self) -> tuple[Exchange, ...]:
        """Top-level exchanges, then those of each conversation, in recorded order."""
        nested = tuple(e for c in self.conversations for e in c.exchanges)
        return self.exchanges + nested


# -- JSON Lines: writing ---------------------------------------------------------------------


def _bytes_json(value: bytes, key: str) -> dict[str, str]:
    try:
        return {key: value.decode("utf-8")}
    except UnicodeDecodeError:
        return {f"{key}_b64": base64.b64encode(value).decode("ascii")}


def _response_json(response: RecordedResponse) -> dict[str, Any]:
    out: dict[str, Any] = {
        "status": response.status,
        "headers": [list(h) for h in redact_headers(response.headers)],
    }
    if response.chunks is None:
        out.update(_bytes_json(response.body, "body"))
    else:
        out["chunks"] = [
            {"at": round(c.at, 6), **_bytes_json(c.data, "data")} for c in response.chunks
        ]
    if response.cancelled:
        out["cancelled"] = True
    if response.error is not None:
        out["error"] = response.error
    return out


def _exchange_json(exchange: Exchange) -> dict[str, Any]:
    request = exchange.request
    return {
        "type": "exchange",
        "request": {
            "method": request.method,
            "url": request.url,
            "headers": [list(h) for h in redact_headers(request.headers)],
            **_bytes_json(request.body, "body"),
        },
        "response": _response_json(exchange.response),
    }


def record_to_json(record: Record) -> dict[str, Any]:
    """The JSON object of one cassette line, secrets redacted."""
    if isinstance(record, Exchange):
        return _exchange_json(record)
    if isinstance(record, Fixtures):
        return {
            "type": "fixtures",
            "clusters": json.loads(record.clusters),
            "endpoints": json.loads(record.endpoints),
        }
    request = record.request
    caller = request.caller
    return {
        "type": "conversation",
        "request": {
            "route": request.route,
            **_bytes_json(request.body, "body"),
            "content_type": request.content_type,
            "authorization": None
            if request.authorization is None
            else redact_value(request.authorization),
            "cluster": request.cluster,
            "framework": request.framework,
            "caller": None
            if caller is None
            else {
                "username": caller.username,
                "groups": list(caller.groups),
                "provider": caller.provider,
            },
            "refusal": request.refusal,
        },
        "response": _response_json(record.response),
        "exchanges": [_exchange_json(e) for e in record.exchanges],
    }


def _line(record: Record) -> str:
    return json.dumps(record_to_json(record), ensure_ascii=False, separators=(",", ":")) + "\n"


def append_record(path: Path, record: Record) -> None:
    """Append one record as one line (one `write` of a file opened for appending)."""
    with path.open("a", encoding="utf-8") as handle:
        handle.write(_line(record))


def write_records(target: Path | TextIO, records: Iterable[Record]) -> None:
    """Write records as JSON Lines to a path (replacing it) or an open text file."""
    if isinstance(target, Path):
        with target.open("w", encoding="utf-8") as handle:
            write_records(handle, records)
        return
    for record in records:
        target.write(_line(record))


# -- JSON Lines: reading ----------------------------------------------------------------------


def _read_bytes(data: Mapping[str, Any], key: str) -> bytes:
    if f"{key}_b64" in data:
        return base64.b64decode(data[f"{key}_b64"])
    value = data.get(key, "")
    if not isinstance(value, str):
        raise TypeError(f"'{key}' must be a string")
    return value.encode("utf-8")


def _pairs(value: Any) -> Headers:
    if isinstance(value, Mapping):
        return _headers(value)
    return tuple((str(k), str(v)) for k, v in value or ())


def _response_from_json(data: Mapping[str, Any]) -> RecordedResponse:
    raw_chunks = data.get("chunks")
    chunks = (
        None
        if raw_chunks is None
        else tuple(
            Chunk(data=_read_bytes(c, "data"), at=float(c.get("at", 0.0))) for c in raw_chunks
        )
    )
    return RecordedResponse(
        status=int(data["status"]),
        headers=_pairs(data.get("headers")),
        body=b"" if chunks is not None else _read_bytes(data, "body"),
        chunks=chunks,
        cancelled=bool(data.get("cancelled", False)),
        error=data.get("error"),
    )


def exchange_from_json(data: Mapping[str, Any]) -> Exchange:
    request = data["request"]
    return Exchange(
        request=RecordedRequest(
            method=request["method"],
            url=request["url"],
            headers=_pairs(request.get("headers")),
            body=_read_bytes(request, "body"),
        ),
        response=_response_from_json(data["response"]),
    )


def _conversation_from_json(data: Mapping[str, Any]) -> Conversation:
    request = data["request"]
    caller = request.get("caller")
    return Conversation(
        request=ClientRequest(
            route=request["route"],
            body=_read_bytes(request, "body"),
            content_type=request.get("content_type"),
            authorization=request.get("authorization"),
            cluster=request.get("cluster"),
            framework=request.get("framework"),
            caller=None
            if caller is None
            else Caller(
                username=caller["username"],
                groups=tuple(caller.get("groups", ())),
                provider=caller.get("provider", "static"),
            ),
            refusal=request.get("refusal"),
        ),
        response=_response_from_json(data["response"]),
        exchanges=tuple(exchange_from_json(e) for e in data.get("exchanges", ())),
    )


def _jsonl_records(path: Path, text: str) -> Iterator[Record]:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            kind = data.get("type")
            if kind == "exchange":
                yield exchange_from_json(data)
            elif kind == "conversation":
                yield _conversation_from_json(data)
            elif kind == "fixtures":
                yield Fixtures(
                    clusters=json.dumps(data["clusters"]), endpoints=json.dumps(data["endpoints"])
                )
            else:
                raise ValueError(f"unknown record type {kind!r}")
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise CassetteError(f"{path}: line {number}: {type(exc).__name__}: {exc}") from None


# -- go-vcr v2 YAML -----------------------------------------------------------------------------


def split_sse(text: bytes) -> tuple[bytes, ...]:
    """A raw SSE body split into events, each keeping its terminating blank line."""
    normalised = text.replace(b"\r\n", b"\n")
    events: list[bytes] = []
    for part in normalised.split(b"\n\n"):
        if part.strip(b"\n"):
            events.append(part.strip(b"\n") + b"\n\n")
    return tuple(events)


def _vcr_headers(value: Any) -> Headers:
    pairs: list[tuple[str, str]] = []
    for name, values in (value or {}).items():
        for item in values if isinstance(values, list) else [values]:
            pairs.append((str(name), str(item)))
    return tuple(pairs)


def _vcr_text(value: Any) -> bytes:
    return b"" if value is None else str(value).encode("utf-8")


def _vcr_exchange(interaction: Mapping[str, Any]) -> Exchange:
    request = interaction["request"]
    response = interaction["response"]
    headers = _vcr_headers(response.get("headers"))
    body = _vcr_text(response.get("body"))
    content_type = (_first_header(headers, "content-type") or "").lower()
    streamed = content_type.startswith("text/event-stream")
    return Exchange(
        request=RecordedRequest(
            method=request.get("method", "GET"),
            url=request["url"],
            headers=_vcr_headers(request.get("headers")),
            body=_vcr_text(request.get("body")),
        ),
        response=RecordedResponse(
            status=int(response["code"]),
            headers=headers,
            body=b"" if streamed else body,
            chunks=tuple(Chunk(data=e) for e in split_sse(body)) if streamed else None,
        ),
    )


def _go_vcr_records(path: Path, text: str) -> Iterator[Record]:
    import yaml

    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CassetteError(f"{path}: not YAML: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("interactions"), list):
        raise CassetteError(f"{path}: not a go-vcr cassette (no 'interactions' list)")
    if document.get("version") not in (1, 2):
        raise CassetteError(f"{path}: go-vcr version {document.get('version')!r} is not 1 or 2")
    for index, interaction in enumerate(document["interactions"]):
        try:
            yield _vcr_exchange(interaction)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise CassetteError(
                f"{path}: interaction {index}: {type(exc).__name__}: {exc}"
            ) from None


# -- loading ------------------------------------------------------------------------------------


def _is_yaml(path: Path, text: str) -> bool:
    if path.suffix.lower() in (".yaml", ".yml"):
        return True
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        return False
    return not text.lstrip().startswith("{")


def load_cassette(path: Path | str) -> Cassette:
    """Read our JSON Lines or a go-vcr v2 YAML cassette into the same model."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CassetteError(f"{path}: cannot read: {exc}") from None
    yaml_format = _is_yaml(path, text)
    records: Sequence[Record] = list(
        _go_vcr_records(path, text) if yaml_format else _jsonl_records(path, text)
    )
    fixtures = [r for r in records if isinstance(r, Fixtures)]
    if len(fixtures) > 1:
        raise CassetteError(f"{path}: more than one 'fixtures' record")
    return Cassette(
        path=str(path),
        format="go-vcr" if yaml_format else "jsonl",
        exchanges=tuple(r for r in records if isinstance(r, Exchange)),
        conversations=tuple(r for r in records if isinstance(r, Conversation)),
        fixtures=fixtures[0] if fixtures else None,
    )
