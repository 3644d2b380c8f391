"""Data-subject requests (GDPR): received, approved or rejected by an admin, carried out by
`GdprWorker` in steps over every store, as `data_map` declares.

Each step is recorded in the request as it finishes (and in the audit trail), so a worker that
dies midway leaves a lease that runs out; the next claim resumes at the first step not done.
Steps are idempotent: an erase run twice deletes nothing the second time and verifies.

- export: every exported core table's rows for the subject (sealed values opened), telemetry's
  rows (through its endpoint), the attachments' files, and a manifest (store, table, rows,
  SHA-256) in one zip in the blob store, linked for 24 hours at a time, deleted after 7 days.
- erase: telemetry first (its tombstone stops ingest), the files, then each core table, then a
  verification that counts what each store still holds.
- anonymize: direct identifiers replaced (birth date → year, address → region), the account
  closed, clinical facts kept.
- restrict: left out of analytics (a telemetry tombstone), segments and campaigns; readable by
  admins only (row-level security).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import zipfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import orjson
import structlog

from carebase.errors import Conflict, FieldError, NotFound, ValidationFailed
from carebase.integrations.blobs import BlobStore
from carebase.integrations.telemetry import TelemetrySubjects, TelemetryUnavailable
from carebase.pages import Page, PageRequest
from carebase.persistence import gdpr as repo
from carebase.persistence.db import Database, Querier
from carebase.persistence.work_queue import Rounds
from carebase.principal import Principal, organization_of
from carebase.security.encryption import Sealer
from carebase.services import data_map, documents, forms, patients
from carebase.services.audit import record

_log = structlog.get_logger("carebase.gdpr")

NO_REQUEST = "No such request."
NO_SUBJECT = "No patient of the organization is this subject."
EXPORT_TTL = dt.timedelta(days=7)
LINK_TTL_S = 24 * 3600
ZIP = "application/zip"
MAX_ATTEMPTS = 8
_SEALED_PATIENT = ("birth_date", "national_id", "phone", "address", "notes")


@dataclass(frozen=True, slots=True)
class ExportLink:
    url: str
    expires_at: dt.datetime
    size_bytes: int


class GdprService:
    def __init__(
        self, *, db: Database, blobs: BlobStore, now: Callable[[], dt.datetime] | None = None
    ) -> None:
        self._db = db
        self._blobs = blobs
        self._now = now or (lambda: dt.datetime.now(dt.UTC))

    async def create(
        self,
        principal: Principal,
        *,
        kind: str,
        patient_id: UUID | None,
        user_id: UUID | None,
        reason: str,
        approve: bool = False,
    ) -> repo.RequestRow:
        """Receive a request (and approve it at once, for the shortcuts)."""
        org = organization_of(principal, NO_REQUEST)
        if (patient_id is None) == (user_id is None):
            raise ValidationFailed(
                [FieldError("/body/patient_id", "Name the subject by patient_id or user_id.",
                            "invalid")]
            )  # fmt: skip
        async with self._db.transaction(principal) as q:
            subject = (
                await repo.subject_by_patient(q, org, patient_id)
                if patient_id is not None
                else await repo.subject_by_user(q, org, user_id)  # type: ignore[arg-type]
            )
            if subject is None:
                raise NotFound(NO_SUBJECT)
            row = await repo.insert(
                q, org, kind=kind, subject=subject, reason=reason, by=principal.user_id
            )
            if row is None:
                raise Conflict(f"An {kind} request for this subject is already open.")
            if approve:  # a shortcut: received and approved in one act, one record
                approved = await repo.approve(q, org, row.id, principal.user_id)
                row = approved or row
            await _audit(
                q, principal, "gdpr_request.created", row.id, {"kind": kind, "approved": approve}
            )
        return row

    async def shortcut(self, principal: Principal, *, kind: str, user_id: UUID) -> repo.RequestRow:
        """`…/gdpr/users/{id}…`: an approved request, or the one already open."""
        org = organization_of(principal, NO_REQUEST)
        async with self._db.transaction(principal, read_only=True) as q:
            subject = await repo.subject_by_user(q, org, user_id)
            found = await repo.open_request(q, org, kind, subject) if subject else None
        if subject is None:
            raise NotFound(NO_SUBJECT)
        if found is not None:
            return found
        reason = f"{kind.title()} requested through the shortcut by an administrator."
        return await self.create(
            principal, kind=kind, patient_id=None, user_id=user_id, reason=reason, approve=True
        )

    async def list_requests(
        self, principal: Principal, page: PageRequest, *, status: str | None, kind: str | None
    ) -> Page[repo.RequestRow]:
        org = organization_of(principal, NO_REQUEST)
        rows, total = await repo.requests(
            self._db.reader(principal), org, page, status=status, kind=kind
        )
        return Page(rows, total, page)

    async def get(self, principal: Principal, request_id: UUID) -> repo.RequestRow:
        org = organization_of(principal, NO_REQUEST)
        row = await repo.request(self._db.reader(principal), org, request_id)
        if row is None:
            raise NotFound(NO_REQUEST)
        return row

    async def approve(self, principal: Principal, request_id: UUID) -> repo.RequestRow:
        org = organization_of(principal, NO_REQUEST)
        async with self._db.transaction(principal) as q:
            return await self._approve(q, principal, org, request_id)

    async def _approve(
        self, q: Querier, principal: Principal, org: UUID, request_id: UUID
    ) -> repo.RequestRow:
        row = await repo.approve(q, org, request_id, principal.user_id)
        if row is None:
            await self._refuse(q, org, request_id, "approved")
        await _audit(q, principal, "gdpr_request.approved", request_id, None)
        return row  # type: ignore[return-value]  # _refuse raised

    async def reject(self, principal: Principal, request_id: UUID, reason: str) -> repo.RequestRow:
        org = organization_of(principal, NO_REQUEST)
        async with self._db.transaction(principal) as q:
            row = await repo.reject(q, org, request_id, reason)
            if row is None:
                await self._refuse(q, org, request_id, "rejected")
            await _audit(q, principal, "gdpr_request.rejected", request_id, None)
        return row  # type: ignore[return-value]

    async def _refuse(self, q: Querier, org: UUID, request_id: UUID, verb: str) -> None:
        current = await repo.request(q, org, request_id)
        if current is None:
            raise NotFound(NO_REQUEST)
        raise Conflict(f"Only a received request is {verb}; this one is {current.status}.")

    async def export_link(self, principal: Principal, request_id: UUID) -> ExportLink:
        org = organization_of(principal, NO_REQUEST)
        async with self._db.transaction(principal) as q:
            row = await repo.request(q, org, request_id)
            if row is None:
                raise NotFound(NO_REQUEST)
            if row.kind != "export" or row.status not in ("completed", "partially_completed"):
                raise Conflict(f"Not a finished export (a {row.kind} request, {row.status}).")
            if row.export_key is None or row.export_size is None:
                raise NotFound("The export file was deleted 7 days after it was made.")
            signed = self._blobs.download_url(
                row.export_key,
                filename=f"carebase-export-{row.id}.zip",
                media_type=ZIP,
                ttl_s=LINK_TTL_S,
            )
            await _audit(q, principal, "gdpr_request.export_downloaded", request_id, None)
        return ExportLink(
            signed.url, self._now() + dt.timedelta(seconds=LINK_TTL_S), row.export_size
        )


async def _audit(
    q: Querier,
    principal: Principal,
    action: str,
    request_id: UUID,
    detail: Mapping[str, Any] | None,
) -> None:
    await record(
        q, principal, action=action, entity_type="gdpr_request", entity_id=request_id,
        detail=detail,
    )  # fmt: skip


# --- the worker ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Run:
    """One request being carried out: its subject and the steps recorded so far."""

    row: repo.RequestRow
    patient_id: UUID
    user_id: UUID | None
    emails: list[str]
    sessions: list[UUID]
    steps: list[dict[str, Any]]

    @property
    def params(self) -> dict[str, Any]:
        return {
            "org": self.row.organization_id,
            "patient": self.patient_id,
            "user": self.user_id,
            "email": self.emails,
        }

    def done(self, name: str) -> bool:
        return any(s["name"] == name and s["status"] in ("done", "skipped") for s in self.steps)

    def mark(self, name: str, status: str, rows: int | None, detail: str | None = None) -> None:
        self.steps = [s for s in self.steps if s["name"] != name]
        self.steps.append({"name": name, "status": status, "rows": rows, "detail": detail})


Step = Callable[[_Run], Awaitable[tuple[str, int | None, str | None]]]


class GdprWorker:
    def __init__(
        self,
        db: Database,
        *,
        sealer: Sealer,
        blobs: BlobStore,
        telemetry: TelemetrySubjects | None,
        lease_s: float = 300.0,
        interval_s: float = 5.0,
        now: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self._db = db
        self._sealer = sealer
        self._blobs = blobs
        self._telemetry = telemetry
        self._lease_s = lease_s
        self._now = now or (lambda: dt.datetime.now(dt.UTC))
        self.rounds = Rounds("gdpr_worker", interval_s, _log)
        self.nudge = self.rounds.nudge

    async def run(self) -> None:
        await self.rounds.run(self.run_once)

    async def run_once(self) -> int:
        """Carry out every due request; delete exports older than 7 days."""
        carried = 0
        while not self.rounds.stopping and await self.carry_out_one():
            carried += 1
        await self.delete_old_exports()
        return carried

    async def carry_out_one(self, *, stop_after: int | None = None) -> bool:
        """One due request, step by step; `stop_after` (tests) stops after that many steps, as
        a worker killed midway would."""
        async with self._db.admin_transaction() as q:
            row = await repo.claim(q, lease_s=self._lease_s)
            if row is None:
                return False
            run = await self._subject(q, row)
        steps = self._plan(run)
        taken = 0
        for name, step in steps:
            if run.done(name):
                continue
            if stop_after is not None and taken >= stop_after:
                return True
            taken += 1
            try:
                status, rows, detail = await step(run)
            except TelemetryUnavailable as exc:
                if row.attempts < MAX_ATTEMPTS:
                    await self._retry_later(run, name, str(exc))
                    return True
                status, rows, detail = "failed", None, str(exc)[:500]
            run.mark(name, status, rows, detail)
            async with self._db.admin_transaction() as q:
                await repo.save_steps(q, row, run.steps, lease_s=self._lease_s)
                await _audit(
                    q, _system(row), "gdpr_request.step_done", row.id,
                    {"step": name, "status": status, "rows": rows},
                )  # fmt: skip
        await self._finish(run)
        return True

    async def _retry_later(self, run: _Run, name: str, error: str) -> None:
        delay = min(30 * 2 ** (run.row.attempts - 1), 3600)
        run.mark(name, "pending", None, f"retrying: {error}"[:500])
        async with self._db.admin_transaction() as q:
            await repo.release(q, run.row, run.steps, retry_s=delay)
        _log.warning("gdpr_step_retrying", request_id=str(run.row.id), step=name, error=error)

    async def _subject(self, q: Querier, row: repo.RequestRow) -> _Run:
        org = row.organization_id
        subject = (
            await repo.subject_by_patient(q, org, row.patient_id)
            if row.patient_id is not None
            else await repo.subject_by_user(q, org, row.user_id)  # type: ignore[arg-type]
        )
        patient = subject.patient_id if subject else row.patient_id
        emails = [subject.email] if subject and subject.email else []
        return _Run(
            row=row,
            patient_id=patient,  # type: ignore[arg-type]
            user_id=row.user_id or (subject.user_id if subject else None),
            emails=emails,
            sessions=await repo.sessions(q, org, patient) if patient else [],
            steps=list(row.steps),
        )

    def _plan(self, run: _Run) -> list[tuple[str, Step]]:
        kind = run.row.kind
        if kind == "export":
            return [("export", self._export)]
        if kind == "erase":
            core: list[tuple[str, Step]] = [
                (f"core.{t.table}", self._core_step(t)) for t in data_map.CORE if t.erase_sql
            ]
            return [
                ("telemetry", self._erase_telemetry),
                ("blobs", self._erase_blobs),
                *core,
                ("verify", self._verify_erasure),
            ]
        if kind == "anonymize":
            return [
                ("core.patients.patients", self._anonymize_patient),
                *[
                    (f"core.{t.table}", self._core_step(t))
                    for t in data_map.CORE
                    if t.table in ANONYMIZE_ALSO
                ],
                ("verify", self._verify_anonymized),
            ]
        return [
            ("core.patients.patients", self._restrict_patient),
            ("telemetry", self._restrict_telemetry),
        ]

    async def _finish(self, run: _Run) -> None:
        failed = any(s["status"] in ("failed", "skipped") for s in run.steps)
        status = "partially_completed" if failed else "completed"
        async with self._db.admin_transaction() as q:
            await repo.finish(q, run.row, status=status, steps=run.steps)
            await _audit(
                q, _system(run.row), f"gdpr_request.{status}", run.row.id,
                {"kind": run.row.kind, "steps": len(run.steps)},
            )  # fmt: skip
        _log.info("gdpr_request_finished", request_id=str(run.row.id), status=status)

    # --- steps ------------------------------------------------------------------------------

    def _core_step(self, table: data_map.Table) -> Step:
        async def step(run: _Run) -> tuple[str, int | None, str | None]:
            changed = 0
            async with self._db.admin_transaction() as q:
                for statement in table.erase_sql:
                    changed += await q.execute(statement, run.params)
            basis = f"{table.erase}; kept: {table.basis}" if table.basis else table.erase
            return "done", changed, basis[:500]

        return step

    async def _erase_telemetry(self, run: _Run) -> tuple[str, int | None, str | None]:
        if self._telemetry is None:
            return "skipped", None, "telemetry is not configured (TELEMETRY_INTERNAL_URL)"
        tables = await self._telemetry.erase(run.row.organization_id, run.user_id, run.sessions)
        return "done", sum(int(t["deleted"]) for t in tables), None

    async def _erase_blobs(self, run: _Run) -> tuple[str, int | None, str | None]:
        async with self._db.admin_transaction() as q:
            keys = await repo.erasable_attachment_keys(q, run.row.organization_id, run.patient_id)
        for key in keys:
            await self._blobs.delete(key)
        return "done", len(keys), None

    async def _verify_erasure(self, run: _Run) -> tuple[str, int | None, str | None]:
        left: dict[str, int] = {}
        async with self._db.admin_transaction() as q:
            for table in data_map.CORE:
                if table.remaining:
                    count = await repo.count(q, table.remaining, run.params)
                    if count:
                        left[table.table] = count
            keys = await repo.erasable_attachment_keys(q, run.row.organization_id, run.patient_id)
        for key in keys:
            if await self._blobs.get(key, max_bytes=1) is not None:
                left["blobs.attachments"] = left.get("blobs.attachments", 0) + 1
        if self._telemetry is not None:  # a second erasure deletes nothing and counts
            for found in await self._telemetry.erase(
                run.row.organization_id, run.user_id, run.sessions
            ):
                if found["remaining"] or found["deleted"]:
                    left[found["table"]] = int(found["remaining"]) + int(found["deleted"])
        if left:
            where = ", ".join(f"{name}: {count}" for name, count in sorted(left.items()))
            return "failed", sum(left.values()), f"rows left: {where}"[:500]
        return "done", 0, None

    async def _anonymize_patient(self, run: _Run) -> tuple[str, int | None, str | None]:
        org = run.row.organization_id
        async with self._db.admin_transaction() as q:
            found = await repo.json_rows(q, ANONYMIZE_READ, run.params)
            if not found:
                return "done", 0, "no record"
            sealed = found[0]
            birth = self._open(org, run.patient_id, "birth_date", sealed.get("birth_date_sealed"))
            address = self._open(org, run.patient_id, "address", sealed.get("address_sealed"))
            changed = await q.execute(
                ANONYMIZE,
                {
                    **run.params,
                    "year": int(birth[:4]) if birth else None,
                    "region": region_of(address),
                },
            )
        return "done", changed, "identifiers replaced; clinical facts kept"

    async def _verify_anonymized(self, run: _Run) -> tuple[str, int | None, str | None]:
        async with self._db.admin_transaction() as q:
            left = await repo.count(q, ANONYMIZED_LEFT, run.params)
        return ("done", 0, None) if not left else ("failed", left, "identifiers left")

    async def _restrict_patient(self, run: _Run) -> tuple[str, int | None, str | None]:
        async with self._db.admin_transaction() as q:
            changed = await q.execute(RESTRICT, run.params)
            changed += await q.execute(RESTRICT_SEGMENTS, run.params)
        return "done", changed, "readable by admins only; out of segments and campaigns"

    async def _restrict_telemetry(self, run: _Run) -> tuple[str, int | None, str | None]:
        if self._telemetry is None:
            return "skipped", None, "telemetry is not configured (TELEMETRY_INTERNAL_URL)"
        await self._telemetry.erase(
            run.row.organization_id, run.user_id, run.sessions, reason="restrict"
        )
        return "done", 0, "analytics no longer taken in"

    async def _export(self, run: _Run) -> tuple[str, int | None, str | None]:
        files: dict[str, bytes] = {}
        manifest: list[dict[str, Any]] = []

        def add(store: str, table: str, rows: Sequence[Any]) -> None:
            data = orjson.dumps(list(rows), option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
            name = f"{store}/{table}.json"
            files[name] = data
            manifest.append(
                {"store": store, "table": table, "rows": len(rows), "file": name,
                 "sha256": hashlib.sha256(data).hexdigest()}
            )  # fmt: skip

        org = run.row.organization_id
        async with self._db.admin_transaction() as q:
            for table in data_map.CORE:
                if table.exported and table.rows:
                    rows = await repo.json_rows(q, table.rows, run.params)
                    add("core", table.table, [self._opened(table.table, org, r) for r in rows])
            attachments = await repo.attachments(q, org, run.patient_id)
        detail = None
        if self._telemetry is not None:
            telemetry = await self._telemetry.export(org, run.user_id, run.sessions)
            for name, rows in telemetry.items():
                store = "clickhouse" if name.startswith("telemetry.") else "telemetry"
                add(store, name, rows)
        else:
            detail = "telemetry is not configured: its stores are not in the file"
        kept = []
        for attachment in attachments:
            data = await self._blobs.get(attachment.storage_key, max_bytes=25 * 2**20)
            if data is not None:
                name = f"blobs/attachments/{attachment.id}-{attachment.filename}"
                files[name] = data
                kept.append({"id": str(attachment.id), "file": name,
                             "sha256": hashlib.sha256(data).hexdigest()})  # fmt: skip
        manifest.append({"store": "blobs", "table": "attachments", "rows": len(kept),
                         "files": kept})  # fmt: skip
        body = io.BytesIO()
        with zipfile.ZipFile(body, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in sorted(files.items()):
                archive.writestr(name, data)
            archive.writestr(
                "manifest.json",
                orjson.dumps(
                    {"request_id": str(run.row.id), "organization_id": str(org),
                     "made_at": self._now().isoformat(), "files": manifest},
                    option=orjson.OPT_INDENT_2,
                ),
            )  # fmt: skip
        data = body.getvalue()
        key = f"{org}/{run.row.id}"
        await self._blobs.delete(key)  # a rerun after a crash replaces its own file
        await self._blobs.put(key, data, ZIP)
        async with self._db.admin_transaction() as q:
            await repo.set_export(q, run.row, key, len(data), self._now() + EXPORT_TTL)
        status = "skipped" if detail else "done"
        return status, sum(int(m["rows"]) for m in manifest), detail

    def _open(self, org: UUID, patient_id: UUID, name: str, hexed: Any) -> str | None:
        if not hexed:
            return None
        sealed = bytes.fromhex(str(hexed)[2:])
        return self._sealer.open(sealed, patients.aad(org, patient_id, name)).decode()

    def _opened(self, table: str, org: UUID, row: dict[str, Any]) -> dict[str, Any]:
        """A row with its sealed values opened (the subject's own health data)."""
        out = dict(row)
        if table not in ("patients.patients", "forms.forms", "documents.documents"):
            return out
        row_id = UUID(str(row["id"]))
        if table == "patients.patients":
            for name in _SEALED_PATIENT:
                out[name] = self._open(org, row_id, name, out.pop(f"{name}_sealed", None))
            custom = self._open(org, row_id, "custom", out.pop("custom_sealed", None))
            out["custom_sensitive"] = orjson.loads(custom) if custom else {}
            out.pop("national_id_index", None)
            out.pop("phone_index", None)
        elif table == "forms.forms" and out.get("sealed_answers"):
            sealed = bytes.fromhex(str(out.pop("sealed_answers"))[2:])
            opened = self._sealer.open(sealed, forms.answers_aad(org, row_id))
            out["answers"] = {**(out.get("answers") or {}), **orjson.loads(opened)}
        elif table == "documents.documents" and out.get("body_sealed"):
            sealed = bytes.fromhex(str(out.pop("body_sealed"))[2:])
            out["body"] = orjson.loads(self._sealer.open(sealed, documents.body_aad(org, row_id)))
        return out

    async def delete_old_exports(self) -> int:
        async with self._db.admin_transaction() as q:
            old = await repo.old_exports(q)
        for found in old:
            await self._blobs.delete(found.export_key)
            async with self._db.admin_transaction() as q:
                await repo.forget_export(q, found.organization_id, found.id)
        return len(old)


def _system(row: repo.RequestRow) -> Principal:
    """The worker acts for the organization as its system (no user)."""
    return Principal(user_id=None, organization_id=row.organization_id, role="admin")


def region_of(address: str | None) -> str | None:
    """Address → region: its last comma-separated part (a city or country), never the street."""
    if not address:
        return None
    parts = [part.strip() for part in address.replace("\n", ",").split(",") if part.strip()]
    return parts[-1][:100] if len(parts) > 1 else None


# Anonymization reads the sealed birth date and address, then replaces every identifier.
ANONYMIZE_READ = (
    "SELECT jsonb_build_object('birth_date_sealed', birth_date_sealed, 'address_sealed',"
    " address_sealed) AS row FROM patients.patients"
    " WHERE organization_id = %(org)s AND id = %(patient)s"
)
ANONYMIZE = (
    "UPDATE patients.patients SET given_name = 'Anonymous', family_name = 'Patient',"
    " email = NULL, national_id_sealed = NULL, national_id_index = NULL, phone_sealed = NULL,"
    " phone_index = NULL, birth_date_sealed = NULL, birth_year = %(year)s,"
    " address_sealed = NULL, region = %(region)s, user_id = NULL,"
    " anonymized_at = now(), version = version + 1, updated_at = now()"
    " WHERE organization_id = %(org)s AND id = %(patient)s AND anonymized_at IS NULL"
)
ANONYMIZED_LEFT = (
    "SELECT count(*) FROM patients.patients WHERE organization_id = %(org)s AND id = %(patient)s"
    " AND (anonymized_at IS NULL OR email IS NOT NULL OR phone_sealed IS NOT NULL"
    " OR national_id_sealed IS NOT NULL OR birth_date_sealed IS NOT NULL"
    " OR address_sealed IS NOT NULL OR user_id IS NOT NULL)"
)
# …and closes the account as an erasure does (no more sign-in), and drops mail to them.
ANONYMIZE_ALSO = frozenset(
    {
        "identity.users",
        "identity.memberships",
        "identity.refresh_tokens",
        "identity.action_tokens",
        "identity.email_outbox",
    }
)
RESTRICT = (
    "UPDATE patients.patients SET restricted_at = now(), version = version + 1,"
    " updated_at = now() WHERE organization_id = %(org)s AND id = %(patient)s"
    " AND restricted_at IS NULL"
)
RESTRICT_SEGMENTS = (
    "DELETE FROM segments.members WHERE organization_id = %(org)s AND patient_id = %(patient)s"
)
