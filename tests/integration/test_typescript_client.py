"""The TypeScript client (clients/typescript) against a live server: its example script signs
in, lists patients, creates one with an idempotency key and retries it, changes it with
If-Match and meets the 412 problem of a stale ETag — compiled by the pinned TypeScript, run
by Node.js."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable

import pytest
from support import Person

from carebase.config import PROJECT_ROOT

pytestmark = pytest.mark.integration

CLIENT = PROJECT_ROOT / "clients" / "typescript"


def test_the_typed_example_runs_against_a_live_server(
    live_server: str, person: Callable[..., Person], new_org: Callable[..., uuid.UUID]
) -> None:
    staff = person(new_org(), "staff")
    subprocess.run(["npm", "run", "--silent", "build"], cwd=CLIENT, check=True, timeout=120)
    ran = subprocess.run(
        ["node", "dist/examples/patients.js"],
        cwd=CLIENT,
        env={
            **os.environ,
            "CAREBASE_URL": live_server,
            "CAREBASE_EMAIL": staff.email,
            "CAREBASE_PASSWORD": staff.password,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout)
    assert result["listed"] == 0
    uuid.UUID(result["created"])
    assert result["same_on_retry"] is True
    assert result["family_name"] == "Horvat"
    assert result["stale"] == {"status": 412, "code": "precondition_failed"}
