"""One operation's request body, compiled: media type, strict decoding, the schema.

The outer layer has already bounded the body's size (`x-max-body-bytes` raises the bound for
one operation). Three kinds of body, by the media types an operation declares:

- **JSON**: refused with 415 when its media type is not one the operation declares, with 400
  when it is not text in its charset or not JSON, and with 422 listing every field that breaks
  the schema — and any string or key holding U+0000, which PostgreSQL's text cannot store.
- **multipart/form-data** (a file upload): parsed by Starlette's parser (python-multipart);
  the text fields are checked against the schema like JSON strings, and each property the
  schema declares `format: binary` must be a file part, the others text.
- **application/octet-stream** (raw bytes): handed over as they came.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
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
# A number of 19 digits or more may not fit orjson's 64 bits (it would turn an integer into a
# float); such bodies, and any orjson refuses, are read by the standard library as before.
# Digits become `d` and everything else NUL, then a run of 19 is looked for: both are single
# C passes (~13 µs for 26 KB, where the regular expression `\d{19}` took ~225 µs).
_DIGITS = bytes(ord("d") if chr(c).isdigit() and c < 128 else 0 for c in range(256))
_LONG_RUN = b"d" * 19


def _loads(text: str, utf8: bytes | None) -> Any:
    """JSON as the standard library reads it, ~2× faster for the usual body (orjson)."""
    if utf8 is not None and utf8.translate(_DIGITS).find(_LONG_RUN) < 0:
        try:
            return orjson.loads(utf8)
        except orjson.JSONDecodeError:
            pass  # the standard library decides, and words the error
    return json.loads(text)


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


MULTIPART = "multipart/form-data"
OCTET_STREAM = "application/octet-stream"


def is_json(media: str) -> bool:
    return media == "application/json" or media.endswith("+json")


class JsonBody:
    """`parse` turns the bytes of a request into the checked JSON document (or None)."""

    __slots__ = ("_validators", "media_types", "required")

    def __init__(self, body: RequestBody) -> None:
        for media in body.content:
            if not is_json(media):
                raise ValueError(f"request body {media}: mixed with JSON, the pipeline reads JSON")
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
            value = _loads(text, raw if encoding in ("utf-8", "utf8") else None)
        except json.JSONDecodeError as exc:
            raise MalformedRequest(
                f"The body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."
            ) from None
        except RecursionError:  # the standard library recurses per level: [[[[…]]]]
            raise MalformedRequest("The body's JSON is nested too deeply.") from None
        found = validator.errors(value, "/body")
        if _ESCAPED_NUL in raw or "\x00" in text:
            found += nul_characters(value, "/body")
        if found:
            raise ValidationFailed(sorted(found, key=lambda e: (e.pointer, e.code)))
        return value


@dataclass(frozen=True, slots=True)
class FilePart:
    """One uploaded file: the bytes, and what the client said of them (metadata only)."""

    filename: str
    content_type: str | None
    data: bytes


@dataclass(frozen=True, slots=True)
class Upload:
    """A multipart body: its text fields (checked by the schema) and its file parts."""

    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, FilePart] = field(default_factory=dict)

    def fingerprint(self) -> dict[str, Any]:
        """What an idempotency key remembers of it: the fields, and each file's name and hash."""
        return {
            "fields": self.fields,
            "files": {
                name: [part.filename, hashlib.sha256(part.data).hexdigest()]
                for name, part in self.files.items()
            },
        }


class MultipartBody:
    """A `multipart/form-data` body: one file part per binary property, text for the rest."""

    __slots__ = ("_binary", "_validator", "max_files", "required")

    def __init__(self, body: RequestBody) -> None:
        if set(body.content) != {MULTIPART}:
            raise ValueError("a multipart body is declared alone")
        schema = body.content[MULTIPART]
        properties = schema.get("properties", {})
        self._binary = frozenset(
            name for name, spec in properties.items() if spec.get("format") == "binary"
        )
        # A few more file parts than declared, so a file sent in a text field's place gets a
        # pointer; the edge bounds the body's size anyway.
        self.max_files = len(self._binary) + 4
        self.required = body.required
        self._validator = SchemaValidator(schema)

    async def read(self, content_type: str | None, raw: bytes) -> Upload | None:
        kind, _ = media_type(content_type)
        if kind != MULTIPART:
            raise UnsupportedMediaType(f"Send the body as {MULTIPART}.")
        if not raw:
            if self.required:
                raise MalformedRequest("A multipart body is required.")
            return None

        async def stream() -> AsyncGenerator[bytes, None]:
            yield raw

        parser = MultiPartParser(
            Headers({"content-type": content_type or ""}),
            stream(),
            max_files=self.max_files,
            max_fields=50,
        )
        try:
            form = await parser.parse()
        except MultiPartException as exc:
            raise MalformedRequest(f"The multipart body cannot be read: {exc.message}") from None
        fields: dict[str, str] = {}
        files: dict[str, FilePart] = {}
        found: list[FieldError] = []
        try:
            for name, value in form.multi_items():
                pointer = f"/body/{pointer_token(name)}"
                if name in fields or name in files:
                    found.append(FieldError(pointer, "Send each field once.", "duplicate"))
                elif isinstance(value, UploadFile):
                    if name not in self._binary:
                        found.append(FieldError(pointer, "Send this field as text.", "type"))
                        continue
                    files[name] = FilePart(
                        filename=(value.filename or "")[:255],
                        content_type=value.content_type,
                        data=await value.read(),
                    )
                elif name in self._binary:
                    found.append(FieldError(pointer, "Send this field as a file.", "type"))
                else:
                    fields[name] = value
        finally:
            await form.close()
        # The schema sees the file parts as strings: it checks that they are there.
        document: dict[str, Any] = {**fields, **dict.fromkeys(files, "")}
        found += self._validator.errors(document, "/body")
        found += nul_characters(fields, "/body")
        if found:
            raise ValidationFailed(sorted(set(found), key=lambda e: (e.pointer, e.code)))
        return Upload(fields, files)


class RawBody:
    """An `application/octet-stream` body: the bytes as they came."""

    __slots__ = ("required",)

    def __init__(self, body: RequestBody) -> None:
        if set(body.content) != {OCTET_STREAM}:
            raise ValueError("a raw body is declared alone")
        self.required = body.required

    async def read(self, content_type: str | None, raw: bytes) -> bytes | None:
        kind, _ = media_type(content_type)
        if kind != OCTET_STREAM:
            raise UnsupportedMediaType(f"Send the body as {OCTET_STREAM}.")
        if not raw and self.required:
            raise MalformedRequest("A body is required.")
        return raw


def body_reader(body: RequestBody) -> JsonBody | MultipartBody | RawBody:
    """The reader for the media types an operation declares (JSON's `parse` is synchronous,
    the others' `read` is not: the JSON path, every request's, stays one call)."""
    if MULTIPART in body.content:
        return MultipartBody(body)
    if OCTET_STREAM in body.content:
        return RawBody(body)
    return JsonBody(body)
