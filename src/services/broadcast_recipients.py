"""Recipient lists: people added by hand or imported from CSV or XLSX, matched to patients
by e-mail or phone (the phone's blind index), each imported line's outcome kept by number.

An upload is stored and answered at once (202, the import resource); the worker reads the file
row by row in chunks of `CHUNK`, each chunk one transaction that also records the progress, so
a worker that dies resumes after the last chunk it committed. The same file into the same list
is the same import: uploading it again changes nothing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import structlog
from email_validator import EmailNotValidError, validate_email

from carebase.errors import Conflict, FieldError, NotFound, ValidationFailed
from carebase.integrations.blobs import BlobStore, blob_key
from carebase.pages import Page, PageRequest
from carebase.persistence import broadcasts as repo
from carebase.persistence.db import Database
from carebase.principal import Principal, organization_of
from carebase.security.encryption import Sealer
from carebase.services.audit import record
from carebase.services.custom_fields import open_sealed
from carebase.services.patients import normalise_phone

_log = structlog.get_logger("carebase.broadcasts.recipients")

NO_RECIPIENT = "No such recipient."
NO_IMPORT = "No such import."
MAX_ROWS = 50_000
MAX_ATTEMPTS = 5
CHUNK = 500
MAX_FILE_BYTES = 10 * 1024 * 1024
CSV = "text/csv"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
_PHONE = re.compile(r"\+?\d{6,15}")
# Header names a file may use for each column (lower case, spaces and dashes as underscores).
COLUMNS = {
    "email": ("email", "e_mail", "email_address", "mail"),
    "phone": ("phone", "phone_number", "mobile", "telephone", "tel"),
    "given_name": ("given_name", "first_name", "firstname", "name"),
    "family_name": ("family_name", "last_name", "lastname", "surname"),
}


def recipient_aad(org: UUID, recipient_id: UUID) -> bytes:
    return f"broadcasts.recipients|{org}|{recipient_id}|phone".encode()


def phone_index(sealer: Sealer, phone: str) -> bytes:
    """The patients' own phone index, so a recipient matches a patient by equality."""
    return sealer.blind_index("patient.phone", normalise_phone(phone))


def seal_phone(sealer: Sealer, org: UUID, recipient_id: UUID, phone: str | None) -> bytes | None:
    """A recipient's phone as stored: sealed with the row's identity as associated data."""
    if phone is None:
        return None
    return sealer.seal(phone.encode(), recipient_aad(org, recipient_id))


@dataclass(frozen=True, slots=True)
class RecipientView:
    row: repo.RecipientRow
    phone: str | None


class FileRefused(Exception):
    """The file as a whole cannot be imported (not CSV or XLSX, no header we know, too big)."""


def media_type_of(data: bytes) -> str:
    """XLSX by its zip signature and workbook part; CSV when the bytes are UTF-8 text."""
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                if "xl/workbook.xml" in archive.namelist():
                    return XLSX
        except zipfile.BadZipFile:
            pass
        raise FileRefused("A zip file that is not an XLSX workbook.")
    try:
        data[:65536].decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the sample's end is still UTF-8.
        if exc.start < len(data[:65536]) - 4:
            raise FileRefused("Neither an XLSX workbook nor UTF-8 CSV text.") from None
    return CSV


