"""OpenAI's files and batches API, beside the driver: upload and read JSONL files, create,
read, list and cancel batches.  The batches themselves are run by `frontends.batch_runner`.

Every route decides who is calling as the listing routes do (the core's `credentials`
then `caller`), and only the owner sees a file or a batch (anyone else gets 404, as for
a file that does not exist).  A batch's model is checked at creation with the core's own
selection (`select_endpoint`, groups and domains at cluster and endpoint level), on the
first line's body; every line must name the same model and the batch's endpoint.  Files
live in the store's database (`BatchStore`), never on a path a user could name.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pydantic

from core import (
    JSON_HEADERS,
    ClientError,
    EndpointRecord,
    GatewayError,
    Identity,
    OpenAIRoute,
    clip,
    error_response,
    named,
    select_endpoint,
    validate_request,
)
from frontends.api_models import MAX_METADATA_PAIRS, BatchCreateRequest
from frontends.batch_delegation import delegates_batches
from frontends.gateway import Gateway, GatewayResponse
from frontends.listings import Listings
from frontends.store import BatchLog, BatchStore, FileRecord

__all__ = [
    "BATCH_URLS",
    "BatchLimits",
    "BatchLine",
    "Batches",
    "identity_from_json",
    "parse_batch_lines",
]

# The OpenAI routes a batch line may name, and the operation each is.
# (OpenAI's batch API takes chat, completions and embeddings lines; the Responses and
# Messages APIs are not batched here.)
_BATCHED = (OpenAIRoute.CHAT_COMPLETIONS, OpenAIRoute.COMPLETIONS, OpenAIRoute.EMBEDDINGS)
BATCH_URLS = {f"/v1/{route.value}": route for route in _BATCHED}
COMPLETION_WINDOWS = {"24h": timedelta(hours=24)}
# OpenAI lists up to 10,000 files a page (and that many unless asked for fewer).
MAX_FILES_LISTED = 10_000


@attrs.frozen(kw_only=True)
class BatchLimits:
    """What one user may upload and run (settings `BATCH_*`)."""

    max_file_bytes: int = 100 * 1024 * 1024
    max_lines: int = 50_000
    max_active: int = 1
    concurrency: int = 8


@attrs.frozen(kw_only=True)
class BatchLine:
    """One validated input line."""

    custom_id: str
    url: str
    body: Mapping[str, Any] = attrs.field(eq=False)

    @property
    def model(self) -> str:
        return str(self.body["model"])


def _invalid(message: str, *, param: str = "file", code: str = "invalid_file") -> ClientError:
    return ClientError(message, status=400, param=param, code=code)


def _not_found(what: str, ident: str) -> ClientError:
    return ClientError(f"No {what} with id '{clip(ident)}'.", status=404, code="not_found")


def parse_batch_lines(content: bytes, *, max_lines: int) -> list[BatchLine] | ClientError:
    """Every line of a batch input file, checked; the first mistake as a 400 naming its
    line (numbered from 1) and what is wrong with it."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return _invalid("The file is not UTF-8 text.")
    raw_lines = text.split("\n")
    if raw_lines and raw_lines[-1].strip() == "":
        raw_lines.pop()  # the newline that ends the last line
    if not raw_lines:
        return _invalid("The file has no lines; a batch needs at least one request.")
    if len(raw_lines) > max_lines:
        return _invalid(f"The file has {len(raw_lines)} lines; at most {max_lines} are allowed.")
    seen: dict[str, int] = {}
    lines: list[BatchLine] = []
    for number, raw in enumerate(raw_lines, 1):
        try:
            item = json.loads(raw)
        except (ValueError, RecursionError):
            return _invalid(f"Line {number} is not valid JSON.")
        if not isinstance(item, dict):
            return _invalid(f"Line {number} is not a JSON object.")
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            return _invalid(f"Line {number}: 'custom_id' must be a non-empty string.")
        if custom_id in seen:
            return _invalid(
                f"Line {number}: custom_id '{clip(custom_id)}' is already used by line "
                f"{seen[custom_id]}; each line needs its own."
            )
        seen[custom_id] = number
        if item.get("method") != "POST":
            return _invalid(f"Line {number}: 'method' must be \"POST\".")
        url = item.get("url")
        if url not in BATCH_URLS:
            known = ", ".join(BATCH_URLS)
            return _invalid(f"Line {number}: 'url' must be one of {known}.")
        body = item.get("body")
        if not isinstance(body, dict):
            return _invalid(f"Line {number}: 'body' must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model.strip():
            return _invalid(f"Line {number}: 'body.model' must be a non-empty string.")
        if body.get("stream") is True:
            return _invalid(f"Line {number}: streaming ('body.stream') is not allowed in a batch.")
        unknown = sorted(set(item) - {"custom_id", "method", "url", "body"})
        if unknown:
            return _invalid(f"Line {number}: unknown field '{clip(unknown[0])}'.")
        lines.append(BatchLine(custom_id=custom_id, url=url, body=body))
    return lines


def identity_to_json(identity: Identity) -> dict[str, Any]:
    return {
        "username": identity.username,
        "groups": sorted(identity.groups),
        "provider": identity.provider,
        "subject": identity.subject,
    }


def identity_from_json(data: Mapping[str, Any]) -> Identity:
    """The identity a batch's lines run as: the owner's when the batch was created (the
    token's expiry is not carried over: a batch outlives the call that made it)."""
    return Identity(
        username=data["username"],
        groups=frozenset(data.get("groups") or ()),
        provider=data.get("provider") or "static",
        subject=data.get("subject"),
    )


def _epoch(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())


def file_object(record: FileRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "object": "file",
        "bytes": record.bytes,
        "created_at": _epoch(record.created_at),
        "filename": record.filename,
        "purpose": record.purpose,
        "status": record.status,
        "status_details": None,
    }


def batch_object(batch: BatchLog) -> dict[str, Any]:
    """OpenAI's batch object for a stored batch."""
    errors = None
    if batch.status == "failed" and batch.result:
        errors = {"object": "list", "data": [{"code": "batch_failed", "message": batch.result}]}
    return {
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "errors": errors,
        "input_file_id": batch.input_file_id,
        "completion_window": batch.completion_window,
        "status": batch.status,
        "output_file_id": batch.output_file_id,
        "error_file_id": batch.error_file_id,
        "created_at": _epoch(batch.created_at),
        "in_progress_at": _epoch(batch.in_progress_at),
        "expires_at": _epoch(batch.expires_at),
        "finalizing_at": _epoch(batch.finalizing_at),
        "completed_at": _epoch(batch.completed_at),
        "failed_at": _epoch(batch.failed_at),
        "expired_at": _epoch(batch.expired_at),
        "cancelling_at": _epoch(batch.cancelling_at),
        "cancelled_at": _epoch(batch.cancelled_at),
        "request_counts": {
            "total": batch.total,
            "completed": batch.completed,
            "failed": batch.failed,
        },
        "metadata": dict(batch.metadata) if batch.metadata is not None else None,
        "model": batch.model,
    }


def _json(payload: Any, status: int = 200) -> GatewayResponse:
    return GatewayResponse(status=status, headers=JSON_HEADERS, body=json.dumps(payload).encode())


def _respond(error: GatewayError) -> GatewayResponse:
    response = error_response(error)
    return GatewayResponse(status=response.status, headers=response.headers, body=response.body)


class Batches:
    """The files and batches routes over one gateway's catalog and one store."""

    def __init__(
        self,
        gateway: Gateway,
        store: BatchStore,
        *,
        limits: BatchLimits | None = None,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[str | None], None] | None = None,
    ) -> None:
        self.gateway = gateway
        self.store = store
        self.limits = limits or BatchLimits()
        self._listings = Listings.of(gateway)
        self._clock = clock
        self._on_change = on_change or (lambda cancelled: None)

    def notify(self, callback: Callable[[str | None], None]) -> None:
        """Call `callback` whenever a batch is created (with None) or cancelled (with its
        id): the runner's wake-up."""
        self._on_change = callback

    def changed(self, cancelled: str | None = None) -> None:
        """A batch was created (or `cancelled`) by another route: wake the runner."""
        self._on_change(cancelled)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    # -- files ----------------------------------------------------------------------------

    async def upload(
        self,
        authorization: str | None,
        *,
        purpose: str | None,
        filename: str | None,
        content: bytes | None,
    ) -> GatewayResponse:
        caller = await self._listings.authenticate(authorization)
        if isinstance(caller, GatewayResponse):
            return caller
        if content is None:
            return _respond(
                _invalid("Send the file as the multipart field 'file'.", code="missing_file")
            )
        if purpose != "batch":
            return _respond(
                _invalid(
                    "'purpose' must be \"batch\" (the only purpose this gateway keeps files for).",
                    param="purpose",
                    code="invalid_purpose",
                )
            )
        if len(content) > self.limits.max_file_bytes:
            return _respond(
                _invalid(
                    f"The file has {len(content)} bytes; at most "
                    f"{self.limits.max_file_bytes} are allowed.",
                    code="file_too_large",
                )
            )
        lines = parse_batch_lines(content, max_lines=self.limits.max_lines)
        if isinstance(lines, ClientError):
            return _respond(lines)
        record = FileRecord(
            id=f"file-{uuid.uuid4().hex}",
            owner=caller.username,
            purpose=purpose,
            filename=(filename or "batch.jsonl")[:255],
            bytes=len(content),
            created_at=self._now(),
        )
        await self.store.call(self.store.add_file, record, content)
        return _json(file_object(record))

    async def list_files(
        self,
        authorization: str | None,
        purpose: str | None,
        *,
        after: str | None = None,
        limit: str | None = None,
        order: str | None = None,
    ) -> GatewayResponse:
        """OpenAI's paged list: `limit` 1 to 10,000 (the default), `order` by
        creation, `desc` (default) or `asc`, from the file after `after`."""
        caller = await self._listings.authenticate(authorization)
        if isinstance(caller, GatewayResponse):
            return caller
        try:
            count = MAX_FILES_LISTED if limit is None else int(limit)
        except ValueError:
            count = 0
        if not 1 <= count <= MAX_FILES_LISTED:
            return _respond(
                _invalid(
                    f"'limit' must be a whole number from 1 to {MAX_FILES_LISTED}.",
                    param="limit",
                    code="invalid_value",
                )
            )
        if order not in (None, "asc", "desc"):
            return _respond(
                _invalid('\'order\' must be "asc" or "desc".', param="order", code="invalid_value")
            )
        found = await self.store.call(
            self.store.list_files,
            caller.username,
            purpose=purpose,
            limit=count + 1,
            after=after,
            ascending=order == "asc",
        )
        page = found[:count]
        return _json(
            {
                "object": "list",
                "data": [file_object(r) for r in page],
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
                "has_more": len(found) > count,
            }
        )

    async def retrieve_file(self, authorization: str | None, file_id: str) -> GatewayResponse:
        caller = await self._listings.authenticate(authorization)
        if isinstance(caller, GatewayResponse):
            return caller
        record = await self.store.call(self.store.get_file, caller.username, file_id)
        if record is None:
            return _respond(_not_found("file", file_id))
        return _json(file_object(record))

    async def file_content(self, authorization: str | None, file_id: str) -> GatewayResponse:
        caller = await self._listings.authenticate(authorization)
        if isinstance(caller, GatewayResponse):
            return caller
        content = await self.store.call(self.store.file_content, caller.username, file_id)
        if content is None:
            return _respond(_not_found("file", file_id))
        return GatewayResponse(
            status=200, headers=(("content-type", "application/jsonl"),), body=content
        )

    async def delete_file(self, authorization: str | None, file_id: str) -> GatewayResponse:
        caller = await self._listings.authenticate(authorization)
        if isinstance(caller, GatewayResponse):
            return caller
        if not await self.store.call(self.store.delete_file, caller.username, file_id):
            return _respond(_not_found("file", file_id))
        return _json({"id": file_id, "object": "file", "deleted": True})

    # -- batches --------------------------------------------------------------------------

    async def create(self, authorization: str | None, body: bytes) -> GatewayResponse:
        caller = await self._listings.authenticate(authorization)
        if isinstance(caller, GatewayResponse):
            return caller
        request = _json_object(body)
        if isinstance(request, ClientError):
            return _respond(request)
        checked = _creation_fields(request)
        if isinstance(checked, ClientError):
            return _respond(checked)
        input_file_id, endpoint_url, window, metadata = checked
        owner = caller.username
        record = await self.store.call(self.store.get_file, owner, input_file_id)
        content = await self.store.call(self.store.file_content, owner, input_file_id)
        if record is None or content is None:
            return _respond(
                ClientError(
                    f"No file with id '{clip(input_file_id)}'.",
                    status=404,
                    param="input_file_id",
                    code="not_found",
                )
            )
        if record.purpose != "batch":
            return _respond(
                _invalid('The input file\'s purpose is not "batch".', param="input_file_id")
            )
        lines = parse_batch_lines(content, max_lines=self.limits.max_lines)
        if isinstance(lines, ClientError):
            return _respond(lines)
        chosen = self._select(caller, lines, endpoint_url)
        if isinstance(chosen, ClientError):
            return _respond(chosen)
        now = self._now()
        # An endpoint whose adaptor runs batches itself gets the whole file (delegated).
        delegated = delegates_batches(self.gateway.endpoint_adaptor(chosen.endpoint_slug))
        batch = BatchLog(
            id=f"batch_{uuid.uuid4().hex}",
            user_id=owner,
            input_file=input_file_id,
            cluster=chosen.cluster,
            framework=chosen.framework,
            model=chosen.model,  # the real name, if the lines named an alias
            status="validating",
            endpoint=endpoint_url,
            endpoint_slug=chosen.endpoint_slug,
            completion_window=window,
            metadata=metadata,
            identity=identity_to_json(caller),
            input_file_id=input_file_id,
            created_at=now,
            expires_at=now + COMPLETION_WINDOWS[window],
            total=len(lines),
            mode="delegated" if delegated else "builtin",
        )
        stored = await self.store.call(
            self.store.add_batch, batch, max_active=self.limits.max_active
        )
        if not stored:
            return _respond(
                ClientError(
                    f"You have {self.limits.max_active} unfinished batch(es), the most allowed; "
                    "wait for one to finish or cancel it.",
                    status=429,
                    type="rate_limit_error",
                    code="too_many_active_batches",
                )
            )
        self._on_change(None)
        return _json(batch_object(batch))

    def _select(
        self, caller: Identity, lines: list[BatchLine], endpoint_url: str
    ) -> EndpointRecord | ClientError:
        """The endpoint the batch runs on, chosen as the request path chooses it for the
        first line; every line must name the batch's endpoint and mean the same model
        (its real name, another spelling or an alias of it: `named`'s rule)."""
        first = lines[0]
        for number, line in enumerate(lines, 1):
            if line.url != endpoint_url:
                return _invalid(
                    f"Line {number}: 'url' is {line.url} but the batch's endpoint is "
                    f"{endpoint_url}.",
                    param="input_file_id",
                )
        route = BATCH_URLS[endpoint_url]
        valid = validate_request(route, "application/json", json.dumps(first.body).encode())
        if isinstance(valid, ClientError):
            return _invalid(f"Line 1: {valid.message}", param="input_file_id")
        chosen = select_endpoint(self.gateway.catalog, caller, valid)
        if isinstance(chosen, ClientError):
            return chosen
        for number, line in enumerate(lines, 1):
            if not named((chosen,), line.model):
                return _invalid(
                    f"Line {number}: model '{clip(line.model)}' differs from line 1's "
                    f"'{clip(first.model)}'; a batch runs one model.",
                    param="input_file_id",
                )
        return chosen

    async def retrieve(self, authorization: str | None, batch_id: str) -> GatewayResponse:
        caller = await self._listings.authenticate(authorization)
        if isinstance(caller, GatewayResponse):
            return caller
        batch = await self.store.call(self.store.get_batch, batch_id, owner=caller.username)
        if batch is None:
            return _respond(_not_found("batch", batch_id))
        return _json(batch_object(batch))

    async def list_batches(
        self, authorization: str | None, after: str | None, limit: str | None
    ) -> GatewayResponse:
        caller = await self._listings.authenticate(authorization)
        if isinstance(caller, GatewayResponse):
            return caller
        try:
            count = 20 if limit is None else int(limit)
        except ValueError:
            count = 0
        if not 1 <= count <= 100:
            return _respond(
                _invalid(
                    "'limit' must be a whole number from 1 to 100.",
                    param="limit",
                    code="invalid_value",
                )
            )
        found = await self.store.call(
            self.store.list_batches, caller.username, after=after, limit=count + 1
        )
        page = found[:count]
        return _json(
            {
                "object": "list",
                "data": [batch_object(b) for b in page],
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
                "has_more": len(found) > count,
            }
        )

    async def cancel(self, authorization: str | None, batch_id: str) -> GatewayResponse:
        caller = await self._listings.authenticate(authorization)
        if isinstance(caller, GatewayResponse):
            return caller
        batch = await self.store.call(
            self.store.request_cancel, caller.username, batch_id, self._now()
        )
        if batch is None:
            return _respond(_not_found("batch", batch_id))
        self._on_change(batch_id)
        return _json(batch_object(batch))


