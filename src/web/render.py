"""JSON bytes from a handler's answer: orjson, with one field table per generated model.

A generated (pydantic) model is written from a table built once per class — its fields'
wire names and which are required — so rendering is a dict build and one orjson call, with
no per-request schema walk. An optional field that is None is left out; a required nullable
field is written as `null`, as the contract says it must be present.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
from pydantic import BaseModel, RootModel

# RFC 3339 with `Z` for UTC, as pydantic wrote it; non-str keys (UUID) as strings.
_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS

_Table = tuple[tuple[str, str, bool], ...]
_tables: dict[type[BaseModel], _Table] = {}


def _table(cls: type[BaseModel]) -> _Table:
    found = _tables.get(cls)
    if found is None:
        found = tuple(
            (name, field.alias or name, field.is_required())
            for name, field in cls.model_fields.items()
        )
        _tables[cls] = found
    return found


def jsonable(value: Any) -> Any:
    """orjson's `default`: what it cannot write itself (models, decimals, sets)."""
    if isinstance(value, RootModel):
        return value.root
    if isinstance(value, BaseModel):
        fields = value.__dict__
        out = {}
        for name, wire, required in _table(type(value)):
            item = fields.get(name)
            if item is None and not required:
                continue
            out[wire] = item
        return out
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=jsonable, option=_OPTIONS)
