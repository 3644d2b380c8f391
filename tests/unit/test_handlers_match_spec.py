"""The spec's operations and the handler methods are the same set, module by module."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest
import yaml

from carebase.config import PROJECT_ROOT
from carebase.web.contract import METHODS, Contract
from carebase.web.signatures import handler_registry, operation_id

SPEC_DIR = PROJECT_ROOT / "openapi"
SERVICES = ("core", "telemetry")


def _handler_classes(module_name: str) -> list[type]:
    """`core.patients` → the *Handlers classes of carebase.handlers.core.patients; `system`
    (the paths of common.yaml, every service's) → carebase.handlers.system."""
    module = importlib.import_module(f"carebase.handlers.{module_name}")
    return [
        cls
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if cls.__module__ == module.__name__ and cls.__name__.endswith("Handlers")
    ]


def _methods(cls: type) -> set[str]:
    return {
        operation_id(name)
        for name, member in inspect.getmembers(cls, inspect.iscoroutinefunction)
        if not name.startswith("_")
    }


def _module_operations(path: Path) -> set[str]:
    document = yaml.safe_load(path.read_text())
    return {
        item[method]["operationId"]
        for item in document.get("paths", {}).values()
        for method in METHODS
        if method in item
    }


def _modules(service: str) -> list[tuple[str, Path]]:
    """(handler module, spec file) of a service, the shared paths included."""
    found = [
        (f"{service}.{path.stem}", path)
        for path in sorted((SPEC_DIR / service).glob("*.yaml"))
        if path.name != "root.yaml"
    ]
    return [*found, ("system", SPEC_DIR / "common.yaml")]


@pytest.mark.parametrize("service", SERVICES)
def test_every_module_has_one_handler_class_with_exactly_its_operations(service: str) -> None:
    modules = _modules(service)
    assert len(modules) > 1
    for module, path in modules:
        operations = _module_operations(path)
        classes = _handler_classes(module)
        if not operations and not classes:
            continue  # a module of components only
        assert len(classes) == 1, f"handlers/{module.replace('.', '/')}.py needs one *Handlers"
        assert _methods(classes[0]) == operations, path.name


@pytest.mark.parametrize("service", SERVICES)
def test_bundle_operations_equal_all_handler_methods(service: str) -> None:
    spec_ids = set(Contract.for_service(service).operations)
    handler_ids: set[str] = set()
    for module, _ in _modules(service):
        for cls in _handler_classes(module):
            handler_ids |= _methods(cls)
    assert spec_ids == handler_ids


def test_operation_id_naming() -> None:
    assert operation_id("get_readiness") == "getReadiness"
    assert operation_id("list_patient_forms") == "listPatientForms"


def test_registry_refuses_two_handlers_for_one_operation() -> None:
    class A:
        async def get_thing(self) -> None: ...

    class B:
        async def get_thing(self) -> None: ...

    with pytest.raises(RuntimeError, match="getThing"):
        handler_registry([A(), B()])
