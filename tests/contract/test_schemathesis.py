"""Schemathesis over every operation of the contract, against a live uvicorn server.

The schema is the committed bundle, which `/openapi.yaml` serves byte for byte (tested in
tests/integration/test_system.py); every default check runs, positive and negative cases.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from carebase.config import PROJECT_ROOT

pytestmark = pytest.mark.contract

schema = schemathesis.openapi.from_path(PROJECT_ROOT / "generated" / "openapi" / "core.yaml")


@schema.parametrize()
@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
def test_operation_conforms(case: schemathesis.Case, live_server: str) -> None:
    case.call_and_validate(base_url=live_server)
