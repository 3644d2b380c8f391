"""Responses checked against the contract (VALIDATE_RESPONSES: on in tests and CI).

Every answer a handler gives must be one its operation declares: the status (or its `4XX`
range, or `default`), the media type, and a body its schema accepts — checked by the same
compiled validators as requests. A breach is a 500 in tests, so a handler and its contract
cannot drift apart unnoticed.
"""

from __future__ import annotations

import orjson
import structlog

from carebase.web.contract import Operation
from carebase.web.schemas import SchemaValidator
from carebase.web.wire import Rendered

_log = structlog.get_logger("carebase.pipeline")


class NonConformingResponse(Exception):
    """The handler's answer breaks the contract."""


class ResponseCheck:
    def __init__(self, operation: Operation) -> None:
        self.operation = operation
        self.validators: dict[tuple[str, str], SchemaValidator | None] = {
            (status, media): (SchemaValidator(schema, response=True) if schema else None)
            for status, content in operation.responses.items()
            for media, schema in content.items()
        }

    def _declared(self, status: int) -> str | None:
        responses = self.operation.responses
        for key in (str(status), f"{str(status)[0]}XX", "default"):
            if key in responses:
                return key
        return None

    def check(self, rendered: Rendered) -> None:
        op = self.operation.operation_id
        status = self._declared(rendered.status)
        if status is None:
            raise NonConformingResponse(
                f"{op} answered {rendered.status}, which it does not declare"
            )
        content = self.operation.responses[status]
        media = next((v.decode() for k, v in rendered.headers if k == b"content-type"), None)
        if not content:
            if rendered.body:
                raise NonConformingResponse(f"{op} {rendered.status} declares no body")
            return
        kind = (media or "").split(";")[0].strip().lower()
        if kind not in content:
            raise NonConformingResponse(
                f"{op} {rendered.status} answered {media}, not {list(content)}"
            )
        validator = self.validators.get((status, kind))
        if validator is None or not _is_json(kind):
            return  # text/calendar and other non-JSON bodies: the media type is the check
        document = orjson.loads(rendered.body)
        failed = validator.errors(document, "")
        if failed:
            _log.error("nonconforming_response", operation=op, errors=[e.pointer for e in failed])
            raise NonConformingResponse(
                f"{op} {rendered.status}: "
                + "; ".join(f"{e.pointer or '/'} {e.message}" for e in failed[:10])
            )


def _is_json(media: str) -> bool:
    return media == "application/json" or media.endswith("+json")
