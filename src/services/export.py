"""CSV export: patients, appointments or forms, streamed from a server-side cursor.

Everything that can be refused is refused before the first byte: the columns (an allow-list
per entity; health data needs `export:phi`), the segment, the range, and a second export of
the same organization while one runs (an advisory lock held by the export's transaction).
Then the answer streams: the header row leaves at once, and rows follow one batch at a time
from one read-only snapshot, so memory stays flat however many rows there are. Cells that a
spreadsheet would run as formulas are defused. The audit row (filters, columns, rows, bytes)
is written when the stream ends, also when it ends early.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import orjson
import structlog
from psycopg import sql

from carebase.errors import Conflict, FieldError, Forbidden, ValidationFailed
from carebase.persistence import export as repo
from carebase.persistence.db import Database, Lease
from carebase.principal import Principal, organization_of
from carebase.security.encryption import Sealer
from carebase.security.permissions import allows
from carebase.services import forms as form_rules
from carebase.services import patients as patient_rules
from carebase.services.audit import record
from carebase.services.working_hours import zone_or_utc

_log = structlog.get_logger("carebase.export")

BOM = "\ufeff".encode()
BATCH = 2000
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\0")
PHI_PERMISSION = "export:phi"


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    label: str
    expression: str
    """This module's SQL for the value (never a caller's text)."""
    health_data: bool = False
    sealed: str | None = None
    """A sealed column's name: the value is opened with the row's identity as associated data."""
    extra: str | None = None
    """A second expression the value needs (a form's sealed answers beside its plain ones)."""


def _patient_columns(alias: str, prefix: str = "") -> list[Column]:
    return [
        Column(f"{prefix}given_name", "Given name", f"{alias}.given_name"),
        Column(f"{prefix}family_name", "Family name", f"{alias}.family_name"),
    ]


PATIENTS = (
    Column("id", "Patient id", "p.id"),
    *_patient_columns("p"),
    Column("email", "E-mail address", "p.email"),
    Column("status", "Status", "p.status"),
    Column("has_account", "Has an account", "(p.user_id IS NOT NULL)"),
    Column("created_at", "Added at", "p.created_at"),
    Column("updated_at", "Changed at", "p.updated_at"),
    Column("birth_date", "Birth date", "p.birth_date_sealed", True, "birth_date"),
    Column("phone", "Phone", "p.phone_sealed", True, "phone"),
    Column("national_id", "National id", "p.national_id_sealed", True, "national_id"),
    Column("address", "Address", "p.address_sealed", True, "address"),
    Column("notes", "Clinical notes", "p.notes_sealed", True, "notes"),
)
APPOINTMENTS = (
    Column("id", "Appointment id", "a.id"),
    Column("uid", "Public id", "a.uid"),
    Column("patient_id", "Patient id", "a.patient_id"),
    *_patient_columns("p", "patient_"),
    Column("specialist_id", "Specialist id", "a.specialist_id"),
    Column("specialist_name", "Specialist", "s.display_name"),
    Column("specialty", "Specialty", "sp.name"),
    Column("title", "Title", "a.title"),
    Column("status", "Status", "a.status"),
    Column("starts_at", "Starts at", "a.starts_at"),
    Column("ends_at", "Ends at", "a.ends_at"),
    Column("time_zone", "Time zone", "a.time_zone"),
    Column("video", "Video", "a.video"),
    Column("created_at", "Booked at", "a.created_at"),
    Column("cancel_reason", "Cancellation reason", "a.cancel_reason", True),
)
FORMS = (
    Column("id", "Form id", "f.id"),
    Column("template_id", "Template id", "f.template_id"),
    Column("template_title", "Template", "t.title"),
    Column("template_version", "Template version", "f.template_version"),
    Column("patient_id", "Patient id", "f.patient_id"),
    *_patient_columns("p", "patient_"),
    Column("appointment_id", "Appointment id", "f.appointment_id"),
    Column("status", "Status", "f.status"),
    Column("submitted_at", "Submitted at", "f.submitted_at"),
    Column("signed_at", "Signed at", "f.signed_at"),
    Column("signer_role", "Signed as", "f.signer_role"),
    Column("amends_id", "Amends form", "f.amends_id"),
    Column("created_at", "Made at", "f.created_at"),
    Column("answers", "Answers (JSON)", "f.answers", True, "answers", "f.sealed_answers"),
)
COLUMNS: Mapping[str, tuple[Column, ...]] = {
    "patients": PATIENTS,
    "appointments": APPOINTMENTS,
    "forms": FORMS,
}


@dataclass(frozen=True, slots=True)
class ExportRequest:
    entity: str
    columns: Sequence[str] | None
    segment_id: UUID | None
    first_day: dt.date | None
    last_day: dt.date | None
    bom: bool = True


@dataclass(frozen=True, slots=True)
class CsvFile:
    filename: str
    chunks: AsyncIterator[bytes]


def defused(text: str) -> str:
    """A text cell a spreadsheet would run as a formula (or DDE), made plain text (OWASP)."""
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


def cell(value: Any) -> str:
    """One value as CSV text: numbers as numbers, times in UTC (RFC 3339), text defused."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, int | float | Decimal | dt.date | UUID):
        return str(value)
    return defused(orjson.dumps(value).decode() if isinstance(value, dict | list) else str(value))


class ExportService:
    def __init__(
        self,
        *,
        db: Database,
        sealer: Sealer,
        batch: int = BATCH,
        now: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self._db = db
        self._sealer = sealer
        self._batch = batch
        self._now = now or (lambda: dt.datetime.now(dt.UTC))

    def columns(self) -> list[tuple[str, Column, bool]]:
        """(entity, column, exported by default) for every allow-listed column."""
        return [
            (entity, column, not column.health_data)
            for entity, columns in COLUMNS.items()
            for column in columns
        ]

    async def csv(self, principal: Principal, request: ExportRequest) -> CsvFile:
        org = organization_of(principal, "No organization to export from.")
        chosen = self._chosen(principal, request)
        if request.segment_id is not None:
            async with self._db.transaction(principal, read_only=True) as q:
                if not await repo.segment_exists(q, org, request.segment_id):
                    raise ValidationFailed(
                        [FieldError("/body/segment_id", "No such segment.", "unknown")]
                    )
        lease = await self._db.lease(principal)
        try:
            if not await lease.fetch_value(repo.TRY_LOCK, (str(org),)):
                raise Conflict(
                    "An export of this organization is running; try again when it has finished."
                )
            zone = await lease.fetch_value(repo.TIME_ZONE, (org,)) or "UTC"
        except BaseException:
            await lease.close()
            raise
        query, params = _query(request, chosen, org, zone_or_utc(zone))
        today = self._now().astimezone(zone_or_utc(zone)).date()
        return CsvFile(
            f"{request.entity}-{today.isoformat()}.csv",
            self._stream(
                principal, request, chosen=chosen, lease=lease, query=query, params=params
            ),
        )

    def _chosen(self, principal: Principal, request: ExportRequest) -> list[Column]:
        allowed = {column.key: column for column in COLUMNS[request.entity]}
        if request.columns is None:
            return [column for column in COLUMNS[request.entity] if not column.health_data]
        unknown = [
            FieldError(f"/body/columns/{i}", f"Not a column of {request.entity}.", "unknown")
            for i, key in enumerate(request.columns)
            if key not in allowed
        ]
        if request.first_day and request.last_day and request.first_day > request.last_day:
            unknown.append(FieldError("/body/to", "Must not be before `from`.", "invalid"))
        if unknown:
            raise ValidationFailed(unknown)
        chosen = [allowed[key] for key in request.columns]
        health = [column.key for column in chosen if column.health_data]
        if health and not allows(principal, PHI_PERMISSION):
            raise Forbidden(
                f"Health data columns ({', '.join(health)}) need the {PHI_PERMISSION} permission."
            )
        return chosen

    async def _stream(
        self,
        principal: Principal,
        request: ExportRequest,
        *,
        chosen: Sequence[Column],
        lease: Lease,
        query: sql.Composed,
        params: Mapping[str, Any],
    ) -> AsyncIterator[bytes]:
        rows = sent = 0
        complete = False
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        plan = [(column, self._opener(request.entity, column)) for column in chosen]
        try:
            writer.writerow([column.key for column in chosen])
            head = (BOM if request.bom else b"") + _take(buffer).encode()
            sent += len(head)
            yield head  # before the query runs: the client knows the export has started
            async for batch in lease.batches(query, params, size=self._batch):
                writer.writerows(_cells(row, plan) for row in batch)
                rows += len(batch)
                chunk = _take(buffer).encode()
                sent += len(chunk)
                yield chunk
            complete = True
        finally:
            await lease.close()
            await self._audit(principal, request, chosen, rows=rows, sent=sent, complete=complete)

    def _opener(self, entity: str, column: Column) -> Opener | None:
        """How a sealed column's value is opened: with its row's identity as associated data."""
        if column.sealed is None:
            return None
        sealer, name = self._sealer, column.sealed
        if entity == "forms":

            def answers(org: UUID, form_id: UUID, plain: Any, sealed: Any) -> Any:
                merged = dict(plain or {})
                if sealed is not None:
                    opened = sealer.open(bytes(sealed), form_rules.answers_aad(org, form_id))
                    merged.update(orjson.loads(opened))
                return merged

            return answers

        def opened(org: UUID, patient_id: UUID, sealed: Any, _: Any) -> Any:
            if sealed is None:
                return None
            return sealer.open(bytes(sealed), patient_rules.aad(org, patient_id, name)).decode()

        return opened

    async def _audit(
        self,
        principal: Principal,
        request: ExportRequest,
        chosen: Sequence[Column],
        *,
        rows: int,
        sent: int,
        complete: bool,
    ) -> None:
        detail = {
            "entity": request.entity,
            "columns": [column.key for column in chosen],
            "segment_id": str(request.segment_id) if request.segment_id else None,
            "from": request.first_day.isoformat() if request.first_day else None,
            "to": request.last_day.isoformat() if request.last_day else None,
            "rows": rows,
            "bytes": sent,
            "complete": complete,
        }
        try:
            async with self._db.transaction(principal) as q:
                await record(
                    q, principal, action="export.csv", entity_type="export", entity_id=None,
                    changed_fields=(), detail=detail,
                )  # fmt: skip
        except Exception:  # the file went out; its record must not be lost silently
            _log.exception("export_audit_failed", **detail)
        if not complete:
            _log.warning("export_aborted", **detail)


Opener = Callable[[UUID, UUID, Any, Any], Any]


def _cells(row: Sequence[Any], plan: Sequence[tuple[Column, Opener | None]]) -> list[str]:
    """A row as CSV cells: it starts with the organization and the row's id (the associated
    data of its sealed values), then each column's value (and its extra one)."""
    org, row_id = row[0], row[1]
    at = 2
    out = []
    for column, opener in plan:
        value = row[at]
        extra = row[at + 1] if column.extra else None
        at += 2 if column.extra else 1
        out.append(cell(opener(org, row_id, value, extra) if opener else value))
    return out


def _take(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text


def _query(
    request: ExportRequest, chosen: Sequence[Column], org: UUID, zone: ZoneInfo
) -> tuple[sql.Composed, dict[str, Any]]:
    """The entity's statement with the chosen columns (this module's expressions only) and
    every filter value bound."""
    params: dict[str, Any] = {"org": org, "segment": request.segment_id}
    params["since"] = (
        dt.datetime.combine(request.first_day, dt.time(), zone) if request.first_day else None
    )
    params["until"] = (
        dt.datetime.combine(request.last_day + dt.timedelta(days=1), dt.time(), zone)
        if request.last_day
        else None
    )
    expressions = sql.SQL(", ").join(
        sql.SQL(part)  # this module's constants, never a caller's text
        for column in chosen
        for part in (column.expression, *((column.extra,) if column.extra else ()))
    )
    return repo.STATEMENTS[request.entity].format(columns=expressions), params
