"""Handlers answer through these, so the content type is always explicit (GROUND.md: Connexion
fails with "Multiple response content types" when an operation declares two and none is set)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from connexion.lifecycle import ConnexionResponse
from pydantic import BaseModel, RootModel
from pydantic_core import to_jsonable_python

from carebase.web.etags import etag
from carebase.web.problems import MEDIA_TYPE, RenderedProblem

JSON = "application/json"


def json_response(
    model: BaseModel, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> ConnexionResponse:
    body = json.dumps(document(model), ensure_ascii=False, separators=(",", ":"))
    return ConnexionResponse(
        status_code=status, mimetype=JSON, content_type=JSON, body=body, headers=dict(headers or {})
    )


def resource_response(
    model: BaseModel, *, version: int, status: int = 200, location: str | None = None
) -> ConnexionResponse:
    """One resource: its strong `ETag`, and `Location` when it was just created."""
    headers = {"ETag": etag(version)}
    if location:
        headers["Location"] = location
    return json_response(model, status=status, headers=headers)


def problem_response(problem: RenderedProblem) -> ConnexionResponse:
    return ConnexionResponse(
        status_code=problem.status,
        mimetype=MEDIA_TYPE,
        content_type=MEDIA_TYPE,
        body=problem.body,
        headers=dict(problem.headers),
    )


def no_content(headers: Mapping[str, str] | None = None) -> ConnexionResponse:
    return ConnexionResponse(status_code=204, body=b"", headers=dict(headers or {}))


def not_modified(version: int) -> ConnexionResponse:
    """304 for an `If-None-Match` that names the current version."""
    return ConnexionResponse(status_code=304, body=b"", headers={"ETag": etag(version)})


def document(model: BaseModel) -> dict[str, Any]:
    """The model as JSON, leaving out optional fields that are None.

    Pydantic's `exclude_none` would also drop required nullable fields (`organization: null`),
    which the contract says must be present.
    """
    out: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if value is None and not field.is_required():
            continue
        out[field.alias or name] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, RootModel):
        return _plain(value.root)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, BaseModel):
        return document(value)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return to_jsonable_python(value)
