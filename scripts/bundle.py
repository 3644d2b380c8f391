"""Bundle a service's module specs into one OpenAPI document, validate it and lint it.

Usage: bundle.py SERVICE OUTPUT.yaml

Reads openapi/common.yaml, openapi/SERVICE/root.yaml and every other
openapi/SERVICE/*.yaml (alphabetically), and writes one document whose components stay
named `$ref`s (TypeScript generators need the names). It fails on a component-name clash,
a duplicated path or operationId, a dangling reference, and on any breach of the contract
conventions checked by `lint()`.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from referencing.exceptions import Unresolvable

ROOT = Path(__file__).resolve().parent.parent
SPEC_DIR = ROOT / "openapi"
COMMON = "../common.yaml"
SECTIONS = ("schemas", "parameters", "headers", "requestBodies", "responses", "securitySchemes")
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
PERMISSION = re.compile(r"^[a-z][a-z_]*:[a-z][a-z_]*$")
PROBLEM_MEDIA = "application/problem+json"


class BundleError(Exception):
    pass


def load(path: Path) -> dict[str, Any]:
    try:
        with path.open(encoding="utf-8") as handle:
            document = yaml.safe_load(handle)
    except yaml.YAMLError as exc:
        raise BundleError(f"{path}: {exc}") from exc
    if not isinstance(document, dict):
        raise BundleError(f"{path}: not an OpenAPI document")
    return document


def localise_refs(node: Any, source: Path) -> Any:
    """Turn `../common.yaml#/x` and `sibling.yaml#/x` into `#/x`; other targets are errors."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                target, _, fragment = value.partition("#")
                if target and not is_bundled_file(source, target):
                    raise BundleError(f"{source}: unsupported reference {value!r}")
                out[key] = f"#{fragment}"
            else:
                out[key] = localise_refs(value, source)
        return out
    if isinstance(node, list):
        return [localise_refs(item, source) for item in node]
    return node


def is_bundled_file(source: Path, target: str) -> bool:
    """Common components, or a sibling module of the same service."""
    if source.name == "common.yaml":
        return False
    if target == COMMON:
        return True
    sibling = (source.parent / target).resolve()
    return sibling.parent == source.parent.resolve() and sibling.is_file()


def bundle(service: str, spec_dir: Path = SPEC_DIR) -> dict[str, Any]:
    service_dir = spec_dir / service
    root = load(service_dir / "root.yaml")
    common_path = spec_dir / "common.yaml"
    modules = sorted(p for p in service_dir.glob("*.yaml") if p.name != "root.yaml")
    if not modules:
        raise BundleError(f"{service_dir}: no module specs")

    localised = {path: localise_refs(load(path), path) for path in (common_path, *modules)}
    for path in localised:  # only after localise_refs: the validator would fetch remote $refs
        check_valid(load(path), path.as_uri())

    components: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    owners: dict[tuple[str, str], Path] = {}
    paths: dict[str, Any] = {}
    for path, document in localised.items():
        for section, entries in (document.get("components") or {}).items():
            if section not in components:
                raise BundleError(f"{path}: unsupported components section {section!r}")
            for name, value in entries.items():
                if (section, name) in owners:
                    first = owners[(section, name)]
                    raise BundleError(f"component {section}/{name} in both {first} and {path}")
                owners[(section, name)] = path
                components[section][name] = value
        for route, item in (document.get("paths") or {}).items():
            if route in paths:
                raise BundleError(f"{path}: path {route} is already defined by another module")
            paths[route] = item

    fill_event_types(components["schemas"], paths, localised.values())
    bundled: dict[str, Any] = {
        key: root[key] for key in ("openapi", "info", "servers", "tags", "security") if key in root
    }
    bundled["paths"] = paths
    bundled["components"] = {
        section: dict(sorted(entries.items())) for section, entries in components.items() if entries
    }
    check_refs(bundled)
    check_valid(bundled, f"bundle of {service}")
    return bundled


def fill_event_types(schemas: dict[str, Any], paths: dict[str, Any], documents: Any) -> None:
    """The schema marked `x-generated: event-types` becomes the catalogue of events: every
    operation's `x-audit` action (described by its summary) and the modules' `x-event-types`.
    Its `enum` types the filters; `x-catalogue` carries the descriptions."""
    target = next((s for s in schemas.values() if s.get("x-generated") == "event-types"), None)
    if target is None:
        return
    catalogue: dict[str, str] = {}
    for document in documents:
        for name, description in (document.get("x-event-types") or {}).items():
            catalogue[name] = " ".join(str(description).split())
    for item in paths.values():
        for method in METHODS:
            action = (item.get(method) or {}).get("x-audit")
            if action and action not in catalogue:
                catalogue[action] = item[method].get("summary", action)
    target["enum"] = sorted(catalogue)
    target["x-catalogue"] = dict(sorted(catalogue.items()))


def check_valid(document: dict[str, Any], where: str) -> None:
    try:
        validate(document, base_uri=where if where.startswith("file:") else "")
    except OpenAPIValidationError as exc:
        raise BundleError(f"{where}: {exc.message}") from exc
    except Unresolvable as exc:
        raise BundleError(f"{where}: unresolvable reference: {exc}") from exc


def walk(node: Any, trail: str = "") -> Iterator[tuple[str, Any]]:
    yield trail, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{trail}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{trail}/{index}")


