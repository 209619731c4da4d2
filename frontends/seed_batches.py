"""The seed system's batch routes, on the same batches as OpenAI's API.

`POST /resource_server/{cluster}/{framework}/v1/batches` takes the seed's body
`{"input_file", "model", "output_folder_path"?}` (any other field is refused with a 400
naming it).  The endpoint is the one the URL and `model` name, chosen by the core with
groups and domains checked at cluster and endpoint level; then:

* an endpoint whose adaptor runs batches itself (`has_batch_enabled`) gets the batch
  delegated, with `input_file` handed to its `submit_batch` as the seed hands it.  An
  adaptor that runs from a copy the gateway makes (`batch_input_from_files`, as the
  command adaptor does) needs `input_file` to name a file of the caller's in /v1/files;
* any other endpoint's batch is run by the built-in runner, from a file of the
  caller's in /v1/files (anything else is a 400): every line must call the same route
  and name the route's `model`.

Either way the batch counts against the caller's active batches (the OpenAI routes'
limit), and a second unfinished batch on the same `input_file` is refused, as the seed
refuses it.  The answers have the seed's shapes: creation `{"batch_id", "input_file",
"status"}`, the list a JSON array of `{"batch_id", "cluster", "framework", "input_file",
"in_progress_at", "completed_at", "failed_at", "status"}` (times in ISO 8601, or null), a
batch's status a JSON string, its result a JSON string (the output file's text, or the
adaptor's result) or a 400 saying why there is none yet.  Statuses are the seed's
`BatchStatusEnum`, read off the stored OpenAI status (`seed_status_of`).  Only the owner
sees a batch: anyone else gets 404, as for one that does not exist.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from core import (
    JSON_HEADERS,
    ClientError,
    GatewayError,
    Identity,
    SeedStatus,
    error_response,
    seed_status_of,
    select_batch_endpoint,
    validate_request,
)
from frontends.batch_delegation import delegates_batches
from frontends.batches import (
    BATCH_URLS,
    COMPLETION_WINDOWS,
    Batches,
    BatchLine,
    identity_to_json,
    parse_batch_lines,
)
from frontends.gateway import GatewayResponse
from frontends.listings import Listings
from frontends.store import BatchLog

__all__ = ["SEED_FIELDS", "SeedBatches", "seed_summary"]

SEED_FIELDS = ("input_file", "model", "output_folder_path")
# Every status a batch is stored with (OpenAI's), to find those of one seed status.
_OPENAI_STATUSES = (
    "validating",
    "in_progress",
    "finalizing",
    "cancelling",
    "completed",
    "failed",
    "expired",
    "cancelled",
)
_WINDOW = "24h"
_MAX_TEXT = 4096


def _json(payload: Any, status: int = 200) -> GatewayResponse:
    return GatewayResponse(status=status, headers=JSON_HEADERS, body=json.dumps(payload).encode())


def _respond(error: GatewayError) -> GatewayResponse:
    response = error_response(error)
    return GatewayResponse(status=response.status, headers=response.headers, body=response.body)


def _bad(message: str, *, param: str | None = None, code: str = "invalid_value") -> GatewayResponse:
    return _respond(ClientError(message, status=400, param=param, code=code))


def _not_found(batch_id: str) -> GatewayResponse:
    return _respond(ClientError(f"No batch with id '{batch_id}'.", status=404, code="not_found"))


def _when(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def seed_summary(batch: BatchLog) -> dict[str, Any]:
    """A batch as the seed's list shows it."""
    return {
        "batch_id": batch.id,
        "cluster": batch.cluster,
        "framework": batch.framework,
        "input_file": batch.input_file,
        "in_progress_at": _when(batch.in_progress_at),
        "completed_at": _when(batch.completed_at),
        "failed_at": _when(batch.failed_at),
        "status": seed_status_of(batch.status).value,
    }


