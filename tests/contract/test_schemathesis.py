"""Schemathesis over every operation of the contract, against a live uvicorn server.

The schema is the committed bundle, which `/openapi.yaml` serves byte for byte (tested in
tests/integration/test_system.py); every default check runs, positive and negative cases,
as an organization admin, and (with fewer examples) anonymously and as each other role.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
import uuid
import zlib
from pathlib import Path

import psycopg
import pytest
import schemathesis
from contract.calls import call_and_validate
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from carebase.apps.common import build_tokens
from carebase.config import PROJECT_ROOT, Settings
from carebase.operations.devstack import EmbeddedStack
from carebase.principal import Principal
from carebase.security import permissions
from carebase.services import form_schema
from carebase.services.appointments import new_uid
from carebase.web.contract import Contract

pytestmark = pytest.mark.contract

CONFIG_PATH = Path(__file__).with_name("schemathesis.toml")
BUNDLE = PROJECT_ROOT / "generated" / "openapi" / "core.yaml"
schema = schemathesis.openapi.from_path(
    BUNDLE, config=SchemathesisConfig.from_path(str(CONFIG_PATH))
)
# The other roles: examples and fuzzing, without the coverage phase's exhaustive boundary
# cases, which the admin run already sends (most of a role's difference is decided before
# the body is read, so it would only multiply the time).
role_schema = schemathesis.openapi.from_path(
    BUNDLE,
    config=SchemathesisConfig.from_str(
        CONFIG_PATH.read_text() + "\n[phases.coverage]\nenabled = false\n",
        base_dir=str(CONFIG_PATH.parent),
    ),
)
CALLERS = ("anonymous", "admin", "specialist", "staff", "patient")
# The ids the contract's examples use, given real rows in the contract clinic (and fixed in
# booking bodies by schemathesis.toml), so generated bookings can succeed and their links run.
SPECIALIST_ID = "7e6d5c4b-3a2f-4e1d-8c0b-9a8f7e6d5c4b"
PATIENT_ID = "9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d"
TEMPLATE_ID = "3c2b1a0f-9e8d-4c7b-a6f5-e4d3c2b1a0f9"
SPECIALTY_ID = "2b1a0f9e-8d7c-4b6a-9e5d-4c3b2a1f0e9d"
FORM_TEMPLATE_ID = "4d3c2b1a-0f9e-4d8c-b7a6-f5e4d3c2b1a0"
VISIT_ID = "5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a"  # a past visit the documents are written for
# A published form every role may sign, with an item of each kind a generator can answer.
FORM_ITEMS = form_schema.normalised(
    [
        {"link_id": "pain", "text": "Pain", "type": "integer", "min": 0, "max": 10},
        {"link_id": "note", "text": "Note", "type": "text", "sensitive": True},
        {"link_id": "side", "text": "Side", "type": "choice", "options": ["left", "right"]},
    ]
)
EVERY_HOUR = json.dumps(
    [
        {"weekday": day, "start": "00:00", "end": "24:00"}
        for day in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    ]
)


@pytest.fixture(scope="session")
def tokens_by_caller(stack: EmbeddedStack, settings: Settings) -> dict[str, dict[str, str]]:
    """Members of a fresh organization (one of each role), with access tokens the live server
    accepts; the specialist works every hour and the patient has a record, so bookings can
    succeed."""
    issuer = build_tokens(settings)
    headers: dict[str, dict[str, str]] = {"anonymous": {}}
    with psycopg.connect(stack.database_admin_url, autocommit=True) as conn:
        org = conn.execute(
            "INSERT INTO platform.organizations (slug, name) VALUES (%s, 'Contract clinic')"
            " RETURNING id",
            (f"contract-{uuid.uuid4().hex[:8]}",),
        ).fetchone()
        assert org is not None
        users = {}
        for role in ("admin", "specialist", "staff", "patient"):
            user = conn.execute(
                "INSERT INTO identity.users (email) VALUES (%s) RETURNING id",
                (f"{role}-{uuid.uuid4().hex[:8]}@example.com",),
            ).fetchone()
            assert user is not None
            users[role] = user[0]
            conn.execute(
                "INSERT INTO identity.memberships (organization_id, user_id, role)"
                " VALUES (%s, %s, %s)",
                (org[0], user[0], role),
            )
            token = issuer.issue(subject=str(user[0]), organization_id=str(org[0]), role=role)
            headers[role] = {"Authorization": f"Bearer {token}"}
        conn.execute(
            "INSERT INTO specialists.specialties (organization_id, id, name)"
            " VALUES (%s, %s, 'Physiotherapy')",
            (org[0], SPECIALTY_ID),
        )
        conn.execute(
            "INSERT INTO specialists.specialists (organization_id, id, user_id, display_name)"
            " VALUES (%s, %s, %s, 'Dr Contract')",
            (org[0], SPECIALIST_ID, users["specialist"]),
        )
        conn.execute(
            "INSERT INTO scheduling.schedules (organization_id, specialist_id, time_zone, weekly)"
            " VALUES (%s, %s, 'UTC', %s)",
            (org[0], SPECIALIST_ID, EVERY_HOUR),
        )
        conn.execute(
            "INSERT INTO patients.patients (organization_id, id, user_id, given_name, family_name)"
            " VALUES (%s, %s, %s, 'Pat', 'Contract')",
            (org[0], PATIENT_ID, users["patient"]),
        )
        conn.execute(
            "INSERT INTO scheduling.appointment_templates"
            " (organization_id, id, slug, title, duration_minutes, max_advance_days)"
            " VALUES (%s, %s, 'contract-visit', 'Visit', 30, 730)",
            (org[0], TEMPLATE_ID),
        )
        conn.execute(
            "INSERT INTO scheduling.appointments (organization_id, id, uid, specialist_id,"
            " patient_id, title, status, starts_at, ends_at, blocked, time_zone)"
            " VALUES (%s, %s, %s, %s, %s, 'Past visit', 'done', '2025-06-02T09:00Z',"
            " '2025-06-02T10:00Z', tstzrange('2025-06-02T09:00Z', '2025-06-02T10:00Z'), 'UTC')",
            (org[0], VISIT_ID, new_uid(), SPECIALIST_ID, PATIENT_ID),
        )
        conn.execute(
            "INSERT INTO forms.templates (organization_id, id, title, signer_roles, latest_version)"
            " VALUES (%s, %s, 'Intake', '{admin,specialist,staff,patient}', 1)",
            (org[0], FORM_TEMPLATE_ID),
        )
        conn.execute(
            "INSERT INTO forms.template_versions (organization_id, template_id, number, title,"
            " description, signer_roles, items, schema_sha256)"
            " VALUES (%s, %s, 1, 'Intake', '', '{admin,specialist,staff,patient}', %s, %s)",
            (
                org[0],
                FORM_TEMPLATE_ID,
                json.dumps(FORM_ITEMS),
                form_schema.schema_sha256(FORM_ITEMS),
            ),
        )
    return headers


# Examples per operation, within make test's 10-minute budget (with issue 14's ~200 operations
# the admin run took 157 s at 25 examples, the four other roles 115 s at 8, and the suite
# 10 min 4 s at 18 and 5). The coverage phase's boundary cases run whatever the number; these
# bound the random fuzzing, which every CI run draws afresh.
ADMIN_EXAMPLES, ROLE_EXAMPLES = 12, 3


@schema.parametrize()
@settings(max_examples=ADMIN_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_operation_conforms(
    case: schemathesis.Case, live_server: str, tokens_by_caller: dict[str, dict[str, str]]
) -> None:
    """As an admin, who may call nearly everything: the most examples."""
    call_and_validate(case, live_server, tokens_by_caller["admin"])


@pytest.mark.parametrize("caller", [c for c in CALLERS if c != "admin"])
@role_schema.parametrize()
@settings(max_examples=ROLE_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_operation_conforms_for_every_role(
    case: schemathesis.Case,
    live_server: str,
    tokens_by_caller: dict[str, dict[str, str]],
    caller: str,
) -> None:
    """Every other role (and nobody): refusals and role-narrowed answers conform too, with
    fewer examples each."""
    if _refused_unread(case.operation.definition.raw.get("operationId", ""), caller):
        pytest.skip("refused before its input is read; a sample of these runs (see REFUSALS)")
    call_and_validate(case, live_server, tokens_by_caller[caller])


# A caller without an operation's permission (or without credentials) is refused before any
# parameter or body is read, on one path whatever the input: test_role_matrix checks every
# operation × role for it. Here a fixed tenth of those pairs still runs, so the refusal's
# problem document is checked against the contract for every caller on many operations.
OPERATIONS = Contract.for_service("core").operations


def _refused_unread(operation_id: str, caller: str) -> bool:
    operation = next((op for op in OPERATIONS.values() if op.operation_id == operation_id), None)
    if operation is None or operation.public:
        return False
    if caller != "anonymous":
        principal = Principal(user_id=uuid.uuid4(), organization_id=uuid.uuid4(), role=caller)
        if operation.permission is not None and permissions.allows(principal, operation.permission):
            return False
    return zlib.crc32(f"{operation_id}:{caller}".encode()) % REFUSALS != 0


REFUSALS = 10


# Each group gets its own run, so its scenarios are not spread over the other's links.
STATEFUL_GROUPS = {
    "clinical": r"^/v1/(patients|specialties|specialists|custom-fields)",
    # Segments and broadcasts share a run: their links are few, and each run's start-up
    # costs seconds.
    "templates": r"^/v1/(appointment-templates|segments|broadcasts)",
    "appointments": r"^/v1/appointments",
    "forms": r"^/v1/(form-templates|forms)",
    "documents": r"^/v1/(reports|prescriptions)",
    "attachments": r"^/v1/attachments",
    "webhooks": r"^/v1/webhooks/endpoints",
}
# For the appointments' run: starts drawn from free future hours and a plain reason, so the
# scenarios get past "in the past" and reach reschedule and cancel (the other phases fuzz
# these fields freely).
STATEFUL_APPOINTMENTS = """
[dictionaries.future-starts]
values = [{starts}]