def rows_of(data: bytes, media_type: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) for every row, the header first (line 1); read lazily."""
    if media_type == XLSX:
        import openpyxl  # type: ignore[import-untyped]  # noqa: PLC0415 — slow import, for workbooks only

        try:
            workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        except Exception as exc:  # openpyxl raises many kinds for a broken workbook
            raise FileRefused(f"The workbook cannot be read: {type(exc).__name__}") from None
        try:
            sheet = workbook.worksheets[0]
            for number, values in enumerate(sheet.iter_rows(values_only=True), start=1):
                yield number, [_cell(v) for v in values]
        except FileRefused:
            raise
        except Exception as exc:
            raise FileRefused(f"The workbook cannot be read: {type(exc).__name__}") from None
        finally:
            workbook.close()
        return
    text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline="")
    reader = csv.reader(text)
    try:
        for cells in reader:
            yield reader.line_num, [_cell(c) for c in cells]
    except (csv.Error, UnicodeDecodeError) as exc:
        raise FileRefused(f"The CSV cannot be read after line {reader.line_num}: {exc}") from None


def _cell(value: object) -> str:
    """A cell as text: trimmed, without U+0000 (which PostgreSQL's text cannot hold)."""
    return "" if value is None else str(value).replace("\x00", "").strip()


def header_map(cells: Sequence[str]) -> dict[str, int]:
    """Which column holds which field; `FileRefused` without an e-mail or phone column."""
    names = [re.sub(r"[\s\-]+", "_", c.strip().lower()) for c in cells]
    found: dict[str, int] = {}
    for field, aliases in COLUMNS.items():
        for index, name in enumerate(names):
            if name in aliases and field not in found:
                found[field] = index
    if "email" not in found and "phone" not in found:
        raise FileRefused("The first row must name an `email` or a `phone` column.")
    return found


@dataclass(frozen=True, slots=True)
class Parsed:
    line: int
    given_name: str
    family_name: str
    email: str | None
    phone: str | None


def parse_row(line: int, cells: Sequence[str], columns: dict[str, int]) -> Parsed | str:
    """The row's values, or why it is invalid."""

    def cell(name: str) -> str:
        index = columns.get(name)
        return cells[index].strip() if index is not None and index < len(cells) else ""

    return contact(
        line, email=cell("email"), phone=cell("phone"), given=cell("given_name"),
        family=cell("family_name"),
    )  # fmt: skip


def contact(line: int, *, email: str, phone: str, given: str, family: str) -> Parsed | str:
    """A contact's values, checked (an imported row's, or one added by hand), or why they
    are invalid."""
    if not email and not phone:
        return "no e-mail address or phone number"
    if email:
        try:
            email = validate_email(email, check_deliverability=False).normalized.lower()
        except EmailNotValidError:
            return "not an e-mail address"
        if len(email) > 254:
            return "the e-mail address is too long"
    if phone and not _PHONE.fullmatch(normalise_phone(phone)):
        return "not a phone number"
    if len(given) > 100 or len(family) > 100:
        return "a name longer than 100 characters"
    return Parsed(line, given, family, email or None, phone or None)


class RecipientService:
    def __init__(self, *, db: Database, sealer: Sealer, blobs: BlobStore) -> None:
        self._db = db
        self._sealer = sealer
        self._blobs = blobs

    def _view(self, org: UUID, row: repo.RecipientRow) -> RecipientView:
        phone = None
        if row.phone_sealed is not None:
            phone = open_sealed(self._sealer, row.phone_sealed, recipient_aad(org, row.id)).decode()
        return RecipientView(row, phone)

    async def list_recipients(
        self, principal: Principal, page: PageRequest, *, list_name: str | None
    ) -> Page[RecipientView]:
        org = organization_of(principal, NO_RECIPIENT)
        found, total = await repo.recipients(
            self._db.reader(principal), org, page, list_name=list_name
        )
        return Page([self._view(org, r) for r in found], total, page)

    async def add(self, principal: Principal, body: dict[str, Any]) -> RecipientView:
        """One recipient by hand: a patient of the organization, or a contact's address."""
        org = organization_of(principal, NO_RECIPIENT)
        recipient_id = uuid4()
        patient_id = UUID(body["patient_id"]) if body.get("patient_id") else None
        email = phone = None
        if patient_id is None:
            parsed = contact(
                0, email=body.get("email") or "", phone=body.get("phone") or "",
                given=body.get("given_name", ""), family=body.get("family_name", ""),
            )  # fmt: skip
            if isinstance(parsed, str):
                pointer = "/body/phone" if "phone" in parsed else "/body/email"
                raise ValidationFailed([FieldError(pointer, parsed.capitalize() + ".", "invalid")])
            email, phone = parsed.email, parsed.phone
        async with self._db.transaction(principal) as q:
            if patient_id is not None and not await repo.patient_exists(q, org, patient_id):
                raise ValidationFailed(
                    [FieldError("/body/patient_id", "No such patient.", "not_found")]
                )
            row = await repo.insert_recipient(
                q, org, recipient_id, list=body["list_name"], patient=patient_id,
                given=body.get("given_name", ""), family=body.get("family_name", ""),
                email=email,
                phone_sealed=seal_phone(self._sealer, org, recipient_id, phone),
                phone_index=phone_index(self._sealer, phone) if phone else None,
                **{"import": None},
            )  # fmt: skip
            if row is None:
                raise Conflict("The list already holds this patient or address.")
            await record(
                q, principal, action="broadcast_recipient.created",
                entity_type="broadcast_recipient", entity_id=row.id,
                changed_fields=sorted(k for k in body if body[k] is not None),
            )  # fmt: skip
        return self._view(org, row)

    async def delete(self, principal: Principal, recipient_id: UUID) -> None:
        org = organization_of(principal, NO_RECIPIENT)
        async with self._db.transaction(principal) as q:
            if not await repo.delete_recipient(q, org, recipient_id):
                raise NotFound(NO_RECIPIENT)
            await record(
                q, principal, action="broadcast_recipient.deleted",
                entity_type="broadcast_recipient", entity_id=recipient_id,
            )  # fmt: skip

    async def start_import(
        self, principal: Principal, *, list_name: str, filename: str, data: bytes
    ) -> tuple[repo.ImportRow, bool]:
        """The import of this file into this list: (row, True) when new, (the first one's row,
        False) when the same bytes were imported into the list before."""
        org = organization_of(principal, NO_IMPORT)
        if not data:
            raise ValidationFailed([FieldError("/body/file", "The file is empty.", "required")])
        if len(data) > MAX_FILE_BYTES:
            raise ValidationFailed(
                [FieldError("/body/file", "The file is larger than 10 MB.", "max_length")]
            )
        try:
            media_type = media_type_of(data)
        except FileRefused as exc:
            raise ValidationFailed([FieldError("/body/file", str(exc), "invalid")]) from None
        digest = hashlib.sha256(data).digest()
        async with self._db.transaction(principal, read_only=True) as q:
            earlier = await repo.same_file(q, org, list_name, digest)
        if earlier is not None:
            return earlier, False
        import_id = uuid4()
        key = blob_key(org, import_id)  # a fresh id: no attachment or export shares it
        await self._blobs.put(key, data, media_type)
        async with self._db.transaction(principal) as q:
            row = await repo.insert_import(
                q, org, import_id, list=list_name, filename=filename[:255] or "upload",
                media_type=media_type, sha256=digest, blob_key=key, by=principal.user_id,
            )  # fmt: skip
            if row is not None:
                await record(
                    q, principal, action="broadcast_import.created",
                    entity_type="broadcast_import", entity_id=row.id,
                    changed_fields=["list_name", "file"],
                )  # fmt: skip
        if row is None:  # the same file, uploaded at the same moment by someone else
            await self._blobs.delete(key)
            async with self._db.transaction(principal, read_only=True) as q:
                earlier = await repo.same_file(q, org, list_name, digest)
            if earlier is None:
                raise Conflict("The same file is being imported into this list; try again.")
            return earlier, False
        return row, True

    async def get_import(self, principal: Principal, import_id: UUID) -> repo.ImportRow:
        org = organization_of(principal, NO_IMPORT)
        row = await repo.import_(self._db.reader(principal), org, import_id)
        if row is None:
            raise NotFound(NO_IMPORT)
        return row

    async def list_imports(self, principal: Principal, page: PageRequest) -> Page[repo.ImportRow]:
        org = organization_of(principal, NO_IMPORT)
        found, total = await repo.imports(self._db.reader(principal), org, page)
        return Page(found, total, page)

    async def import_lines(
        self, principal: Principal, import_id: UUID, page: PageRequest, *, outcome: str | None
    ) -> Page[repo.ImportLine]:
        org = organization_of(principal, NO_IMPORT)
        async with self._db.transaction(principal, read_only=True) as q:
            if await repo.import_(q, org, import_id) is None:
                raise NotFound(NO_IMPORT)
            found, total = await repo.import_lines(q, org, import_id, page, outcome=outcome)
        return Page(found, total, page)


class ImportRunner:
    """The worker's half: one claimed import read and written chunk by chunk."""

    def __init__(self, *, db: Database, sealer: Sealer, blobs: BlobStore, lease_s: float = 120.0):
        self._db = db
        self._sealer = sealer
        self._blobs = blobs
        self._lease_s = lease_s

    async def run_one(self, *, stop_after_chunks: int | None = None) -> bool:
        """Carry one import forward; False when none is waiting. `stop_after_chunks` leaves it
        midway, as a worker that dies would (tests)."""
        async with self._db.admin_transaction() as q:
            due = await repo.claim_import(q, lease_s=self._lease_s)
        if due is None:
            return False
        org = due.organization_id
        if due.attempts > MAX_ATTEMPTS:
            await self._finish(due, "failed", None, "Gave up: every attempt was cut short.")
            return True
        data = (
            await self._blobs.get(due.blob_key, max_bytes=MAX_FILE_BYTES) if due.blob_key else None
        )
        if data is None:
            await self._finish(due, "failed", None, "The uploaded file is gone.")
            return True
        try:
            total = sum(1 for _ in rows_of(data, due.media_type)) - 1
            if total > MAX_ROWS:
                raise FileRefused(f"{total} rows; an import holds at most {MAX_ROWS}.")
            rows = rows_of(data, due.media_type)
            first = next(rows, None)
            if first is None:
                raise FileRefused("The file is empty.")
            columns = header_map(first[1])
            chunks = 0
            chunk: list[tuple[int, list[str]]] = []
            for line, cells in rows:
                if line <= due.rows_done + 1 or not any(cells):
                    continue
                chunk.append((line, cells))
                if len(chunk) == CHUNK:
                    await self._chunk(due, columns, chunk, total)
                    chunk, chunks = [], chunks + 1
                    if stop_after_chunks is not None and chunks >= stop_after_chunks:
                        return True
            if chunk:
                await self._chunk(due, columns, chunk, total)
        except FileRefused as exc:
            await self._finish(due, "failed", None, str(exc))
            return True
        await self._finish(due, "completed", total, None)
        await self._blobs.delete(due.blob_key or "")
        _log.info("broadcast_import_completed", organization_id=str(org), import_id=str(due.id))
        return True

    async def _chunk(
        self,
        due: repo.DueImport,
        columns: dict[str, int],
        chunk: list[tuple[int, list[str]]],
        total: int,
    ) -> None:
        org = due.organization_id
        lines: list[repo.ImportLine] = []
        parsed: list[Parsed] = []
        for line, cells in chunk:
            result = parse_row(line, cells, columns)
            if isinstance(result, str):
                lines.append(repo.ImportLine(line, "invalid", result, None))
            else:
                parsed.append(result)
        indexes = {p.line: phone_index(self._sealer, p.phone) for p in parsed if p.phone}
        async with self._db.admin_transaction() as q:
            found = await repo.match_patients(
                q, org, [p.email for p in parsed if p.email], list(indexes.values())
            )
            by_email = {f.email: f.id for f in found if f.email}
            by_phone = {f.phone_index: f.id for f in found if f.phone_index}
            new = []
            for p in parsed:
                patient = by_email.get(p.email) if p.email else None
                if patient is None and p.line in indexes:
                    patient = by_phone.get(indexes[p.line])
                recipient_id = uuid4()
                new.append(
                    repo.NewRecipient(
                        id=recipient_id,
                        patient_id=patient,
                        given_name=p.given_name,
                        family_name=p.family_name,
                        email=p.email,
                        phone_sealed=seal_phone(self._sealer, org, recipient_id, p.phone),
                        phone_index=indexes.get(p.line),
                    )
                )
            inserted = (
                await repo.insert_recipients(q, org, due.list_name, due.id, new) if new else set()
            )
            for p, n in zip(parsed, new, strict=True):
                if n.id not in inserted:
                    lines.append(repo.ImportLine(p.line, "duplicate", None, None))
                else:
                    outcome = "matched" if n.patient_id else "created"
                    lines.append(repo.ImportLine(p.line, outcome, None, n.id))
            await repo.record_lines(q, org, due.id, lines)
            counts = {k: sum(1 for x in lines if x.outcome == k) for k in
                      ("created", "matched", "invalid", "duplicate")}  # fmt: skip
            await repo.import_progress(
                q,
                org,
                due.id,
                done=chunk[-1][0] - 1,
                total=total,
                counts=counts,
                lease_s=self._lease_s,
            )

    async def _finish(
        self, due: repo.DueImport, status: str, total: int | None, error: str | None
    ) -> None:
        async with self._db.admin_transaction() as q:
            await repo.finish_import(
                q, due.organization_id, due.id, status=status, total=total, error=error
            )
            await record(
                q, Principal.system(due.organization_id),
                action=f"broadcast_import.{status}", entity_type="broadcast_import",
                entity_id=due.id, changed_fields=["status"],
            )  # fmt: skip
