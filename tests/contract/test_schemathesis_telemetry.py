"""Schemathesis over every operation of the telemetry contract, against a live uvicorn
server that verifies core's tokens against the live core server's JWKS (real HTTP)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from conftest import SERVICE_TOKEN, serving
from contract.calls import call_and_validate
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from carebase.apps.common import build_tokens
from carebase.apps.telemetry import create_app
from carebase.config import PROJECT_ROOT, Settings
from carebase.persistence.clickhouse import ClickHouse

pytestmark = pytest.mark.contract

CONFIG_PATH = Path(__file__).with_name("schemathesis.toml")
BUNDLE = PROJECT_ROOT / "generated" / "openapi" / "telemetry.yaml"
schema = schemathesis.openapi.from_path(
    BUNDLE, config=SchemathesisConfig.from_path(str(CONFIG_PATH))
)
# The coverage phase's exhaustive boundary cases run for the relay's credential and an admin:
# they test the compiled validators, which are the same whoever calls. Nobody, staff and
# patients fuzz without them (as core's role runs do), which keeps make test's time budget.
refused_schema = schemathesis.openapi.from_path(
    BUNDLE,
    config=SchemathesisConfig.from_str(
        CONFIG_PATH.read_text() + "\n[phases.coverage]\nenabled = false\n",
        base_dir=str(CONFIG_PATH.parent),
    ),
)
CALLERS = ("service", "admin")
OTHER_CALLERS = ("anonymous", "staff", "patient")


@pytest.fixture(scope="session")
def telemetry_server(
    telemetry_settings: Settings, clickhouse_store: ClickHouse, live_server: str
) -> Iterator[str]:
    """Telemetry under real uvicorn on a loopback port, in a thread of its own."""
    configured = telemetry_settings.model_copy(
        update={"auth_jwks_url": f"{live_server}/.well-known/jwks.json"}
    )
    application = create_app(configured, overrides={"clickhouse": clickhouse_store})
    with serving(application, "telemetry-server") as url:
        yield url


@pytest.fixture(scope="session")
def telemetry_callers(settings: Settings) -> dict[str, dict[str, str]]:
    """Core-signed tokens for members of a fresh organization (telemetry trusts the token's
    organization and role), and the relay's service credential."""
    issuer = build_tokens(settings)
    org = str(uuid.uuid4())
    headers: dict[str, dict[str, str]] = {
        "anonymous": {},
        "service": {"Authorization": f"Bearer {SERVICE_TOKEN}"},
    }
    for role in ("admin", "staff", "patient"):
        token = issuer.issue(subject=str(uuid.uuid4()), organization_id=org, role=role)
        headers[role] = {"Authorization": f"Bearer {token}"}
    return headers


@pytest.mark.parametrize("caller", CALLERS)
@schema.parametrize()
# 8 examples per operation and caller: at 15 (and coverage for all five) the run took 73 s.
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
def test_telemetry_operation_conforms(
    case: schemathesis.Case,
    telemetry_server: str,
    telemetry_callers: dict[str, dict[str, str]],
    caller: str,
) -> None:
    call_and_validate(case, telemetry_server, telemetry_callers[caller])


@pytest.mark.parametrize("caller", OTHER_CALLERS)
@refused_schema.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
def test_telemetry_operation_conforms_for_other_callers(
    case: schemathesis.Case,
    telemetry_server: str,
    telemetry_callers: dict[str, dict[str, str]],
    caller: str,
) -> None:
    call_and_validate(case, telemetry_server, telemetry_callers[caller])
