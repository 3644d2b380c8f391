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

SPEC_DIR = PROJECT_ROOT / "openapi" / "core"


def _handler_classes(module_name: str) -> list[type]:
    module = importlib.import_module(f"carebase.handlers.core.{module_name}")
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


def test_every_module_has_one_handler_class_with_exactly_its_operations() -> None:
    modules = sorted(p for p in SPEC_DIR.glob("*.yaml") if p.name != "root.yaml")
    assert modules
    for path in modules:
        classes = _handler_classes(path.stem)
        assert len(classes) == 1, f"handlers/core/{path.stem}.py needs one *Handlers class"
        assert _methods(classes[0]) == _module_operations(path), path.name


def test_bundle_operations_equal_all_handler_methods() -> None:
    spec_ids = set(Contract.for_service("core").operations)
    handler_ids: set[str] = set()
    for path in SPEC_DIR.glob("*.yaml"):
        if path.name != "root.yaml":
            for cls in _handler_classes(path.stem):
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
