"""Privacy at ingest: what is never stored, and what is not stored at all.

- IP addresses are truncated before anything else sees them (/24 for IPv4, /48 for IPv6;
  a v4-mapped IPv6 address counts as IPv4).
- Actor ids are stored only as a keyed hash (HMAC-SHA-256, 128 bits, hex) under a key per
  organization: destroying the key makes every stored hash non-attributable, and the same
  person hashes differently in two organizations.
- Events are dropped — the caller gets the same 202, so consent state does not leak — when
  the request says `Sec-GPC: 1`, the organization opted out of analytics, the person's latest
  consent for the purpose withdraws it, or the person was erased (a tombstone of their hash).

The exclusion state is read per organization and trusted for `refresh_s` (≤ 60 s: a
withdrawal takes effect at ingest within a minute; at once in the process that recorded it).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from uuid import UUID

from carebase.metrics import TELEMETRY_DROPPED
from carebase.persistence.db import Database
from carebase.persistence.telemetry import privacy as repo

NO_ORGANIZATION = UUID(int=0)
"""Events of no organization (platform actions) hash under this pseudo-organization's key."""


def truncate_ip(address: str | None) -> str:
    """`203.0.113.77` → `203.0.113.0`, `2001:db8:1:2::3` → `2001:db8:1::`; '' when none."""
    if not address:
        return ""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return ""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)


def actor_hash(key: bytes, actor_id: UUID | str) -> str:
    text = actor_id.bytes if isinstance(actor_id, UUID) else actor_id.encode()
    return hmac.new(key, text, hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True)
class OrganizationPrivacy:
    """One organization's state, as read at `loaded_at`."""

    key: bytes
    analytics_opt_out: bool
    withdrawn: frozenset[tuple[UUID, str]]
    tombstones: frozenset[str]
    loaded_at: float

    def hash(self, actor_id: UUID | str) -> str:
        return actor_hash(self.key, actor_id)

    def excludes(self, subject_id: UUID | None, purpose: str, hashed: str | None) -> str | None:
        """Why an event about this subject must not be stored for this purpose, if it must not."""
        if purpose == "analytics" and self.analytics_opt_out:
            return "organization_opt_out"
        if subject_id is not None and (subject_id, purpose) in self.withdrawn:
            return "consent_withdrawn"
        if hashed is not None and hashed in self.tombstones:
            return "erased"
        return None


@dataclass
class DropCounts:
    """Events dropped at ingest, by reason (the operator's numbers; never told to callers)."""

    by_reason: Counter[str] = field(default_factory=Counter)

    def add(self, reason: str, count: int = 1) -> None:
        self.by_reason[reason] += count
        TELEMETRY_DROPPED.labels(reason).inc(count)


class PrivacyGate:
    def __init__(
        self,
        db: Database,
        *,
        refresh_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._refresh_s = refresh_s
        self._clock = clock
        self._states: dict[UUID, OrganizationPrivacy] = {}
        self._loading: dict[UUID, asyncio.Task[OrganizationPrivacy]] = {}
        self.dropped = DropCounts()

    async def state(self, organization_id: UUID | None) -> OrganizationPrivacy:
        """The organization's state, re-read when older than `refresh_s` (one read at a time)."""
        org = organization_id or NO_ORGANIZATION
        known = self._states.get(org)
        if known is not None and self._clock() - known.loaded_at < self._refresh_s:
            return known
        task = self._loading.get(org)
        if task is None:
            task = asyncio.create_task(self._load(org))
            self._loading[org] = task
            task.add_done_callback(lambda _: self._loading.pop(org, None))
        return await asyncio.shield(task)

    async def _load(self, organization_id: UUID) -> OrganizationPrivacy:
        async with self._db.admin_transaction() as q:
            key = await repo.hash_key(q, organization_id)
            opt_out = await repo.analytics_opt_out(q, organization_id)
            withdrawn = await repo.withdrawals(q, organization_id)
            tombstones = await repo.tombstones(q, organization_id)
        state = OrganizationPrivacy(
            key=key,
            analytics_opt_out=opt_out,
            withdrawn=frozenset((w.subject_id, w.purpose) for w in withdrawn),
            tombstones=frozenset(tombstones),
            loaded_at=self._clock(),
        )
        self._states[organization_id] = state
        return state

    def forget(self, organization_id: UUID) -> None:
        """Read the organization's state again on next use (it changed in this process)."""
        self._states.pop(organization_id, None)
