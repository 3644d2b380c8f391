"""Handlers for openapi/core/attachments.yaml: attachments, and the filesystem store's signed
URLs (`/v1/blobs/…`), which only that store answers (S3 serves its own)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from carebase.errors import Conflict, NotFound
from carebase.integrations.blobs import (
    FileBlobStore,
    SignedUrl,
    blob_key,
    content_disposition,
)
from carebase.pages import PageRequest
from carebase.persistence.attachments import AttachmentRow
from carebase.principal import Principal
from carebase.services.attachments import MAX_BYTES, AttachmentService, Owner
from carebase.web.bodies import Upload
from carebase.web.results import Reply, created, no_content, ok, resource

BASE = "/v1/attachments"
NO_BLOB = "No such file."


class AttachmentHandlers:
    def __init__(self, *, attachments: AttachmentService, files: FileBlobStore | None) -> None:
        self._attachments = attachments
        self._files = files

    async def list_attachments(
        self,
        principal: Principal,
        *,
        page: int,
        page_size: int,
        patient_id: UUID | None,
        owner_type: str | None,
        owner_id: UUID | None,
        status: str | None,
    ) -> Reply:
        found = await self._attachments.list_attachments(
            principal,
            PageRequest(page, page_size),
            patient_id=patient_id,
            owner_type=owner_type,
            owner_id=owner_id,
            status=status,
        )
        return ok({"data": [attachment_json(row) for row in found.items], "meta": found.meta})

    async def upload_attachment(self, principal: Principal, *, body: Upload) -> Reply:
        part = body.files["file"]
        row = await self._attachments.upload(
            principal, Owner.of(body.fields), part.filename, part.data
        )
        return created(attachment_json(row), location=f"{BASE}/{row.id}", version=_version(row))

    async def start_attachment_upload(self, principal: Principal, *, body: dict[str, Any]) -> Reply:
        started = await self._attachments.start_upload(principal, body)
        row = started.row
        return created(
            {"attachment": attachment_json(row), "upload": signed_json(started.url)},
            location=f"{BASE}/{row.id}",
            version=_version(row),
        )

    async def get_attachment(self, principal: Principal, *, attachment_id: UUID) -> Reply:
        row = await self._attachments.get(principal, attachment_id)
        return resource(attachment_json(row), version=_version(row))

    async def delete_attachment(self, principal: Principal, *, attachment_id: UUID) -> Reply:
        await self._attachments.delete(principal, attachment_id)
        return no_content()

    async def complete_attachment_upload(
        self, principal: Principal, *, attachment_id: UUID
    ) -> Reply:
        row = await self._attachments.complete(principal, attachment_id)
        return resource(attachment_json(row), version=_version(row))

    async def get_attachment_download(self, principal: Principal, *, attachment_id: UUID) -> Reply:
        _, url = await self._attachments.download(principal, attachment_id)
        return ok(signed_json(url))

    # --- the filesystem store's signed URLs ---------------------------------------------------

    async def read_blob(
        self,
        *,
        organization_id: UUID,
        attachment_id: UUID,
        expires: int,
        signature: str,
        filename: str,
        type_: str,
    ) -> Reply:
        files = self._store()
        key = blob_key(organization_id, attachment_id)
        files.signer.check(signature, expires, "GET", key, filename, type_)
        data = await files.get(key, max_bytes=MAX_BYTES)
        if data is None:
            raise NotFound(NO_BLOB)
        return Reply(
            data,
            media_type=type_,
            headers={
                "Content-Disposition": content_disposition(filename),
                "Cache-Control": "private, no-store",
            },
        )

    async def write_blob(
        self,
        *,
        organization_id: UUID,
        attachment_id: UUID,
        expires: int,
        signature: str,
        body: bytes,
    ) -> Reply:
        files = self._store()
        key = blob_key(organization_id, attachment_id)
        files.signer.check(signature, expires, "PUT", key)
        try:
            await files.put(key, body, "application/octet-stream")
        except FileExistsError:
            raise Conflict("The file was uploaded already; complete the attachment.") from None
        return no_content()

    def _store(self) -> FileBlobStore:
        if self._files is None:
            raise NotFound("Files are served by the object store, not by this API.")
        return self._files


def _version(row: AttachmentRow) -> int:
    """An attachment changes once, when its upload completes."""
    return 2 if row.status == "available" else 1


def attachment_json(row: AttachmentRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "owner_type": row.owner_type,
        "owner_id": row.owner_id,
        "patient_id": row.patient_id,
        "link_id": row.link_id,
        "filename": row.filename,
        "media_type": row.media_type,
        "size_bytes": row.size_bytes,
        "sha256": row.sha256,
        "status": row.status,
        "uploaded_by": row.uploaded_by,
        "created_at": row.created_at,
        "completed_at": row.completed_at,
    }


def signed_json(url: SignedUrl) -> dict[str, Any]:
    return {
        "method": url.method,
        "url": url.url,
        "headers": url.headers,
        "expires_at": url.expires_at,
    }
