"""What a handler returns: a value, not a framework object. The pipeline turns it into bytes.

A handler says *what* the answer is — the body (a generated model, or plain JSON data), its
status, the resource's version and where a created resource lives — and the pipeline writes
the wire form once for every operation: `Content-Type`, `Content-Length`, `ETag` from the
version, `Location`, a 304 when `If-None-Match` names the version, and nothing but headers
for `HEAD`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from carebase.web.problems import MEDIA_TYPE, RenderedProblem

JSON = "application/json"
# Tokens and secrets must never sit in a shared cache (RFC 6749 §5.1).
NO_STORE = {"Cache-Control": "no-store"}


@dataclass(frozen=True, slots=True)
class Stream:
    """A body sent as it is produced, with no Content-Length (chunked): the first bytes leave
    before the last are made. Should producing fail midway, the connection is cut, so a
    client never takes a truncated body for a whole one."""

    chunks: AsyncIterator[bytes]


@dataclass(frozen=True, slots=True)
class Reply:
    body: Any = None
    """A generated model, JSON-ready data, bytes already encoded, a `Stream`, or None."""
    status: int = 200
    version: int | None = None
    """The resource's version: sent as a strong `ETag`, compared with `If-None-Match`."""
    location: str | None = None
    headers: Mapping[str, str] | None = None
    media_type: str = JSON


def ok(body: Any, *, headers: Mapping[str, str] | None = None) -> Reply:
    return Reply(body, headers=headers)


def resource(
    body: Any,
    *,
    version: int,
    status: int = 200,
    location: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """One versioned resource; `location` when it was just created."""
    return Reply(body, status=status, version=version, location=location, headers=headers)


def created(
    body: Any,
    *,
    location: str,
    version: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    return Reply(body, status=201, version=version, location=location, headers=headers)


def accepted(body: Any) -> Reply:
    return Reply(body, status=202)


NO_CONTENT = Reply(status=204)


def no_content() -> Reply:
    return NO_CONTENT


def problem(rendered: RenderedProblem) -> Reply:
    """A problem document a handler answers with on purpose (readiness: 503 with its checks)."""
    return Reply(
        rendered.body, status=rendered.status, headers=rendered.headers, media_type=MEDIA_TYPE
    )
