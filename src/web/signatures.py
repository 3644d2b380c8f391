"""Handlers bound to operations: the registry by name, and the check that a handler's
signature fits its operation — every parameter it must take, typed as the schema says."""

from __future__ import annotations

import datetime as dt
import inspect
import types
import typing
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from uuid import UUID

from carebase.web.results import Reply

Handler = Callable[..., Awaitable[Reply]]


def operation_id(method_name: str) -> str:
    """`get_readiness` → `getReadiness`: the spec's operationId names the handler method."""
    head, *rest = method_name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def handler_registry(handlers: list[object]) -> dict[str, Handler]:
    """operationId → bound method, for every public coroutine method of the handler objects."""
    registry: dict[str, Handler] = {}
    for handler in handlers:
        for name, method in inspect.getmembers(handler, inspect.iscoroutinefunction):
            if name.startswith("_"):
                continue
            key = operation_id(name)
            if key in registry:
                raise RuntimeError(f"two handlers for operationId {key}")
            registry[key] = method
    return registry


_PYTHON_TYPES: Mapping[str, tuple[type, ...]] = {
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "string": (str,),
    "array": (list,),
}


def expected_type(schema: Mapping[str, Any]) -> tuple[type, ...]:
    fmt = schema.get("format")
    if schema.get("type") == "string" and fmt == "uuid":
        return (UUID,)
    if schema.get("type") == "string" and fmt == "date-time":
        return (dt.datetime,)
    if schema.get("type") == "string" and fmt == "date":
        return (dt.date,)
    return _PYTHON_TYPES.get(str(schema.get("type")), ())


def check_annotation(name: str, key: str, schema: Mapping[str, Any], annotation: Any) -> None:
    """A parameter typed `UUID` in the handler must be `format: uuid` in the contract, etc."""
    if key == "if_match":
        return  # read as the version it names: int, or None for `*`
    wanted = expected_type(schema)
    if not wanted or annotation is Any:
        return
    # A union's members (`list[str] | None`); anything else as a whole (`list[UUID]`).
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    given = typing.get_args(annotation) if union else (annotation,)
    plain = tuple(typing.get_origin(g) or g for g in given)
    if not any(isinstance(g, type) and issubclass(g, wanted) for g in plain):
        raise RuntimeError(
            f"{name}: {key!r} is {schema.get('type')}"
            f"{'/' + str(schema['format']) if schema.get('format') else ''} in the contract; "
            f"annotate it as {' | '.join(w.__name__ for w in wanted)}"
        )
