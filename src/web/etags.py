"""Strong entity tags from row versions: `"<version>"`, and `If-Match` read back into one."""

from __future__ import annotations

import re

from carebase.errors import PreconditionFailed

_TAG = re.compile(r'^"(\d{1,10})"$')


def etag(version: int) -> str:
    return f'"{version}"'


def expected_version(if_match: str) -> int | None:
    """The version `If-Match` names; None for `*` (any current version).

    A weak or malformed tag can never match a strong one (RFC 9110 §13.1.1): 412.
    """
    value = if_match.strip()
    if value == "*":
        return None
    found = _TAG.match(value)
    if found is None:
        raise PreconditionFailed('If-Match must be the resource\'s ETag, e.g. "3".')
    return int(found.group(1))


def matches_any(if_none_match: str, version: int) -> bool:
    """`If-None-Match`: `*`, or a list of tags, weak or strong, any naming `version`."""
    value = if_none_match.strip()
    if value == "*":
        return True
    current = etag(version)
    return any(tag.strip().removeprefix("W/") == current for tag in value.split(","))
