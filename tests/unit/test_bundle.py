"""The bundler and its contract lint, on the real specs and on broken copies of them."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from carebase.config import PROJECT_ROOT


def _load_bundler() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bundle", PROJECT_ROOT / "scripts" / "bundle.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bundle"] = module
    spec.loader.exec_module(module)
    return module


bundler = _load_bundler()


@pytest.fixture
def specs(tmp_path: Path) -> Path:
    shutil.copytree(PROJECT_ROOT / "openapi", tmp_path / "openapi")
    return tmp_path / "openapi"


def edit(path: Path, change: Any) -> None:
    document = yaml.safe_load(path.read_text())
    change(document)
    path.write_text(yaml.safe_dump(document, sort_keys=False))


@pytest.mark.parametrize("service", ["core", "telemetry"])
def test_real_specs_bundle_and_lint_clean(service: str) -> None:
    document = bundler.bundle(service)
    assert bundler.lint(document) == []
    assert "$ref" in bundler.dump(document)
    assert "../common.yaml" not in bundler.dump(document)
    assert {"/health/live", "/health/ready"} <= set(document["paths"])  # from common.yaml


@pytest.mark.parametrize("service", ["core", "telemetry"])
def test_bundle_is_deterministic(service: str) -> None:
    assert bundler.dump(bundler.bundle(service)) == bundler.dump(bundler.bundle(service))


def test_component_clash_fails(specs: Path) -> None:
    def clash(doc: dict[str, Any]) -> None:
        doc["components"]["schemas"]["Problem"] = {"type": "object"}

    edit(specs / "core" / "audit.yaml", clash)
    with pytest.raises(bundler.BundleError, match="Problem"):
        bundler.bundle("core", specs)


def test_duplicate_path_fails(specs: Path) -> None:
    duplicate = {
        "openapi": "3.0.3",
        "info": {"title": "dup", "version": "1"},
        "paths": {
            "/health/live": {
                "get": {"operationId": "again", "responses": {"200": {"description": "ok"}}}
            }
        },
    }
    (specs / "core" / "system2.yaml").write_text(yaml.safe_dump(duplicate))
    with pytest.raises(bundler.BundleError, match="already defined"):
        bundler.bundle("core", specs)


def test_dangling_local_reference_fails(specs: Path) -> None:
    def dangling(doc: dict[str, Any]) -> None:
        doc["components"]["schemas"]["AuditEvent"] = {"$ref": "#/components/schemas/Nope"}

    edit(specs / "core" / "audit.yaml", dangling)
    with pytest.raises(bundler.BundleError, match="Nope"):
        bundler.bundle("core", specs)


def test_unknown_external_reference_fails(specs: Path) -> None:
    def external(doc: dict[str, Any]) -> None:
        doc["components"]["schemas"]["AuditEvent"] = {"$ref": "https://example.com/x.yaml#/X"}

    edit(specs / "core" / "audit.yaml", external)
    with pytest.raises(bundler.BundleError, match="unsupported reference"):
        bundler.bundle("core", specs)


def test_lint_finds_each_breach(specs: Path) -> None:
    def breach(doc: dict[str, Any]) -> None:
        live = doc["paths"]["/health/live"]["get"]
        del live["summary"]
        del live["security"]  # now it needs x-permission, 401 and 403
        del live["responses"]["422"]
        live["responses"]["200"]["content"]["application/json"].pop("example")
        doc["components"]["schemas"]["HealthCheck"]["properties"]["name"].pop("maxLength")
        doc["components"]["schemas"]["Readiness"]["properties"]["checks"].pop("maxItems")

    edit(specs / "common.yaml", breach)  # the shared paths are part of every service
    found = "\n".join(bundler.lint(bundler.bundle("core", specs)))
    for expected in (
        "GET /health/live: no summary",
        "GET /health/live: needs x-permission",
        "GET /health/live: does not document its 401",
        "GET /health/live: does not document its 403",
        "GET /health/live: does not document its 422",
        "GET /health/live: 200 application/json has no example",
        "HealthCheck/properties/name: string without maxLength",
        "Readiness/properties/checks: array without maxItems",
    ):
        assert expected in found


def test_error_responses_must_be_problems(specs: Path) -> None:
    def plain(doc: dict[str, Any]) -> None:
        doc["paths"]["/health/ready"]["get"]["responses"]["503"]["content"] = {
            "text/plain": {"schema": {"type": "string", "maxLength": 10}}
        }

    edit(specs / "common.yaml", plain)
    found = bundler.lint(bundler.bundle("core", specs))
    assert "GET /health/ready: 503 must be application/problem+json only" in found
