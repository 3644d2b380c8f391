"""The bundled contract: served byte for byte, and indexed once into what the pipeline compiles.

Each operation comes out with its parameters (path-level and operation-level merged), its
request body and its responses, every `$ref` already resolved, so compiling a plan never
walks the document again.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from carebase.config import PROJECT_ROOT

GENERATED_DIR = PROJECT_ROOT / "generated" / "openapi"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
LOCATIONS = ("path", "query", "header", "cookie")


@dataclass(frozen=True, slots=True)
class Parameter:
    name: str
    location: str
    required: bool
    schema: dict[str, Any]
    """Resolved, in OpenAPI's dialect (`nullable`)."""
    explode: bool = True


@dataclass(frozen=True, slots=True)
class RequestBody:
    required: bool
    content: dict[str, dict[str, Any]]
    """Media type → resolved schema."""
    schema_name: str | None = None
    """The component the JSON schema names (`PatientCreate`), when it is a `$ref`."""


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
    max_body_bytes: int | None = None
    """`x-max-body-bytes`: a larger body bound than the service's for this operation (uploads)."""
    parameters: tuple[Parameter, ...] = ()
    body: RequestBody | None = None
    responses: dict[str, dict[str, dict[str, Any] | None]] = field(default_factory=dict)
    """Status (`200`, `4XX`, `default`) → media type → resolved schema (None: any)."""


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
        # libyaml's loader: the pure-Python one took 2.6 s for the bundle, at every start.
        self.document: dict[str, Any] = yaml.load(self.raw, Loader=yaml.CSafeLoader)
        root_security = self.document.get("security", [])
        self.operations: dict[str, Operation] = {}
        routes = []
        for template, item in self.document.get("paths", {}).items():
            methods = []
            shared = item.get("parameters", [])
            for method in METHODS:
                if method not in item:
                    continue
                spec = item[method]
                methods.append(method.upper())
                declared = [*shared, *spec.get("parameters", [])]
                self.operations[spec["operationId"]] = Operation(
                    operation_id=spec["operationId"],
                    method=method.upper(),
                    path=template,
                    permission=spec.get("x-permission"),
                    public=spec.get("security", root_security) == [],
                    rate_limit=spec.get("x-rate-limit"),
                    idempotent=any(_names_idempotency_key(p) for p in declared),
                    audit=spec.get("x-audit"),
                    max_body_bytes=spec.get("x-max-body-bytes"),
                    parameters=self._parameters(declared),
                    body=self._body(spec.get("requestBody")),
                    responses=self._responses(spec.get("responses", {})),
                )
            if "GET" in methods and "HEAD" not in methods:
                methods.append("HEAD")  # Starlette answers HEAD wherever GET is served.
            routes.append(_Route(_template_pattern(template), template, tuple(methods)))
        # A literal path (`/v1/patients/onboard`) wins over a template that also matches it
        # (`/v1/patients/{patient_id}`): the router would otherwise hand it to the template.
        self._routes = tuple(sorted(routes, key=lambda r: "{" in r.template))
        self._literal = {r.template: r.methods for r in routes if "{" not in r.template}
        self._body_limits = tuple(
            (_template_pattern(op.path), op.method, op.max_body_bytes)
            for op in self.operations.values()
            if op.max_body_bytes is not None
        )

    @classmethod
    def for_service(cls, service: str) -> Contract:
        return cls(GENERATED_DIR / f"{service}.yaml")

    @cached_property
    def json(self) -> bytes:
        return json.dumps(self.document, ensure_ascii=False, separators=(",", ":")).encode()

    @cached_property
    def event_types(self) -> dict[str, str]:
        """The event catalogue the bundle generated (`WebhookEventType`): type → description."""
        schemas = self.document.get("components", {}).get("schemas", {})
        found: dict[str, Any] = next(
            (s for s in schemas.values() if s.get("x-generated") == "event-types"), {}
        )
        return dict(found.get("x-catalogue", {}))

    def allowed_methods(self, path: str) -> tuple[str, ...] | None:
        """The methods served at a concrete path, or None when no route matches it."""
        for route in self._routes:
            if route.pattern.fullmatch(path):
                return route.methods
        return None

    def literal_methods(self, path: str) -> tuple[str, ...] | None:
        """The methods of a route without parameters at exactly this path, if there is one."""
        return self._literal.get(path)

    def body_limit(self, method: str, path: str) -> int | None:
        """The operation's own body bound (`x-max-body-bytes`) at this path, if it has one."""
        for pattern, declared_method, limit in self._body_limits:
            if declared_method == method and pattern.fullmatch(path):
                return limit
        return None

    def template_for(self, operation_id: str | None) -> str | None:
        operation = self.operations.get(operation_id or "")
        return operation.path if operation else None

    # --- resolution ---------------------------------------------------------------------------

    def resolve(self, node: Any, *, seen: tuple[str, ...] = ()) -> Any:
        """`node` with every local `$ref` replaced by a copy of what it names."""
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                if ref in seen:
                    raise ValueError(f"recursive schema {ref}: the pipeline cannot compile it")
                return self.resolve(self._target(ref), seen=(*seen, ref))
            return {key: self.resolve(value, seen=seen) for key, value in node.items()}
        if isinstance(node, list):
            return [self.resolve(item, seen=seen) for item in node]
        return node

    def _target(self, ref: str) -> Any:
        if not ref.startswith("#/"):
            raise ValueError(f"external reference {ref}: bundle the spec first")
        found: Any = self.document
        for part in ref[2:].split("/"):
            found = found[part.replace("~1", "/").replace("~0", "~")]
        return copy.deepcopy(found)

    def _parameters(self, declared: list[dict[str, Any]]) -> tuple[Parameter, ...]:
        by_key: dict[tuple[str, str], Parameter] = {}
        for raw in declared:
            spec = self.resolve(raw)
            key = (spec["in"], spec["name"])
            # An operation-level parameter overrides a path-level one of the same name and place.
            by_key[key] = Parameter(
                name=spec["name"],
                location=spec["in"],
                required=bool(spec.get("required", spec["in"] == "path")),
                schema=spec.get("schema", {}),
                explode=bool(spec.get("explode", spec.get("style", "form") == "form")),
            )
        return tuple(by_key.values())

    def _body(self, raw: dict[str, Any] | None) -> RequestBody | None:
        if raw is None:
            return None
        shallow = self._target(raw["$ref"]) if "$ref" in raw else raw
        named = None
        content = {}
        for media, value in shallow.get("content", {}).items():
            schema = value.get("schema", {})
            ref = schema.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                named = ref.rsplit("/", 1)[1]
            content[media.lower()] = self.resolve(schema)
        return RequestBody(bool(shallow.get("required", False)), content, named)

    def _responses(self, raw: dict[str, Any]) -> dict[str, dict[str, dict[str, Any] | None]]:
        out: dict[str, dict[str, dict[str, Any] | None]] = {}
        for status, response in raw.items():
            spec = self.resolve(response)
            out[str(status)] = {
                media.lower(): (self.resolve(value["schema"]) if "schema" in value else None)
                for media, value in spec.get("content", {}).items()
            }
        return out


def _template_pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    regex = "".join("[^/]+" if part.startswith("{") else re.escape(part) for part in parts)
    return re.compile(regex)
