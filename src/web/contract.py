"""The bundled contract, as bytes to serve and as an index of its operations."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from carebase.config import PROJECT_ROOT

GENERATED_DIR = PROJECT_ROOT / "generated" / "openapi"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@dataclass(frozen=True, slots=True)
class Operation:
    operation_id: str
    method: str
    path: str
    permission: str | None
    public: bool
    rate_limit: Any = None
    """The raw `x-rate-limit` extension: None when undeclared, False when opted out."""
    idempotent: bool = False
    """It takes an `Idempotency-Key` header."""
    audit: str | None = None
    """The `x-audit` action a successful call records."""


def _names_idempotency_key(parameter: dict[str, Any]) -> bool:
    ref = parameter.get("$ref", "")
    return ref.endswith("/IdempotencyKey") or parameter.get("name") == "Idempotency-Key"


@dataclass(frozen=True, slots=True)
class _Route:
    pattern: re.Pattern[str]
    template: str
    methods: tuple[str, ...]


class Contract:
    """A service's bundled spec: served byte for byte, and consulted for routing facts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.raw = path.read_bytes()
        self.document: dict[str, Any] = yaml.safe_load(self.raw)
        root_security = self.document.get("security", [])
        self.operations: dict[str, Operation] = {}
        routes = []
        for template, item in self.document.get("paths", {}).items():
            methods = []
            for method in METHODS:
                if method not in item:
                    continue
                spec = item[method]
                methods.append(method.upper())
                self.operations[spec["operationId"]] = Operation(
                    operation_id=spec["operationId"],
                    method=method.upper(),
                    path=template,
                    permission=spec.get("x-permission"),
                    public=spec.get("security", root_security) == [],
                    rate_limit=spec.get("x-rate-limit"),
                    idempotent=any(_names_idempotency_key(p) for p in spec.get("parameters", [])),
                    audit=spec.get("x-audit"),
                )
            if "GET" in methods and "HEAD" not in methods:
                methods.append("HEAD")  # Starlette answers HEAD wherever GET is served.
            routes.append(_Route(_template_pattern(template), template, tuple(methods)))
        # A literal path (`/v1/patients/onboard`) wins over a template that also matches it
        # (`/v1/patients/{patient_id}`): the router would otherwise hand it to the template.
        self._routes = tuple(sorted(routes, key=lambda r: "{" in r.template))
        self._literal = {r.template: r.methods for r in routes if "{" not in r.template}

    @classmethod
    def for_service(cls, service: str) -> Contract:
        return cls(GENERATED_DIR / f"{service}.yaml")

    @cached_property
    def json(self) -> bytes:
        return json.dumps(self.document, ensure_ascii=False, separators=(",", ":")).encode()

    def allowed_methods(self, path: str) -> tuple[str, ...] | None:
        """The methods served at a concrete path, or None when no route matches it."""
        for route in self._routes:
            if route.pattern.fullmatch(path):
                return route.methods
        return None

    def literal_methods(self, path: str) -> tuple[str, ...] | None:
        """The methods of a route without parameters at exactly this path, if there is one."""
        return self._literal.get(path)

    def template_for(self, operation_id: str | None) -> str | None:
        operation = self.operations.get(operation_id or "")
        return operation.path if operation else None


def _template_pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    regex = "".join("[^/]+" if part.startswith("{") else re.escape(part) for part in parts)
    return re.compile(regex)
