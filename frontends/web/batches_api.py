"""OpenAI's files and batches routes; the logic is `frontends.batches.Batches`."""

from __future__ import annotations

import anyio
from quart import Blueprint, Response, current_app, request

from frontends.api_models import (
    BatchCreateRequest,
    BatchList,
    BatchObject,
    FileDeleted,
    FileList,
    FileObject,
    FileUpload,
    ListBatchesQuery,
    ListFilesQuery,
)
from frontends.batches import Batches
from frontends.web.convert import to_quart
from frontends.web.openapi import AUTH_ERRORS, Operation, documented

__all__ = ["BATCHES_KEY", "UPLOAD_ENDPOINT", "batches_api"]

BATCHES_KEY = "inference_gateway_batches"
UPLOAD_ENDPOINT = "batches_api.upload_file"

batches_api = Blueprint("batches_api", __name__, url_prefix="/v1")

NOT_FOUND = (*AUTH_ERRORS, 404)
TAGS = ("files and batches",)


def _batches() -> Batches:
    batches: Batches = current_app.extensions[BATCHES_KEY]
    return batches


def _authorization() -> str | None:
    return request.headers.get("Authorization")


@batches_api.post("/files")
@documented(
    Operation(
        summary="Upload a batch input file (JSONL).",
        form=FileUpload,
        answer=FileObject,
        errors=(400, *AUTH_ERRORS, 413),
        tags=TAGS,
    )
)
async def upload_file() -> Response:
    form = await request.form
    uploads = await request.files
    upload = uploads.get("file")
    content = None if upload is None else await anyio.to_thread.run_sync(upload.read)
    return to_quart(
        await _batches().upload(
            _authorization(),
            purpose=form.get("purpose"),
            filename=None if upload is None else upload.filename,
            content=content,
        )
    )


@batches_api.get("/files")
@documented(
    Operation(
        summary="Your files, a page at a time.",
        query=ListFilesQuery,
        answer=FileList,
        errors=(400, *AUTH_ERRORS),
        tags=TAGS,
    )
)
async def list_files() -> Response:
    args = request.args
    return to_quart(
        await _batches().list_files(
            _authorization(),
            args.get("purpose"),
            after=args.get("after"),
            limit=args.get("limit"),
            order=args.get("order"),
        )
    )


@batches_api.get("/files/<file_id>")
@documented(Operation(summary="One file.", answer=FileObject, errors=NOT_FOUND, tags=TAGS))
async def retrieve_file(file_id: str) -> Response:
    return to_quart(await _batches().retrieve_file(_authorization(), file_id))


@batches_api.get("/files/<file_id>/content")
@documented(
    Operation(summary="A file's content.", media="application/jsonl", errors=NOT_FOUND, tags=TAGS)
)
async def file_content(file_id: str) -> Response:
    return to_quart(await _batches().file_content(_authorization(), file_id))


@batches_api.delete("/files/<file_id>")
@documented(Operation(summary="Delete a file.", answer=FileDeleted, errors=NOT_FOUND, tags=TAGS))
async def delete_file(file_id: str) -> Response:
    return to_quart(await _batches().delete_file(_authorization(), file_id))


@batches_api.post("/batches")
@documented(
    Operation(
        summary="Create a batch from an uploaded file.",
        body=BatchCreateRequest,
        answer=BatchObject,
        errors=(400, *AUTH_ERRORS, 403, 404, 413, 429),
        tags=TAGS,
    )
)
async def create_batch() -> Response:
    body = await request.get_data(cache=True, as_text=False, parse_form_data=False)
    return to_quart(await _batches().create(_authorization(), body))


@batches_api.get("/batches")
@documented(
    Operation(
        summary="Your batches, newest first.",
        query=ListBatchesQuery,
        answer=BatchList,
        errors=(400, *AUTH_ERRORS),
        tags=TAGS,
    )
)
async def list_batches() -> Response:
    args = request.args
    return to_quart(
        await _batches().list_batches(_authorization(), args.get("after"), args.get("limit"))
    )


@batches_api.get("/batches/<batch_id>")
@documented(Operation(summary="One batch.", answer=BatchObject, errors=NOT_FOUND, tags=TAGS))
async def retrieve_batch(batch_id: str) -> Response:
    return to_quart(await _batches().retrieve(_authorization(), batch_id))


@batches_api.post("/batches/<batch_id>/cancel")
@documented(Operation(summary="Cancel a batch.", answer=BatchObject, errors=NOT_FOUND, tags=TAGS))
async def cancel_batch(batch_id: str) -> Response:
    return to_quart(await _batches().cancel(_authorization(), batch_id))
