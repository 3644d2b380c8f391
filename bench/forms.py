"""Forms for `make bench`: a published 40-item template (4 groups of 9 questions, enable_when,
sensitive items) in the benchmark clinic, FORMS forms filled in from it, and the wrk scripts
that read a random one and submit them in turn.

A form is submitted once, so the submit run walks the forms in order (each wrk thread its own
stride) and `reset` puts them back in progress before every run, outside the measured time.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from carebase.operations import devstack
from carebase.security.encryption import DataKeyring
from carebase.services import form_schema
from carebase.services.forms import seal_answers

FORMS = int(os.environ.get("BENCH_FORMS", "20000"))
TEMPLATE_ID = uuid.UUID("f0f0f0f0-0000-4000-8000-000000000040")
KINDS = (
    "integer",
    "boolean",
    "string",
    "choice",
    "multi-choice",
    "decimal",
    "date",
    "text",
    "string",
)


def items() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for group in range(4):
        gid = f"g{group}"
        found.append({"link_id": gid, "text": f"Section {group + 1}", "type": "group"})
        for number, kind in enumerate(KINDS):
            item: dict[str, Any] = {
                "link_id": f"{gid}q{number}",
                "parent_link_id": gid,
                "text": f"Question {number + 1} of section {group + 1}",
                "type": kind,
                "required": number < 4,
            }
            if kind in ("choice", "multi-choice"):
                item["options"] = ["none", "mild", "moderate", "severe"]
            if kind in ("integer", "decimal"):
                item |= {"min": 0, "max": 100}
            if number == 8:
                item["sensitive"] = True
            if number == 7:
                item["enable_when"] = {
                    "conditions": [{"question": f"{gid}q1", "operator": "=", "answer": True}]
                }
            found.append(item)
    return form_schema.normalised(found)


def answers(seed: int) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for group in range(4):
        gid = f"g{group}"
        values |= {
            f"{gid}q0": (seed + group) % 101,
            f"{gid}q1": (seed + group) % 2 == 0,
            f"{gid}q2": f"Answer {seed}-{group}",
            f"{gid}q3": ("none", "mild", "moderate", "severe")[(seed + group) % 4],
            f"{gid}q4": ["mild", "severe"],
            f"{gid}q5": 12.5,
            f"{gid}q6": "2025-10-01",
            f"{gid}q7": "A longer free-text answer about how the week went, with some detail.",
            f"{gid}q8": f"+40 721 {seed % 1000:03d} {group:03d}",
        }
    return values


def prepare(
    stack: devstack.EmbeddedStack,
    clinic: uuid.UUID,
    bench_dir: Path,
    keyring: DataKeyring,
) -> dict[str, dict[str, object]]:
    """Seed the template and the forms (once); write form-get.lua and form-submit.lua; one
    sample request of each for the preflight."""
    started = time.monotonic()
    form_items = items()
    with psycopg.connect(stack.database_admin_url) as conn:
        ids = [
            str(r[0])
            for r in conn.execute(
                "SELECT id FROM forms.forms WHERE organization_id = %s AND template_id = %s"
                " ORDER BY created_at, id",
                (clinic, TEMPLATE_ID),
            )
        ]
        if not ids:
            ids = _seed(conn, clinic, keyring, form_items)
    print(f"bench: {len(ids):,} forms of 40 items ready ({time.monotonic() - started:.0f} s)")
    quoted = ",".join(f'"{i}"' for i in ids)
    (bench_dir / "form-get.lua").write_text(
        f"ids = {{{quoted}}}\n"
        "math.randomseed(os.time())\n"
        "request = function()\n"
        '  return wrk.format(nil, "/v1/forms/" .. ids[math.random(#ids)])\n'
        "end\n"
    )
    (bench_dir / "form-submit.lua").write_text(
        f"ids = {{{quoted}}}\n"
        "threads = 0\n"
        "setup = function(thread) threads = threads + 1; thread:set('id', threads) end\n"
        "init = function() n = id or 1 end\n"
        "request = function()\n"
        "  local form = ids[n]\n"
        "  n = n + 2\n"
        '  return wrk.format("POST", "/v1/forms/" .. form .. "/submit")\n'
        "end\n"
    )
    return {
        "form": {"method": "GET", "path": f"/v1/forms/{ids[0]}"},
        "submit": {"method": "POST", "path": f"/v1/forms/{ids[-1]}/submit"},
    }


def reset(stack: devstack.EmbeddedStack) -> None:
    """Every benchmark form back in progress, as it was seeded. wrk stops with requests still
    in flight (up to one per connection): they may submit after a first pass, so this repeats
    until a pass finds nothing to undo (the next run would answer those forms 409)."""
    with psycopg.connect(stack.database_admin_url, autocommit=True) as conn:
        for _ in range(50):
            undone = conn.execute(
                "UPDATE forms.forms SET status = 'in_progress', submitted_at = NULL"
                " WHERE template_id = %s AND status <> 'in_progress'",
                (TEMPLATE_ID,),
            ).rowcount
            if undone == 0:
                break
            time.sleep(0.2)
        # The undone submits left as many dead rows: clear them before the next measurement.
        conn.execute("VACUUM (ANALYZE) forms.forms")


def _seed(
    conn: psycopg.Connection[tuple[Any, ...]],
    clinic: uuid.UUID,
    keyring: DataKeyring,
    form_items: list[dict[str, Any]],
) -> list[str]:
    conn.execute(
        "INSERT INTO forms.templates (organization_id, id, title, signer_roles, latest_version)"
        " VALUES (%s, %s, 'Weekly check-in (40 items)', '{specialist,staff}', 1)",
        (clinic, TEMPLATE_ID),
    )
    conn.execute(
        "INSERT INTO forms.template_versions (organization_id, template_id, number, title,"
        " description, signer_roles, items, schema_sha256)"
        " VALUES (%s, %s, 1, 'Weekly check-in (40 items)', '', '{specialist,staff}', %s, %s)",
        (clinic, TEMPLATE_ID, Jsonb(form_items), form_schema.schema_sha256(form_items)),
    )
    patients = [
        r[0]
        for r in conn.execute(
            "SELECT id FROM patients.patients WHERE organization_id = %s LIMIT 1000", (clinic,)
        )
    ]
    created = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    ids = []
    with (
        conn.cursor() as cur,
        cur.copy(
            "COPY forms.forms (organization_id, id, template_id, template_version, patient_id,"
            " status, answers, sealed_answers, created_at) FROM STDIN"
        ) as copy,
    ):
        for number in range(FORMS):
            form_id = uuid.uuid4()
            plain, sealed = seal_answers(keyring, clinic, form_id, form_items, answers(number))
            copy.write_row(
                (
                    clinic,
                    form_id,
                    TEMPLATE_ID,
                    1,
                    patients[number % len(patients)],
                    "in_progress",
                    json.dumps(plain),
                    sealed,
                    created + dt.timedelta(seconds=number),
                )
            )
            ids.append(str(form_id))
    conn.execute("ANALYZE forms.forms")
    return ids
