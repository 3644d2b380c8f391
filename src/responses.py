"""Handlers answer through these, so the content type is always explicit (GROUND.md: Connexion
fails with "Multiple response content types" when an operation declares two and none is set)."""

from __future__ import annotations

from collections.abc import Mapping

from connexion.lifecycle import ConnexionResponse
from pydantic import BaseModel

from carebase.problems import MEDIA_TYPE, RenderedProblem

JSON = "application/json"


def json_response(
    model: BaseModel, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> ConnexionResponse:
    body = model.model_dump_json(by_alias=True, exclude_none=True)
    return ConnexionResponse(
        status_code=status, mimetype=JSON, content_type=JSON, body=body, headers=dict(headers or {})
    )


def problem_response(problem: RenderedProblem) -> ConnexionResponse:
    return ConnexionResponse(
        status_code=problem.status,
        mimetype=MEDIA_TYPE,
        content_type=MEDIA_TYPE,
        body=problem.body,
        headers=dict(problem.headers),
    )