def _json_object(body: bytes) -> dict[str, Any] | ClientError:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return ClientError("The body is not valid JSON.", status=400, code="invalid_json")
    if not isinstance(data, dict):
        return ClientError("The body must be a JSON object.", status=400, code="invalid_json")
    return data


def _creation_fields(
    request: Mapping[str, Any],
) -> tuple[str, str, str, dict[str, str] | None] | ClientError:
    """The creation body, checked by the model the OpenAPI document shows; the first
    mistake (an unknown field before any other) named with its field."""
    try:
        body = BatchCreateRequest.model_validate(request)
    except pydantic.ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        return _creation_refusal(str(first["loc"][0]), first["type"])
    return body.input_file_id, body.endpoint, body.completion_window, body.metadata


def _creation_refusal(field: str, kind: str) -> ClientError:
    if kind == "extra_forbidden":
        return _invalid(
            f"Unknown field '{clip(field)}'.", param=clip(field), code="unknown_parameter"
        )
    if field == "input_file_id":
        return _invalid(
            "'input_file_id' is required.", param=field, code="missing_required_parameter"
        )
    if field == "endpoint":
        known = ", ".join(BATCH_URLS)
        return _invalid(f"'endpoint' must be one of {known}.", param=field, code="invalid_value")
    if field == "completion_window":
        return _invalid(
            "'completion_window' must be \"24h\".", param=field, code="invalid_value"
        )
    return _invalid(
        f"'metadata' must be an object of at most {MAX_METADATA_PAIRS} string values.",
        param="metadata",
        code="invalid_value",
    )
