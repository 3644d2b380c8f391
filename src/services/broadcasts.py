"""Broadcasts: message templates, campaigns to segments and recipient lists, the delivery log,
a patient's channel preferences, the unsubscribe link and the providers' receipts.

A campaign moves draft → scheduled → sending → sent | cancelled | failed. `send` (or the
scheduled time) copies the template into the campaign; the worker (`broadcast_worker`) then
expands the audience once into one message per address and sends them. Nothing here talks to
a provider: a request only changes rows.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import structlog

from carebase.errors import (
    Conflict,
    FieldError,
    NotFound,
    PreconditionFailed,
    Unauthenticated,
    ValidationFailed,
)
from carebase.integrations.messaging import ReceiptRefused, verify_receipt
from carebase.pages import Page, PageRequest
from carebase.persistence import broadcast_delivery as delivery
from carebase.persistence import broadcasts as repo
from carebase.persistence.db import Database, Querier
from carebase.principal import Principal, organization_of
from carebase.security.encryption import Sealer
from carebase.services import message_templates as templates
from carebase.services.audit import record
from carebase.services.working_hours import zone_or_utc

_log = structlog.get_logger("carebase.broadcasts")

NO_TEMPLATE = "No such template."
NO_CAMPAIGN = "No such campaign."
NO_PATIENT = "No such patient."
NO_RECIPIENT = "No such recipient."
NO_LINK = "This unsubscribe link is unknown or was already used."
CHANNELS = repo.CHANNELS


def variables(
    *,
    clinic_name: str,
    time_zone: str,
    given_name: str,
    family_name: str,
    next_at: dt.datetime | None,
) -> dict[str, str]:
    """The values of the declared variables for one recipient."""
    local = next_at.astimezone(zone_or_utc(time_zone)) if next_at is not None else None
    return {
        "patient.given_name": given_name,
        "patient.family_name": family_name,
        "patient.full_name": f"{given_name} {family_name}".strip(),
        "clinic.name": clinic_name,
        "appointment.next_at": f"{local:%Y-%m-%d %H:%M}" if local else "",
        "appointment.next_date": f"{local:%Y-%m-%d}" if local else "",
    }


class UnsubscribeLinks:
    """A link's token names the organization and the message, with a MAC under the
    blind-index key: nothing to store, the same token when a message is sent again, and no
    token can be made for a message by someone who has another's."""

    def __init__(self, sealer: Sealer, *, app_base_url: str, public_base_url: str) -> None:
        self._sealer = sealer
        self._app = app_base_url.rstrip("/")
        self._api = public_base_url.rstrip("/")

    def _mac(self, org: UUID, message_id: UUID) -> bytes:
        return self._sealer.blind_index("broadcast.unsubscribe", f"{org}:{message_id}")[:16]

    def token(self, org: UUID, message_id: UUID) -> str:
        raw = org.bytes + message_id.bytes + self._mac(org, message_id)
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def page_url(self, token: str) -> str:
        """For people: the web app's page, which asks the API (a GET never unsubscribes)."""
        return f"{self._app}/unsubscribe?token={token}"

    def one_click_url(self, token: str) -> str:
        """For mail clients (RFC 8058 `List-Unsubscribe-Post`)."""
        return f"{self._api}/v1/broadcasts/unsubscribe/{token}"

    def read(self, token: str) -> tuple[UUID, UUID] | None:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) != 48:
            return None
        org, message_id = UUID(bytes=raw[:16]), UUID(bytes=raw[16:32])
        if not hmac.compare_digest(raw[32:], self._mac(org, message_id)):
            return None
        return org, message_id


@dataclass(frozen=True, slots=True)
class Stats:
    campaign: repo.CampaignRow
    by_status: dict[str, int]


@dataclass(frozen=True, slots=True)
class Preferences:
    patient_id: UUID
    opted_out: dict[str, repo.OptOut]


