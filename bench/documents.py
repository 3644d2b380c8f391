"""Reports for `make bench`: BENCH_REPORTS final reports (default 2,000) on past visits of
the benchmark clinic, and the wrk script that asks for a random one's PDF.

Every report has its own text, so the renderer cannot answer from a cache of the previous
one; each read of a final report is audited, as in production.
"""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from carebase.operations import devstack
from carebase.security.encryption import DataKeyring
from carebase.services.documents import Identity, content_sha256, seal_body

REPORTS = int(os.environ.get("BENCH_REPORTS", "2000"))
TITLE = "Bench session report"


def body(number: int) -> dict[str, Any]:
    return {
        "summary": f"Session {number}: knee flexion {90 + number % 40}°, pain {number % 10}/10.",
        "findings": "Mild swelling at the medial joint line; no instability. " * 3,
        "plan": "Continue the home programme twice a day; add step-ups (2 × 10). " * 2,
        "recommendations": "Ice for 15 minutes after exercising.",
    }


def prepare(
    stack: devstack.EmbeddedStack,
    clinic: uuid.UUID,
    bench_dir: Path,
    keyring: DataKeyring,
) -> dict[str, dict[str, object]]:
    started = time.monotonic()
    with psycopg.connect(stack.database_admin_url) as conn:
        ids = [
            str(r[0])
            for r in conn.execute(
                "SELECT id FROM documents.documents WHERE organization_id = %s AND title = %s",
                (clinic, TITLE),
            )
        ]
        if not ids:
            ids = _seed(conn, clinic, keyring)
    print(f"bench: {len(ids):,} final reports ready ({time.monotonic() - started:.0f} s)")
    quoted = ",".join(f'"{i}"' for i in ids)
    (bench_dir / "report-pdf.lua").write_text(
        f"ids = {{{quoted}}}\n"
        "math.randomseed(os.time())\n"
        "request = function()\n"
        '  return wrk.format(nil, "/v1/reports/" .. ids[math.random(#ids)] .. "/pdf")\n'
        "end\n"
    )
    return {"report_pdf": {"method": "GET", "path": f"/v1/reports/{ids[0]}/pdf"}}


def _seed(
    conn: psycopg.Connection[tuple[Any, ...]], clinic: uuid.UUID, keyring: DataKeyring
) -> list[str]:
    visits = conn.execute(
        "SELECT id, patient_id, (SELECT user_id FROM specialists.specialists s"
        "  WHERE s.organization_id = a.organization_id AND s.id = a.specialist_id)"
        " FROM scheduling.appointments a WHERE organization_id = %s AND status <> 'held'"
        " ORDER BY starts_at LIMIT %s",
        (clinic, REPORTS),
    ).fetchall()
    finalized = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
    ids = []
    with (
        conn.cursor() as cur,
        cur.copy(
            "COPY documents.documents (organization_id, id, kind, appointment_id, patient_id, title,"
            " status, body_sealed, author_user_id, finalized_at, finalized_by, content_sha256,"
            " created_at, updated_at) FROM STDIN"
        ) as copy,
    ):
        for number in range(REPORTS):
            visit, patient, author = visits[number % len(visits)]
            document_id = uuid.uuid4()
            text = body(number)
            identity = Identity(document_id, clinic, "report", visit, patient, author, TITLE)
            copy.write_row(
                (
                    clinic,
                    document_id,
                    "report",
                    visit,
                    patient,
                    TITLE,
                    "final",
                    seal_body(keyring, clinic, document_id, text),
                    author,
                    finalized,
                    author,
                    content_sha256(identity, text),
                    finalized,
                    finalized,
                )
            )
            ids.append(str(document_id))
    conn.execute("ANALYZE documents.documents")
    return ids
