"""One operation's request body, compiled: media type, strict decoding, JSON, the schema.

The outer layer has already bounded the body's size. Here a body is refused with 415 when its
media type is not one the operation declares, with 400 when it is not text in its charset or
not JSON, and with 422 listing every field that breaks the schema — and any string or key
holding U+0000, which PostgreSQL's text cannot store.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import Receive

from carebase.errors import (
    FieldError,
    MalformedRequest,
    UnsupportedMediaType,
    ValidationFailed,
    pointer_token,
)
from carebase.web.contract import RequestBody
from carebase.web.parameters import NUL
from carebase.web.schemas import SchemaValidator

_ESCAPED_NUL = b"\\u0000"  # the only way a JSON text can carry U+0000 inside a string


async def read_body(receive: Receive) -> bytes:
    """The whole request body (the outer layer has bounded it)."""
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    while message.get("more_body", False):
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
    return b"".join(chunks)


def media_type(content_type: str | None) -> tuple[str, str | None]:
    """`application/json; charset=utf-8` → (`application/json`, `utf-8`)."""
    if not content_type:
        return "", None
    kind, _, rest = content_type.partition(";")
    charset = None
    for parameter in rest.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower() or None
    return kind.strip().lower(), charset


def nul_characters(value: Any, pointer: str) -> list[FieldError]:
    if isinstance(value, str):
        return [FieldError(pointer, NUL, "nul")] if "\x00" in value else []
    if isinstance(value, dict):
        found = []
        for key, item in value.items():
            child = f"{pointer}/{pointer_token(key)}"
            if "\x00" in key:
                found.append(FieldError(child, NUL, "nul"))
            found += nul_characters(item, child)
        return found
    if isinstance(value, list):
        return [e for i, item in enumerate(value) for e in nul_characters(item, f"{pointer}/{i}")]
    return []


class JsonBody:
    """`parse` turns the bytes of a request into the checked JSON document (or None)."""

    __slots__ = ("_validators", "media_types", "required")

    def __init__(self, body: RequestBody) -> None:
        for media in body.content:
            if media != "application/json" and not media.endswith("+json"):
                raise ValueError(f"request body {media}: the pipeline reads JSON bodies only")
        self.required = body.required
        self.media_types = tuple(body.content)
        self._validators = {
            media: SchemaValidator(schema) for media, schema in body.content.items()
        }

    def parse(self, content_type: str | None, raw: bytes) -> Any:
        kind, charset = media_type(content_type)
        if not raw:
            if self.required:
                raise MalformedRequest("A JSON body is required.")
            return None
        validator = self._validators.get(kind)
        if validator is None:
            wanted = " or ".join(self.media_types)
            raise UnsupportedMediaType(f"Send the body as {wanted}.")
        encoding = charset or "utf-8"
        try:
            text = raw.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            raise MalformedRequest(f"The body is not valid {encoding} text.") from None
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MalformedRequest(
                f"The body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."
            ) from None
        found = validator.errors(value, "/body")
        if _ESCAPED_NUL in raw or "\x00" in text:
            found += nul_characters(value, "/body")
        if found:
            raise ValidationFailed(sorted(found, key=lambda e: (e.pointer, e.code)))
        return value