class BroadcastService:
    def __init__(
        self,
        *,
        db: Database,
        links: UnsubscribeLinks,
        receipt_secret: str | None,
        now: Any = None,
    ) -> None:
        self._db = db
        self._links = links
        self._receipt_secret = receipt_secret
        self._now = now or (lambda: dt.datetime.now(dt.UTC))

    # --- templates ------------------------------------------------------------------------------

    async def list_templates(
        self, principal: Principal, page: PageRequest, *, channel: str | None
    ) -> Page[repo.TemplateRow]:
        org = organization_of(principal, NO_TEMPLATE)
        found, total = await repo.templates(self._db.reader(principal), org, page, channel=channel)
        return Page(found, total, page)

    async def create_template(
        self, principal: Principal, *, name: str, channel: str, subject: str | None, body: str
    ) -> repo.TemplateRow:
        org = organization_of(principal, NO_TEMPLATE)
        _check_template(channel, subject, body)
        async with self._db.transaction(principal) as q:
            row = await repo.insert_template(
                q, org, uuid4(), name=name, channel=channel, subject=subject, body=body
            )
            await record(
                q, principal, action="broadcast_template.created",
                entity_type="broadcast_template", entity_id=row.id,
                changed_fields=["name", "channel", "subject", "body"],
            )  # fmt: skip
        return row

    async def get_template(self, principal: Principal, template_id: UUID) -> repo.TemplateRow:
        org = organization_of(principal, NO_TEMPLATE)
        row = await repo.template(self._db.reader(principal), org, template_id)
        if row is None:
            raise NotFound(NO_TEMPLATE)
        return row

    async def update_template(
        self,
        principal: Principal,
        template_id: UUID,
        given: Mapping[str, Any],
        *,
        version: int | None,
    ) -> repo.TemplateRow:
        org = organization_of(principal, NO_TEMPLATE)
        async with self._db.transaction(principal) as q:
            current = await self._locked_template(q, org, template_id, version)
            subject = given.get("subject", current.subject)
            body = given.get("body", current.body)
            _check_template(current.channel, subject, body)
            row = await repo.update_template(
                q, org, template_id, name=given.get("name", current.name), subject=subject,
                body=body,
            )  # fmt: skip
            await record(
                q, principal, action="broadcast_template.updated",
                entity_type="broadcast_template", entity_id=row.id, changed_fields=sorted(given),
            )  # fmt: skip
        return row

    async def delete_template(
        self, principal: Principal, template_id: UUID, *, version: int | None
    ) -> None:
        org = organization_of(principal, NO_TEMPLATE)
        async with self._db.transaction(principal) as q:
            await self._locked_template(q, org, template_id, version)
            if await repo.template_in_use(q, org, template_id):
                raise Conflict("Campaigns use this template; delete them first.")
            await repo.delete_template(q, org, template_id)
            await record(
                q, principal, action="broadcast_template.deleted",
                entity_type="broadcast_template", entity_id=template_id,
            )  # fmt: skip

    async def preview(
        self,
        principal: Principal,
        template_id: UUID,
        *,
        patient_id: UUID | None,
        recipient_id: UUID | None,
    ) -> templates.Rendered:
        """The template as one recipient would get it (a patient, a list's recipient, or
        sample values); the unsubscribe link is a sample too."""
        org = organization_of(principal, NO_TEMPLATE)
        async with self._db.transaction(principal, read_only=True) as q:
            row = await repo.template(q, org, template_id)
            if row is None:
                raise NotFound(NO_TEMPLATE)
            person = await _preview_person(q, org, patient_id, recipient_id)
            clinic = await repo.clinic(q, org)
        values = variables(
            clinic_name=clinic.name, time_zone=clinic.time_zone, given_name=person.given_name,
            family_name=person.family_name, next_at=person.next_at,
        )  # fmt: skip
        sample = self._links.page_url("preview") if row.channel == "email" else None
        return templates.render(row.channel, row.subject, row.body, values, unsubscribe_url=sample)

    # --- campaigns ------------------------------------------------------------------------------

    async def list_campaigns(
        self, principal: Principal, page: PageRequest, *, status: str | None
    ) -> Page[repo.CampaignRow]:
        org = organization_of(principal, NO_CAMPAIGN)
        found, total = await repo.campaigns(self._db.reader(principal), org, page, status=status)
        return Page(found, total, page)

    async def create_campaign(
        self,
        principal: Principal,
        *,
        name: str,
        template_id: UUID,
        segment_ids: Sequence[UUID],
        recipient_lists: Sequence[str],
    ) -> repo.CampaignRow:
        org = organization_of(principal, NO_CAMPAIGN)
        async with self._db.transaction(principal) as q:
            channel = await self._audience_checked(
                q, org, template_id, segment_ids, recipient_lists
            )
            row = await repo.insert_campaign(
                q, org, uuid4(), name=name, template=template_id, channel=channel,
                segments=list(dict.fromkeys(segment_ids)),
                lists=list(dict.fromkeys(recipient_lists)), by=principal.user_id,
            )  # fmt: skip
            await record(
                q, principal, action="broadcast_campaign.created",
                entity_type="broadcast_campaign", entity_id=row.id,
                changed_fields=["name", "template_id", "audience"],
            )  # fmt: skip
        return row

    async def get_campaign(self, principal: Principal, campaign_id: UUID) -> repo.CampaignRow:
        org = organization_of(principal, NO_CAMPAIGN)
        row = await repo.campaign(self._db.reader(principal), org, campaign_id)
        if row is None:
            raise NotFound(NO_CAMPAIGN)
        return row

    async def update_campaign(
        self,
        principal: Principal,
        campaign_id: UUID,
        given: Mapping[str, Any],
        *,
        version: int | None,
    ) -> repo.CampaignRow:
        org = organization_of(principal, NO_CAMPAIGN)
        async with self._db.transaction(principal) as q:
            current = await self._locked(q, org, campaign_id, version)
            if current.status != "draft":
                raise Conflict(f"A {current.status} campaign cannot be changed.")
            audience = given.get("audience", {})
            template_id = UUID(str(given.get("template_id", current.template_id)))
            segments = [UUID(str(s)) for s in audience.get("segment_ids", current.segment_ids)]
            lists = list(audience.get("recipient_lists", current.recipient_lists))
            channel = await self._audience_checked(q, org, template_id, segments, lists)
            row = await repo.update_campaign(
                q, org, campaign_id, name=given.get("name", current.name), template=template_id,
                channel=channel, segments=list(dict.fromkeys(segments)),
                lists=list(dict.fromkeys(lists)),
            )  # fmt: skip
            await record(
                q, principal, action="broadcast_campaign.updated",
                entity_type="broadcast_campaign", entity_id=row.id, changed_fields=sorted(given),
            )  # fmt: skip
        return row

    async def delete_campaign(
        self, principal: Principal, campaign_id: UUID, *, version: int | None
    ) -> None:
        """Drafts and cancelled campaigns only: a sent one is the record of what went out."""
        org = organization_of(principal, NO_CAMPAIGN)
        async with self._db.transaction(principal) as q:
            current = await self._locked(q, org, campaign_id, version)
            if current.status not in ("draft", "cancelled"):
                raise Conflict(f"A {current.status} campaign is kept; cancel it first if it runs.")
            await repo.delete_campaign(q, org, campaign_id)
            await record(
                q, principal, action="broadcast_campaign.deleted",
                entity_type="broadcast_campaign", entity_id=campaign_id,
            )  # fmt: skip

    async def schedule(
        self, principal: Principal, campaign_id: UUID, *, at: dt.datetime
    ) -> repo.CampaignRow:
        org = organization_of(principal, NO_CAMPAIGN)
        if at <= self._now():
            raise ValidationFailed(
                [FieldError("/body/at", "The time must be in the future.", "invalid")]
            )
        if at > self._now() + dt.timedelta(days=366):
            raise ValidationFailed([FieldError("/body/at", "At most a year ahead.", "invalid")])
        async with self._db.transaction(principal) as q:
            current = await self._locked(q, org, campaign_id, None)
            if current.status not in ("draft", "scheduled"):
                raise Conflict(f"A {current.status} campaign cannot be scheduled.")
            await self._audience_checked(
                q, org, current.template_id, current.segment_ids, current.recipient_lists
            )
            row = await repo.move_campaign(q, org, campaign_id, "scheduled", at=at)
            await record(
                q, principal, action="broadcast_campaign.scheduled",
                entity_type="broadcast_campaign", entity_id=row.id,
                changed_fields=["status", "scheduled_at"],
            )  # fmt: skip
        return row

    async def send(self, principal: Principal, campaign_id: UUID) -> repo.CampaignRow:
        org = organization_of(principal, NO_CAMPAIGN)
        async with self._db.transaction(principal) as q:
            current = await self._locked(q, org, campaign_id, None)
            if current.status not in ("draft", "scheduled"):
                raise Conflict(f"A {current.status} campaign cannot be sent.")
            await self._audience_checked(
                q, org, current.template_id, current.segment_ids, current.recipient_lists
            )
            row = await repo.move_campaign(q, org, campaign_id, "sending", at=current.scheduled_at)
            await record(
                q, principal, action="broadcast_campaign.sent",
                entity_type="broadcast_campaign", entity_id=row.id, changed_fields=["status"],
            )  # fmt: skip
        return row

    async def cancel(self, principal: Principal, campaign_id: UUID) -> repo.CampaignRow:
        """Messages not yet handed to a provider are cancelled; those on their way finish."""
        org = organization_of(principal, NO_CAMPAIGN)
        async with self._db.transaction(principal) as q:
            current = await self._locked(q, org, campaign_id, None)
            if current.status not in ("draft", "scheduled", "sending"):
                raise Conflict(f"A {current.status} campaign cannot be cancelled.")
            row = await repo.move_campaign(
                q, org, campaign_id, "cancelled", at=current.scheduled_at
            )
            cancelled = await repo.cancel_messages(q, org, campaign_id)
            await record(
                q, principal, action="broadcast_campaign.cancelled",
                entity_type="broadcast_campaign", entity_id=row.id, changed_fields=["status"],
                detail={"messages_cancelled": cancelled},
            )  # fmt: skip
        return row

    async def stats(self, principal: Principal, campaign_id: UUID) -> Stats:
        org = organization_of(principal, NO_CAMPAIGN)
        async with self._db.transaction(principal, read_only=True) as q:
            row = await repo.campaign(q, org, campaign_id)
            if row is None:
                raise NotFound(NO_CAMPAIGN)
            counts = await repo.campaign_stats(q, org, campaign_id)
        return Stats(row, {c.status: c.count for c in counts})

    async def messages(
        self,
        principal: Principal,
        page: PageRequest,
        *,
        campaign_id: UUID | None,
        status: str | None,
    ) -> Page[repo.MessageRow]:
        org = organization_of(principal, NO_CAMPAIGN)
        found, total = await repo.messages(
            self._db.reader(principal), org, page, campaign_id=campaign_id, status=status
        )
        return Page(found, total, page)

    async def _locked_template(
        self, q: Querier, org: UUID, template_id: UUID, version: int | None
    ) -> repo.TemplateRow:
        current = await repo.template(q, org, template_id, lock=True)
        if current is None:
            raise NotFound(NO_TEMPLATE)
        if version is not None and current.version != version:
            raise PreconditionFailed("The template has changed since it was read.")
        return current

    async def _locked(
        self, q: Querier, org: UUID, campaign_id: UUID, version: int | None
    ) -> repo.CampaignRow:
        current = await repo.campaign(q, org, campaign_id, lock=True)
        if current is None:
            raise NotFound(NO_CAMPAIGN)
        if version is not None and current.version != version:
            raise PreconditionFailed("The campaign has changed since it was read.")
        return current

    async def _audience_checked(
        self,
        q: Querier,
        org: UUID,
        template_id: UUID,
        segment_ids: Sequence[UUID],
        recipient_lists: Sequence[str],
    ) -> str:
        """The template's channel; a 422 naming each template or segment that is not there."""
        problems = []
        found = await repo.template(q, org, template_id)
        if found is None:
            problems.append(FieldError("/body/template_id", NO_TEMPLATE, "not_found"))
        if not segment_ids and not recipient_lists:
            problems.append(
                FieldError(
                    "/body/audience", "Name at least one segment or recipient list.", "required"
                )
            )
        existing = await repo.existing_segments(q, org, segment_ids) if segment_ids else set()
        problems += [
            FieldError(f"/body/audience/segment_ids/{i}", "No such segment.", "not_found")
            for i, segment_id in enumerate(segment_ids)
            if segment_id not in existing
        ]
        if problems or found is None:
            raise ValidationFailed(problems)
        return found.channel

    # --- a patient's preferences ----------------------------------------------------------------

    async def preferences(self, principal: Principal, patient_id: UUID) -> Preferences:
        org = organization_of(principal, NO_PATIENT)
        async with self._db.transaction(principal, read_only=True) as q:
            if not await repo.patient_exists(q, org, patient_id):
                raise NotFound(NO_PATIENT)
            found = await repo.patient_opt_outs(q, org, patient_id)
        return Preferences(patient_id, {o.channel: o for o in found})

    async def set_preferences(
        self, principal: Principal, patient_id: UUID, subscribed: Mapping[str, bool]
    ) -> Preferences:
        org = organization_of(principal, NO_PATIENT)
        source = "patient" if principal.role == "patient" else "staff"
        async with self._db.transaction(principal) as q:
            if not await repo.patient_exists(q, org, patient_id):
                raise NotFound(NO_PATIENT)
            changed = []
            for channel, wanted in subscribed.items():
                if wanted:
                    count = await repo.opt_in_patient(q, org, patient_id, channel)
                else:
                    count = await repo.opt_out_patient(q, org, patient_id, channel, source)
                if count:
                    changed.append(channel)
            if changed:
                await record(
                    q, principal, action="patient.message_preferences_changed",
                    entity_type="patient", entity_id=patient_id, changed_fields=changed,
                )  # fmt: skip
            found = await repo.patient_opt_outs(q, org, patient_id)
        return Preferences(patient_id, {o.channel: o for o in found})

    # --- without signing in: the unsubscribe link, the providers' receipts ----------------------

    async def unsubscribe(self, token: str) -> str:
        """The link's message's recipient stops getting this channel's broadcasts; the link
        works once. Returns the channel."""
        named = self._links.read(token)
        if named is None:
            raise NotFound(NO_LINK)
        org, message_id = named
        async with self._db.admin_transaction() as q:
            found = await delivery.unsubscribe(q, org, message_id)
            if found is None:
                raise NotFound(NO_LINK)
            await _opt_out(q, found, source="unsubscribe_link")
            await record(
                q, Principal.system(org), action="broadcast_message.unsubscribed",
                entity_type="broadcast_message", entity_id=found.id, changed_fields=["opt_out"],
                detail={"channel": found.channel, "campaign_id": str(found.campaign_id)},
            )  # fmt: skip
        return found.channel

    async def receipt(
        self,
        *,
        webhook_id: str | None,
        timestamp: str | None,
        signature: str | None,
        raw: bytes,
        event: Mapping[str, Any],
    ) -> bool:
        """A provider's delivery receipt, verified first; True when it moved a message."""
        try:
            verify_receipt(
                self._receipt_secret, webhook_id=webhook_id, timestamp=timestamp,
                signature=signature, body=raw,
            )  # fmt: skip
        except ReceiptRefused as exc:
            _log.warning("broadcast_receipt_refused", reason=str(exc))
            raise Unauthenticated(f"The receipt was refused: {exc}.") from None
        status = event["status"]
        at = event.get("occurred_at") or self._now()
        async with self._db.admin_transaction() as q:
            found = await delivery.receipt(
                q, event["provider_message_id"], status=status, error=event.get("error"), at=at
            )
            if found is None:
                return False
            if status == "bounced":
                await _opt_out(q, found, source="provider", by_address=True)
            await record(
                q, Principal.system(found.organization_id), action="broadcast_message.receipt",
                entity_type="broadcast_message", entity_id=found.id, changed_fields=["status"],
                detail={"status": status},
            )  # fmt: skip
        return True


