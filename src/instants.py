"""RFC 3339 instants as Python and PostgreSQL can hold them."""

from __future__ import annotations

from datetime import UTC, datetime


def instant(text: str) -> datetime | None:
    """An RFC 3339 instant (`t` and `z` in any case) in UTC, or None when Python cannot hold
    it (a leap second, a year past 9999 in UTC). In UTC because RFC 3339 allows offsets up to
    ±23:59 and PostgreSQL only ±15:59: `-18:51` was a 500 at the database."""
    try:
        moment = datetime.fromisoformat(text.upper())
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None
