"""What a handler reads from the request besides its parameters: who calls, and If-Match."""

from __future__ import annotations

from typing import Any, TypeVar

from connexion import request
from pydantic import BaseModel
from pydantic import ValidationError as PydanticError

from carebase.errors import FieldError, PreconditionRequired, ValidationFailed
from carebase.pages import PageRequest
from carebase.principal import Principal
from carebase.web import etags
from carebase.web.middleware import principal_of

M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], body: Any) -> M:
    """The body as the generated model. The contract's validator ran first; pydantic is
    stricter on a few formats (email, date-time), and its findings get pointers too."""
    try:
        return model.model_validate(body)
    except PydanticError as exc:
        raise ValidationFailed(
            [
                FieldError(
                    "/body/" + "/".join(str(part) for part in error["loc"]),
                    error["msg"][:512],
                    "format" if error["type"].endswith(("email", "datetime")) else error["type"],
                )
                for error in exc.errors()
            ]
        ) from None


def principal() -> Principal:
    return principal_of(request.scope)


def expected_version() -> int | None:
    """The version `If-Match` names (None for `*`); the contract makes the header required."""
    value = request.headers.get("if-match")
    if value is None:
        raise PreconditionRequired("Send If-Match with the ETag of the version you are changing.")
    return etags.expected_version(value)


def not_modified(version: int) -> bool:
    """Whether `If-None-Match` names the current version (weak comparison, RFC 9110 §13.1.2)."""
    value = request.headers.get("if-none-match")
    return value is not None and etags.matches_any(value, version)


def page_request(page: int | None, page_size: int | None) -> PageRequest:
    return PageRequest(page=page or 1, page_size=page_size or 25)