def _check_template(channel: str, subject: str | None, body: str) -> None:
    problems = templates.problems(channel, subject, body)
    if problems:
        raise ValidationFailed(problems)


async def _opt_out(
    q: Querier, found: delivery.Receipt, *, source: str, by_address: bool = False
) -> None:
    """By record for a patient (whatever their address becomes), by address otherwise — and
    by address for a bounce, which is about the address, not the person."""
    if found.patient_id is not None and not by_address:
        await delivery.opt_out(
            q, found.organization_id, found.channel, patient_id=found.patient_id,
            address_key=None, source=source,
        )  # fmt: skip
    else:
        await delivery.opt_out(
            q, found.organization_id, found.channel, patient_id=None,
            address_key=found.address_key, source=source,
        )  # fmt: skip


SAMPLE = repo.Person("Ana", "Kovač", None)


async def _preview_person(
    q: Querier, org: UUID, patient_id: UUID | None, recipient_id: UUID | None
) -> repo.Person:
    if patient_id is not None:
        found = await repo.patient_person(q, org, patient_id)
        if found is None:
            raise ValidationFailed([FieldError("/body/patient_id", NO_PATIENT, "not_found")])
        return found
    if recipient_id is not None:
        found = await repo.recipient_person(q, org, recipient_id)
        if found is None:
            raise ValidationFailed([FieldError("/body/recipient_id", NO_RECIPIENT, "not_found")])
        return found
    return SAMPLE