[parameters]
"body.starts_at" = {{ dictionary = "future-starts" }}
"body.reason" = "Moved by the contract test."
"""


def _stateful_config(group: str, directory: Path) -> Path:
    base = Path(__file__).with_name("schemathesis.toml")
    if group != "appointments":
        return base
    first = dt.datetime(2031, 1, 6, tzinfo=dt.UTC)
    starts = ", ".join(
        f'"{(first + dt.timedelta(hours=h)).isoformat()}"' for h in range(0, 24 * 60, 7)
    )
    config = directory / "schemathesis.toml"
    config.write_text(base.read_text() + STATEFUL_APPOINTMENTS.format(starts=starts))
    return config


@pytest.mark.parametrize("group", sorted(STATEFUL_GROUPS))
def test_stateful_links_conform(
    live_server: str,
    tokens_by_caller: dict[str, dict[str, str]],
    tmp_path: Path,
    group: str,
    admin_conn: psycopg.Connection[tuple[object, ...]],
) -> None:
    """Schemathesis' stateful phase follows the OpenAPI links of the clinical and scheduling
    resources (create → get → update with the ETag → delete; book → get → reschedule with the
    ETag → cancel, and the history) as an admin of a fresh clinic.

    Run through schemathesis' own runner: a state machine against a live server cannot
    replay identically, and the runner reports such scenarios as they ran (a hypothesis
    state machine in-process raises FlakyStrategyDefinition instead; schemathesis#4132).
    """
    token = tokens_by_caller["admin"]["Authorization"]
    if group == "webhooks":  # room under the 50-endpoint limit the other phases may have reached
        admin_conn.execute(
            "DELETE FROM webhooks.endpoints WHERE organization_id IN"
            " (SELECT id FROM platform.organizations WHERE slug LIKE 'contract-%%')"
        )
    # Every run must pass. A run whose random scenarios all stopped at their first step
    # (each generated create refused: a taken time, a rule a schema cannot state) follows no
    # link; then a fresh seed gets two more tries before the coverage check fails (CI once
    # met 0 of 10 appointment links in 11 scenarios).
    for _ in range(3):
        output = _stateful_run(group, live_server, token, tmp_path)
        covered = re.search(r"API Links:\s+(\d+) covered", output)
        assert covered is not None, output[-2000:]
        if int(covered.group(1)) > 0:
            break
    assert int(covered.group(1)) > 0, output[-2000:]


def _stateful_run(group: str, live_server: str, token: str, tmp_path: Path) -> str:
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "--config-file",
            str(_stateful_config(group, tmp_path)),
            "run",
            str(BUNDLE),
            "--url",
            live_server,
            "--phases",
            "stateful",
            "--include-path-regex",
            STATEFUL_GROUPS[group],
            "--header",
            f"Authorization: {token}",
            "--max-examples",
            "40",
            "--workers",
            "1",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    return output
