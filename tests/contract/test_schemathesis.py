"""Schemathesis over every operation of the contract, against a live uvicorn server.

The schema is the committed bundle, which `/openapi.yaml` serves byte for byte (tested in
tests/integration/test_system.py); every default check runs, positive and negative cases,
once anonymously and once each with real tokens of an organization admin and of a patient.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from carebase.apps.common import build_tokens
from carebase.config import PROJECT_ROOT, Settings
from carebase.operations.devstack import EmbeddedStack

pytestmark = pytest.mark.contract

CONFIG = SchemathesisConfig.from_path(str(Path(__file__).with_name("schemathesis.toml")))
schema = schemathesis.openapi.from_path(
    PROJECT_ROOT / "generated" / "openapi" / "core.yaml", config=CONFIG
)
CALLERS = ("anonymous", "admin", "patient")


@pytest.fixture(scope="session")
def tokens_by_caller(stack: EmbeddedStack, settings: Settings) -> dict[str, dict[str, str]]:
    """Members of a fresh organization, with access tokens the live server accepts."""
    issuer = build_tokens(settings)
    headers: dict[str, dict[str, str]] = {"anonymous": {}}
    with psycopg.connect(stack.database_admin_url, autocommit=True) as conn:
        org = conn.execute(
            "INSERT INTO platform.organizations (slug, name) VALUES (%s, 'Contract clinic')"
            " RETURNING id",
            (f"contract-{uuid.uuid4().hex[:8]}",),
        ).fetchone()
        assert org is not None
        for role in ("admin", "patient"):
            user = conn.execute(
                "INSERT INTO identity.users (email) VALUES (%s) RETURNING id",
                (f"{role}-{uuid.uuid4().hex[:8]}@example.com",),
            ).fetchone()
            assert user is not None
            conn.execute(
                "INSERT INTO identity.memberships (organization_id, user_id, role)"
                " VALUES (%s, %s, %s)",
                (org[0], user[0], role),
            )
            token = issuer.issue(subject=str(user[0]), organization_id=str(org[0]), role=role)
            headers[role] = {"Authorization": f"Bearer {token}"}
    return headers


@pytest.mark.parametrize("caller", CALLERS)
@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_operation_conforms(
    case: schemathesis.Case,
    live_server: str,
    tokens_by_caller: dict[str, dict[str, str]],
    caller: str,
) -> None:
    case.call_and_validate(base_url=live_server, headers=tokens_by_caller[caller])


def test_stateful_links_conform(
    live_server: str, tokens_by_caller: dict[str, dict[str, str]], tmp_path: Path
) -> None:
    """Schemathesis' stateful phase follows the OpenAPI links of the clinical resources
    (create → get → update with the ETag → delete) as an admin of a fresh clinic.

    Run through schemathesis' own runner: a state machine against a live server cannot
    replay identically, and the runner reports such scenarios as they ran (a hypothesis
    state machine in-process raises FlakyStrategyDefinition instead; schemathesis#4132).
    """
    token = tokens_by_caller["admin"]["Authorization"]
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "--config-file",
            str(Path(__file__).with_name("schemathesis.toml")),
            "run",
            str(PROJECT_ROOT / "generated" / "openapi" / "core.yaml"),
            "--url",
            live_server,
            "--phases",
            "stateful",
            "--include-path-regex",
            r"^/v1/(patients|specialties|specialists|custom-fields)",
            "--header",
            f"Authorization: {token}",
            "--max-examples",
            "20",
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
    covered = re.search(r"API Links:\s+(\d+) covered", output)
    assert covered is not None, output[-2000:]
    assert int(covered.group(1)) > 0, output[-2000:]
