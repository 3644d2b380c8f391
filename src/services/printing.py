"""What a report, a prescription or a form looks like on paper, as a `Printable`.

Only text is produced here (the layout is `integrations/pdf/document.typ`): times in the
visit's own zone, the author as the clinic knows them, the hash that fixes the content. A
form prints the items its answers enable, in the order of its pinned version.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any
from zoneinfo import ZoneInfo

from carebase.integrations.pdf import Entry, Printable, SignatureBlock, Table
from carebase.integrations.pdf import Section as PdfSection
from carebase.persistence.documents import DocumentRow, PrintContext
from carebase.persistence.forms import FormRow, VersionRow
from carebase.services import form_schema

KIND_TITLES = {"report": "Session report", "prescription": "Prescription"}
STATUS = {"draft": "Draft", "final": "Final", "entered_in_error": "Entered in error"}
REPORT_SECTIONS = (
    ("summary", "Summary"),
    ("findings", "Findings"),
    ("plan", "Plan"),
    ("recommendations", "Recommendations"),
)
ITEM_COLUMNS = ("Medication", "Dose", "Route", "Frequency", "Days", "Quantity", "Repeats")


def _when(instant: dt.datetime | None, zone: str | None) -> str:
    if instant is None:
        return "—"
    local = instant.astimezone(ZoneInfo(zone or "UTC"))
    return f"{local:%Y-%m-%d %H:%M} ({zone or 'UTC'})"


def _meta(context: PrintContext) -> list[tuple[str, str]]:
    return [
        ("Patient", f"{context.given_name} {context.family_name}"),
        ("Visit", _when(context.starts_at, context.time_zone)),
        ("Author", context.author or "—"),
    ]


def document(row: DocumentRow, body: Mapping[str, Any], context: PrintContext) -> Printable:
    kind = KIND_TITLES[row.kind]
    sections: list[PdfSection] = []
    table = None
    if row.kind == "report":
        sections = [
            PdfSection(heading, [Entry(str(body[key]))])
            for key, heading in REPORT_SECTIONS
            if body.get(key)
        ]
    else:
        items = body.get("items", [])
        table = Table(
            ITEM_COLUMNS,
            [
                [
                    str(item["medication"]),
                    str(item["dose"]),
                    str(item["route"]),
                    str(item["frequency"]),
                    str(item["duration_days"]),
                    str(item["quantity"]),
                    str(item.get("repeats", 0)),
                ]
                for item in items
            ],
        )
        instructions = [
            Entry(str(item["instructions"]), label=str(item["medication"]))
            for item in items
            if item.get("instructions")
        ]
        if instructions:
            sections.append(PdfSection("Instructions", instructions))
        if body.get("notes"):
            sections.append(PdfSection("Notes", [Entry(str(body["notes"]))]))
    signature = None
    if row.finalized_at is not None:
        lines = [
            ("Finalized", _when(row.finalized_at, context.time_zone)),
            ("By", context.author or "—"),
            ("SHA-256", row.content_sha256 or ""),
        ]
        if row.status == "entered_in_error":
            lines.append(("Withdrawn", row.error_reason or ""))
        signature = SignatureBlock("Finalized and locked", lines)
    return Printable(
        clinic=context.clinic,
        kind=kind,
        title=row.title,
        author=context.author or "",
        status=STATUS[row.status],
        meta=_meta(context),
        sections=sections,
        table=table,
        signature=signature,
        footer=f"{kind} {row.id} · version {row.version}",
        timestamp=row.updated_at,
    )


def form(
    row: FormRow, pinned: VersionRow, answers: Mapping[str, Any], context: PrintContext
) -> Printable:
    shown = form_schema.enabled(pinned.items, answers)
    sections: list[PdfSection] = []
    current = PdfSection(None, [])
    for item in pinned.items:
        if item["link_id"] not in shown:
            continue
        if item["type"] == "group":
            if current.entries or current.heading:
                sections.append(current)
            current = PdfSection(str(item["text"]), [])
            continue
        if item["type"] == "display":
            current.entries.append(Entry(str(item["text"])))
            continue
        current.entries.append(
            Entry(_answer(answers.get(item["link_id"])), label=str(item["text"]))
        )
    if current.entries or current.heading:
        sections.append(current)
    signature = None
    if row.signed_at is not None:
        signature = SignatureBlock(
            f"Signed ({row.signature_meaning})",
            [
                ("Signed", _when(row.signed_at, context.time_zone)),
                ("Role", row.signer_role or ""),
                ("Content SHA-256", row.content_sha256 or ""),
                ("Signature SHA-256", row.signature_sha256 or ""),
            ],
        )
    return Printable(
        clinic=context.clinic,
        kind="Form",
        title=row.title,
        author="",
        status=row.status.replace("_", " ").capitalize(),
        meta=[
            ("Patient", f"{context.given_name} {context.family_name}"),
            ("Visit", _when(context.starts_at, context.time_zone)),
            ("Version", f"{row.template_version} (schema {pinned.schema_sha256[:12]})"),
        ],
        sections=sections,
        signature=signature,
        footer=f"Form {row.id} · version {row.version}",
        timestamp=row.updated_at,
    )


def _answer(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "Yes" if value else "No"
    if isinstance(value, Sequence) and not isinstance(value, str):
        return ", ".join(str(v) for v in value)
    return str(value)