def resolve(document: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        target: Any = document
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def check_refs(document: dict[str, Any]) -> None:
    for trail, node in walk(document):
        if isinstance(node, dict) and isinstance(node.get("$ref"), str):
            try:
                resolve(document, node)
            except (KeyError, TypeError) as exc:
                raise BundleError(f"{trail}: dangling reference {node['$ref']}") from exc


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any], list[Any]]]:
    for route, item in document["paths"].items():
        shared = item.get("parameters", [])
        for method in METHODS:
            if method in item:
                yield route, method, item[method], shared


def required_statuses(
    document: dict[str, Any], route: str, operation: dict[str, Any], shared: list[Any]
) -> set[str]:
    """The error statuses an operation can answer, so the spec must document each one."""
    parameters = [resolve(document, p) for p in [*shared, *operation.get("parameters", [])]]
    names = {p["name"].lower() for p in parameters}
    # Every operation can meet unreadable input (400), an unknown query parameter (422,
    # strict validation) and an unexpected failure (500).
    statuses = {"400", "422", "500"}
    if "requestBody" in operation:
        statuses |= {"413", "415"}
    if operation.get("security", document.get("security")):
        statuses |= {"401", "403"}
    if "{" in route:
        statuses.add("404")
    if "if-match" in names:
        statuses |= {"412", "428"}
    if "idempotency-key" in names:
        statuses.add("409")
    rate_limit = operation.get("x-rate-limit", {})  # undeclared: the default limit applies
    if rate_limit is not False:
        statuses.add("429")
        if isinstance(rate_limit, dict) and rate_limit.get("fail") == "closed":
            statuses.add("503")  # Redis down
    return statuses


def lint(document: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    seen_ids: dict[str, str] = {}
    for route, method, operation, shared in operations(document):
        where = f"{method.upper()} {route}"
        operation_id = operation.get("operationId")
        if operation_id in seen_ids:
            problems.append(
                f"{where}: operationId {operation_id} also used by {seen_ids[operation_id]}"
            )
        elif operation_id:
            seen_ids[operation_id] = where
        problems += [f"{where}: {p}" for p in lint_operation(document, route, operation, shared)]
    problems += lint_schemas(document)
    return problems


def lint_operation(
    document: dict[str, Any], route: str, operation: dict[str, Any], shared: list[Any]
) -> Iterator[str]:
    if not operation.get("operationId"):
        yield "no operationId"
    if not operation.get("summary"):
        yield "no summary"
    tags = operation.get("tags") or []
    if not tags or not set(tags) <= {tag["name"] for tag in document.get("tags", [])}:
        yield f"tags {tags} must be non-empty and declared in root.yaml"
    permission = operation.get("x-permission")
    if operation.get("security") != [] and not (
        isinstance(permission, str) and PERMISSION.match(permission)
    ):
        yield "needs x-permission (resource:action) or security: []"
    rate_limit = operation.get("x-rate-limit")
    if rate_limit is not None and rate_limit is not False and not valid_rate_limit(rate_limit):
        yield "x-rate-limit must be false or {limit, window_s, key: ip|user|organization, fail}"
    responses = operation.get("responses", {})
    for status in sorted(required_statuses(document, route, operation, shared) - set(responses)):
        yield f"does not document its {status} problem response"
    for status, response in responses.items():
        content = resolve(document, response).get("content", {})
        if status[0] in "45" and set(content) != {PROBLEM_MEDIA}:
            yield f"{status} must be {PROBLEM_MEDIA} only"
        if status[0] == "2":
            for media_type, media in content.items():
                if "example" not in media and "examples" not in media:
                    yield f"{status} {media_type} has no example"


def valid_rate_limit(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and set(value) <= {"limit", "window_s", "key", "fail"}
        and isinstance(value.get("limit"), int)
        and value["limit"] > 0
        and isinstance(value.get("window_s"), int)
        and value["window_s"] > 0
        and value.get("key", "ip") in ("ip", "user", "organization")
        and value.get("fail", "open") in ("open", "closed")
    )


# The validator (and pydantic behind it) checks these formats: bounded without maxLength.
FIXED_FORMATS = frozenset({"uuid", "date-time", "date"})


def lint_schemas(document: dict[str, Any]) -> Iterator[str]:
    """Bounded inputs and outputs: every string has maxLength (or an enum, or a fixed-length
    format the validator checks: uuid), every array maxItems."""
    for trail, node in walk(document):
        if not isinstance(node, dict) or re.search(r"/examples?(/|$)", trail):
            continue  # example values are data (a form item has `type: string`), not schemas
        bounded = "maxLength" in node or "enum" in node or node.get("format") in FIXED_FORMATS
        if node.get("type") == "string" and not bounded:
            yield f"{trail}: string without maxLength"
        if node.get("type") == "array" and "maxItems" not in node:
            yield f"{trail}: array without maxItems"


def dump(document: dict[str, Any]) -> str:
    return yaml.safe_dump(
        document, sort_keys=False, allow_unicode=True, width=100, default_flow_style=False
    )


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    service, output = argv[1], Path(argv[2])
    try:
        document = bundle(service)
    except BundleError as exc:
        print(f"bundle {service}: {exc}", file=sys.stderr)
        return 1
    problems = lint(document)
    if problems:
        print(f"bundle {service}: {len(problems)} contract problem(s):", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    header = (
        "# Generated by scripts/codegen.sh from openapi/ — do not edit.\n"
        f"# Bundle of openapi/common.yaml and openapi/{service}/*.yaml.\n"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(header + dump(document), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
