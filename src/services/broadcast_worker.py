"""The broadcast worker: recipient imports, campaigns whose time came, and their messages.

Sending is at least once towards the provider and deduplicated there, so that nobody gets a
message twice: a batch is claimed (`sending`, with a lease) and committed before anything is
sent; each message goes out with a key derived from its id — `Idempotency-Key` for the HTTP
provider, the `Message-ID` for e-mail, the file name in the development outbox — and the
batch's outcomes are written in one statement. A worker killed midway leaves its claim to
expire; the next one sends those messages again with the same keys, and the provider drops
what it already took. A message is checked again just before it is sent: a patient who opted
out or was restricted since the audience was expanded gets nothing (`suppressed`).

Each send first takes a token from the organization's and the provider's rate (Redis, shared
by every worker; when Redis cannot answer, the provider's own 429s pace the worker).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from uuid import UUID

import structlog

from carebase.integrations.messaging import Channels, OutgoingMessage, SendFailed
from carebase.integrations.redis_pipe import RedisUnavailable
from carebase.persistence import broadcast_delivery as delivery
from carebase.persistence import broadcasts as repo
from carebase.persistence.db import Database, Querier
from carebase.persistence.work_queue import Rounds
from carebase.principal import Principal
from carebase.security.encryption import Sealer
from carebase.security.ratelimit import RateLimiter, Rule
from carebase.services import message_templates as templates
from carebase.services.audit import record
from carebase.services.broadcast_recipients import ImportRunner, recipient_aad
from carebase.services.broadcasts import UnsubscribeLinks, variables
from carebase.services.custom_fields import open_sealed
from carebase.services.patients import aad as patient_aad
from carebase.services.patients import normalise_phone

_log = structlog.get_logger("carebase.broadcasts.worker")

BATCH = 100
MAX_ATTEMPTS = 5
LEASE_S = 120.0


@dataclass(frozen=True, slots=True)
class Rates:
    """Messages per second: each organization's, and each provider's across organizations."""

    organization: int = 20
    provider: int = 50


class Pace:
    """Fixed one-second windows in Redis (the API's rate-limit script): a send waits for the
    next window when its organization or its provider has used this one's."""

    def __init__(self, limiter: RateLimiter | None, rates: Rates) -> None:
        self._limiter = limiter
        self._org = Rule(limit=rates.organization, window_s=1, key="organization")
        self._provider = Rule(limit=rates.provider, window_s=1, key="organization")
        self.waited = 0

    async def admit(self, org: UUID, provider: str) -> None:
        if self._limiter is None:
            return
        for bucket, identity, rule in (
            ("broadcast-org", str(org), self._org),
            ("broadcast-provider", provider, self._provider),
        ):
            while True:
                try:
                    decision = await self._limiter.hit(bucket, identity, rule)
                except RedisUnavailable:
                    break  # fail open: the provider's 429s still pace us
                if decision.allowed:
                    break
                self.waited += 1
                await asyncio.sleep(min(decision.reset_s, 1))


class BroadcastWorker:
    def __init__(
        self,
        *,
        db: Database,
        sealer: Sealer,
        channels: Channels,
        links: UnsubscribeLinks,
        imports: ImportRunner,
        refresh_segment: Callable[[UUID, UUID], Awaitable[object]] | None = None,
        pace: Pace | None = None,
        concurrency: int = 16,
        interval_s: float = 1.0,
        lease_s: float = LEASE_S,
    ) -> None:
        self._db = db
        self._sealer = sealer
        self._channels = channels
        self._links = links
        self._imports = imports
        self._refresh_segment = refresh_segment
        self._pace = pace or Pace(None, Rates())
        self._gate = asyncio.Semaphore(concurrency)
        self._lease_s = lease_s
        self.rounds = Rounds("broadcast_worker", interval_s, _log)
        self.nudge = self.rounds.nudge

    async def run(self) -> None:
        await self.rounds.run(self.run_once)

    async def close(self) -> None:
        await self._channels.close()

    async def run_once(self) -> int:
        """Everything due, until nothing is: imports, expansions, messages."""
        done = 0
        rounds = self.rounds
        while not rounds.stopping and await self._imports.run_one():
            done += 1
        while not rounds.stopping and await self.expand_one():
            done += 1
        while not rounds.stopping and (sent := await self.send_batch()):
            done += sent
        return done

    # --- campaigns ------------------------------------------------------------------------------

    async def expand_one(self) -> bool:
        """Start one campaign that is due: its dynamic segments evaluated first (so a recall
        reaches who matches now), then its audience expanded into messages, in one
        transaction with the campaign locked."""
        async with self._db.admin_transaction() as q:
            due = await delivery.claim_campaign(q, lease_s=self._lease_s)
        if due is None:
            return False
        if self._refresh_segment is not None:
            for segment_id in due.segment_ids:
                await self._refresh_segment(due.organization_id, segment_id)
        async with self._db.admin_transaction() as q:
            locked = await delivery.lock_due(q, due.organization_id, due.id)
            if locked is None:
                return True  # cancelled meanwhile: no longer due
            if locked.status == "scheduled":  # as `send` starts it: the template copied
                await repo.move_campaign(
                    q, due.organization_id, due.id, "sending", at=locked.scheduled_at
                )
            found = await delivery.expand(q, locked)
            await record(
                q, Principal.system(due.organization_id), action="broadcast_campaign.expanded",
                entity_type="broadcast_campaign", entity_id=due.id, changed_fields=["messages"],
                detail={"audience": found.audience, "messages": found.messages,
                        "opted_out": found.opted_out, "restricted": found.restricted,
                        "no_address": found.no_address},
            )  # fmt: skip
            await _finish(q, [(due.organization_id, due.id)])
        _log.info(
            "broadcast_campaign_expanded",
            organization_id=str(due.organization_id),
            campaign_id=str(due.id),
            messages=found.messages,
        )
        return True

    # --- messages -------------------------------------------------------------------------------

    async def send_batch(self, *, stop_after: int | None = None) -> int:
        """Claim and send one batch; the number of messages claimed. `stop_after` sends only
        that many and returns without marking them, as a worker killed midway would (tests)."""
        async with self._db.admin_transaction() as q:
            outgoing = await delivery.claim_outgoing(q, limit=BATCH, lease_s=self._lease_s)
        if not outgoing:
            return 0
        claimed = len(outgoing)
        if stop_after is not None:
            await asyncio.gather(*(self._one(m) for m in outgoing[:stop_after]))
            return claimed
        outcomes = await asyncio.gather(*(self._one(m) for m in outgoing))
        campaigns = sorted({(m.organization_id, m.campaign_id) for m in outgoing})
        async with self._db.admin_transaction() as q:
            await delivery.mark(q, outcomes)
            await _finish(q, campaigns)
        return claimed

    async def _one(self, m: delivery.Outgoing) -> delivery.Outcome:
        """One message's outcome; whatever goes wrong with it fails it alone, not the batch."""
        if m.attempts > MAX_ATTEMPTS + 2:
            # Claimed this often without an outcome: each claim ended with its worker.
            return delivery.Outcome(
                m.organization_id, m.id, "failed", error="Gave up: every attempt was cut short."
            )
        try:
            return await self._attempt(m)
        except Exception as exc:
            _log.exception("broadcast_message_broken", message_id=str(m.id))
            return delivery.Outcome(
                m.organization_id, m.id, "failed", error=f"Could not be sent: {type(exc).__name__}."
            )

    async def _attempt(self, m: delivery.Outgoing) -> delivery.Outcome:
        base = delivery.Outcome(m.organization_id, m.id, "suppressed")
        if m.restricted:
            return replace(base, error="The patient's data is restricted (GDPR Art. 18).")
        if m.opted_out:
            return replace(base, error="The recipient opted out of this channel.")
        address = self._address(m)
        if address is None:
            return replace(base, error="No address on this channel any more.")
        sender = self._channels.for_channel(m.channel)
        unsubscribe = None
        if m.channel == "email":
            token = self._links.token(m.organization_id, m.id)
            unsubscribe = self._links.page_url(token)
            one_click = self._links.one_click_url(token)
        values = variables(
            clinic_name=m.clinic_name, time_zone=m.time_zone, given_name=m.given_name,
            family_name=m.family_name, next_at=m.next_at,
        )  # fmt: skip
        rendered = templates.render(
            m.channel, m.subject, m.body or "", values, unsubscribe_url=unsubscribe
        )
        message = OutgoingMessage(
            id=m.id, channel=m.channel, to=address, subject=rendered.subject, text=rendered.text,
            html=rendered.html, unsubscribe_url=one_click if unsubscribe else None,
        )  # fmt: skip
        async with self._gate:
            await self._pace.admit(m.organization_id, sender.name)
            try:
                accepted = await sender.send(message)
            except SendFailed as exc:
                return self._failed(m, sender.name, exc)
        return delivery.Outcome(
            m.organization_id, m.id, "sent", provider=sender.name,
            provider_message_id=accepted.provider_message_id,
        )  # fmt: skip

    def _address(self, m: delivery.Outgoing) -> str | None:
        if m.channel == "email":
            return m.email
        if m.phone_sealed is None:
            return None
        if m.patient_id is not None:
            aad = patient_aad(m.organization_id, m.patient_id, "phone")
        elif m.recipient_id is not None:
            aad = recipient_aad(m.organization_id, m.recipient_id)
        else:
            return None
        # E.164 as providers take it: "+385 91 555 0101" is stored as written.
        return normalise_phone(open_sealed(self._sealer, m.phone_sealed, aad).decode())

    @staticmethod
    def _failed(m: delivery.Outgoing, provider: str, exc: SendFailed) -> delivery.Outcome:
        if exc.permanent or m.attempts >= MAX_ATTEMPTS:
            _log.warning("broadcast_message_failed", message_id=str(m.id), reason=exc.reason)
            return delivery.Outcome(
                m.organization_id, m.id, "failed", provider=provider, error=exc.reason
            )
        delay = max(exc.retry_after_s or 0.0, min(30.0 * 2 ** (m.attempts - 1), 3600.0))
        return delivery.Outcome(
            m.organization_id, m.id, "queued", provider=provider, error=exc.reason, delay_s=delay
        )


async def _finish(q: Querier, campaigns: Sequence[tuple[UUID, UUID]]) -> None:
    """Campaigns with no message left waiting end as sent or failed, each audited."""
    for campaign in await delivery.finish_campaigns(q, campaigns):
        await record(
            q, Principal.system(campaign.organization_id),
            action=f"broadcast_campaign.{campaign.status}", entity_type="broadcast_campaign",
            entity_id=campaign.id, changed_fields=["status"],
        )  # fmt: skip
