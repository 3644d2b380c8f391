"""An answer in wire form: status, header pairs and body bytes, before the outer layer adds
its own headers (request id, security headers)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

Headers = list[tuple[bytes, bytes]]


@dataclass(slots=True)
class Rendered:
    status: int
    headers: Headers
    body: bytes
    stream: AsyncIterator[bytes] | None = None
    """A body sent chunk by chunk as it is produced (then `body` is empty)."""