def _seed_body(body: bytes) -> dict[str, Any] | GatewayResponse:
    """The seed's body, checked: an object of its three fields and no other."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return _bad("The body is not valid JSON.", code="invalid_json")
    if not isinstance(data, dict):
        return _bad("The body must be a JSON object.", code="invalid_json")
    unknown = sorted(set(data) - set(SEED_FIELDS))
    if unknown:
        return _bad(
            f"Unknown field '{unknown[0]}'; a batch takes {', '.join(SEED_FIELDS)}.",
            param=unknown[0],
            code="unknown_parameter",
        )
    for name in ("input_file", "model"):
        value = data.get(name)
        if not isinstance(value, str) or not value.strip() or len(value) > _MAX_TEXT:
            return _bad(
                f"'{name}' is required: a non-empty string.",
                param=name,
                code="missing_required_parameter",
            )
    folder = data.get("output_folder_path")
    if folder is not None and (not isinstance(folder, str) or len(folder) > _MAX_TEXT):
        return _bad("'output_folder_path' must be a string.", param="output_folder_path")
    return data


class SeedBatches:
    """The seed's batch routes over the OpenAI routes' `Batches` (its store, limits and
    runner wake-up)."""

    def __init__(self, batches: Batches) -> None:
        self.batches = batches
        self.gateway = batches.gateway
        self.store = batches.store
        self._listings = Listings.of(batches.gateway)

    async def create(
        self, authorization: str | None, cluster: str, framework: str, body: bytes
    ) -> GatewayResponse:
        caller = await self._listings.authenticate(authorization)
        if isinstance(caller, GatewayResponse):
            return caller
        data = _seed_body(body)
        if isinstance(data, GatewayResponse):
            return data
        input_file: str = data["input_file"]
        model: str = data["model"]
        catalog = self.gateway.catalog
        endpoint = select_batch_endpoint(
            catalog, caller, cluster=cluster, framework=framework, model=model
        )
        if isinstance(endpoint, ClientError):
            return _respond(endpoint)
        adaptor = self.gateway.endpoint_adaptor(endpoint.endpoint_slug)
        delegated = delegates_batches(adaptor)
        needs_file = not delegated or bool(getattr(adaptor, "batch_input_from_files", False))
        lines = await self._input_lines(caller, input_file)
        if isinstance(lines, GatewayResponse):
            return lines
        if lines is None and needs_file:
            return _bad(
                "'input_file' must be the id of a file you uploaded to /v1/files with "
                f'purpose "batch"; you have no such file {input_file!r}.',
                param="input_file",
                code="invalid_file",
            )
        # (Otherwise a delegating adaptor reads its input_file its own way, as the seed's.)
        url = ""
        if lines is not None:
            checked = self._check_lines(caller, lines, cluster, framework, model, delegated)
            if isinstance(checked, GatewayResponse):
                return checked
            url = checked
        owner = caller.username
        ongoing = await self.store.call(self.store.unfinished_with_input, owner, input_file)
        if ongoing is not None:
            return _bad(
                f"Input file {input_file} is already used by unfinished batch {ongoing.id}.",
                param="input_file",
                code="batch_ongoing",
            )
        now = self.batches._now()
        batch = BatchLog(
            id=f"batch_{uuid.uuid4().hex}",
            user_id=owner,
            input_file=input_file,
            output_folder_path=data.get("output_folder_path"),
            cluster=endpoint.cluster,
            framework=endpoint.framework,
            model=endpoint.model,
            status="validating",
            endpoint=url,
            endpoint_slug=endpoint.endpoint_slug,
            completion_window=_WINDOW,
            identity=identity_to_json(caller),
            input_file_id=input_file if lines is not None else "",
            created_at=now,
            expires_at=now + COMPLETION_WINDOWS[_WINDOW],
            total=0 if lines is None else len(lines),
            mode="delegated" if delegated else "builtin",
        )
        limit = self.batches.limits.max_active
        if not await self.store.call(self.store.add_batch, batch, max_active=limit):
            return _respond(
                ClientError(
                    f"You have {limit} unfinished batch(es), the most allowed; "
                    "wait for one to finish.",
                    status=429,
                    type="rate_limit_error",
                    code="too_many_active_batches",
                )
            )
        self.batches.changed()
        return _json(
            {
                "batch_id": batch.id,
                "input_file": batch.input_file,
                "status": seed_status_of(batch.status).value,
            }
        )

    async def _input_lines(
        self, caller: Identity, input_file: str
    ) -> list[BatchLine] | GatewayResponse | None:
        """The lines of the caller's batch file `input_file` (a /v1/files id), a 400
        saying what is wrong with them, or None when the caller has no such file."""
        record = await self.store.call(self.store.get_file, caller.username, input_file)
        if record is None or record.purpose != "batch":
            return None
        content = await self.store.call(self.store.file_content, caller.username, input_file)
        if content is None:
            return None
        lines = parse_batch_lines(content, max_lines=self.batches.limits.max_lines)
        return _respond(lines) if isinstance(lines, ClientError) else lines

    def _means(self, name: str, model: str) -> bool:
        """Whether two names a client gave mean one model (a name and its alias)."""
        catalog = self.gateway.catalog
        return {e.model for e in catalog.serving(name)} == {e.model for e in catalog.serving(model)}

    def _check_lines(
        self,
        caller: Identity,
        lines: list[BatchLine],
        cluster: str,
        framework: str,
        model: str,
        delegated: bool,
    ) -> str | GatewayResponse:
        """Every line calls one route with the route's model; for the built-in runner, the
        cluster serves that route and line 1 is a valid request.  The route's URL."""
        url = lines[0].url
        for number, line in enumerate(lines, 1):
            if line.url != url:
                return _bad(
                    f"Line {number}: 'url' is {line.url} but line 1's is {url}; a batch "
                    "calls one route.",
                    param="input_file",
                    code="invalid_file",
                )
            if line.model.casefold() != model.casefold() and not self._means(line.model, model):
                return _bad(
                    f"Line {number}: model '{line.model}' is not the batch's model '{model}'.",
                    param="input_file",
                    code="invalid_file",
                )
        if delegated:
            return url
        route = BATCH_URLS[url]
        chosen = select_batch_endpoint(
            self.gateway.catalog,
            caller,
            cluster=cluster,
            framework=framework,
            model=model,
            route=route,
        )
        if isinstance(chosen, ClientError):
            return _respond(chosen)
        valid = validate_request(route, "application/json", json.dumps(lines[0].body).encode())
        if isinstance(valid, ClientError):
            return _bad(f"Line 1: {valid.message}", param="input_file", code="invalid_file")
        return url

    async def _owned(
        self, authorization: str | None, batch_id: str
    ) -> tuple[Identity, BatchLog] | GatewayResponse:
        caller = await self._listings.authenticate(authorization)
        if isinstance(caller, GatewayResponse):
            return caller
        batch = await self.store.call(self.store.get_batch, batch_id, owner=caller.username)
        return _not_found(batch_id) if batch is None else (caller, batch)

    async def list_batches(self, authorization: str | None, status: str | None) -> GatewayResponse:
        caller = await self._listings.authenticate(authorization)
        if isinstance(caller, GatewayResponse):
            return caller
        statuses = None
        if status is not None:
            try:
                wanted = SeedStatus(status)
            except ValueError:
                known = ", ".join(s.value for s in SeedStatus)
                return _bad(f"'status' must be one of {known}.", param="status")
            statuses = [s for s in _OPENAI_STATUSES if seed_status_of(s) is wanted]
        found = await self.store.call(self.store.batches_of, caller.username, statuses=statuses)
        return _json([seed_summary(batch) for batch in found])

    async def status(self, authorization: str | None, batch_id: str) -> GatewayResponse:
        owned = await self._owned(authorization, batch_id)
        if isinstance(owned, GatewayResponse):
            return owned
        return _json(seed_status_of(owned[1].status).value)

    async def result(self, authorization: str | None, batch_id: str) -> GatewayResponse:
        owned = await self._owned(authorization, batch_id)
        if isinstance(owned, GatewayResponse):
            return owned
        caller, batch = owned
        status = seed_status_of(batch.status)
        if status is SeedStatus.failed:
            return _bad(
                f"Batch failed: {batch.result or 'it was ' + batch.status}.",
                code="batch_failed",
            )
        if status is not SeedStatus.completed:
            return _bad("Batch not completed yet. Results not ready.", code="batch_not_completed")
        if batch.output_file_id is not None:
            content = await self.store.call(
                self.store.file_content, caller.username, batch.output_file_id
            )
            if content is not None:
                return _json(content.decode("utf-8", "replace"))
        return _json(batch.result or "")
