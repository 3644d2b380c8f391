"""Handlers for openapi/core/broadcasts.yaml."""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID

from carebase.errors import FieldError, ValidationFailed
from carebase.instants import instant
from carebase.pages import Page, PageRequest
from carebase.persistence.broadcasts import (
    CampaignRow,
    ImportRow,
    MessageRow,
    TemplateRow,
)
from carebase.principal import Principal
from carebase.services import message_templates
from carebase.services.broadcast_recipients import RecipientService, RecipientView
from carebase.services.broadcasts import CHANNELS, BroadcastService, Preferences
from carebase.web.bodies import Upload
from carebase.web.results import Reply, accepted, created, no_content, ok, resource

BASE = "/v1/broadcasts"
STATUSES = (
    "queued",
    "sending",
    "sent",
    "delivered",
    "failed",
    "bounced",
    "cancelled",
    "suppressed",
)


class BroadcastHandlers:
    def __init__(self, *, broadcasts: BroadcastService, recipients: RecipientService) -> None:
        self._broadcasts = broadcasts
        self._recipients = recipients

    # --- templates ------------------------------------------------------------------------------

    async def list_broadcast_variables(self, principal: Principal) -> Reply:
        return ok(
            {
                "data": [
                    {
                        "name": name,
                        "description": description,
                        "channels": ["email"]
                        if name in message_templates.EMAIL_ONLY
                        else list(CHANNELS),
                    }
                    for name, description in message_templates.VARIABLES.items()
                ]
            }
        )

    async def list_broadcast_templates(
        self, principal: Principal, *, page: int, page_size: int, channel: str | None
    ) -> Reply:
        found = await self._broadcasts.list_templates(
            principal, PageRequest(page, page_size), channel=channel
        )
        return ok(_page(found, template_json))

    async def create_broadcast_template(
        self, principal: Principal, *, body: dict[str, Any]
    ) -> Reply:
        row = await self._broadcasts.create_template(
            principal,
            name=body["name"],
            channel=body["channel"],
            subject=body.get("subject"),
            body=body["body"],
        )
        return created(
            template_json(row), location=f"{BASE}/templates/{row.id}", version=row.version
        )

    async def get_broadcast_template(
        self, principal: Principal, *, broadcast_template_id: UUID
    ) -> Reply:
        row = await self._broadcasts.get_template(principal, broadcast_template_id)
        return resource(template_json(row), version=row.version)

    async def update_broadcast_template(
        self,
        principal: Principal,
        *,
        broadcast_template_id: UUID,
        if_match: int | None,
        body: dict[str, Any],
    ) -> Reply:
        row = await self._broadcasts.update_template(
            principal, broadcast_template_id, body, version=if_match
        )
        return resource(template_json(row), version=row.version)

    async def delete_broadcast_template(
        self, principal: Principal, *, broadcast_template_id: UUID, if_match: int | None
    ) -> Reply:
        await self._broadcasts.delete_template(principal, broadcast_template_id, version=if_match)
        return no_content()

    async def preview_broadcast_template(
        self, principal: Principal, *, broadcast_template_id: UUID, body: dict[str, Any]
    ) -> Reply:
        patient, recipient = body.get("patient_id"), body.get("recipient_id")
        rendered = await self._broadcasts.preview(
            principal,
            broadcast_template_id,
            patient_id=UUID(patient) if patient else None,
            recipient_id=UUID(recipient) if recipient else None,
        )
        return ok({"subject": rendered.subject, "text": rendered.text, "html": rendered.html})

    # --- recipients and imports -----------------------------------------------------------------

    async def list_broadcast_recipients(
        self, principal: Principal, *, page: int, page_size: int, list_name: str | None
    ) -> Reply:
        found = await self._recipients.list_recipients(
            principal, PageRequest(page, page_size), list_name=list_name
        )
        return ok(_page(found, recipient_json))

    async def add_broadcast_recipient(self, principal: Principal, *, body: dict[str, Any]) -> Reply:
        view = await self._recipients.add(principal, body)
        return created(recipient_json(view), location=f"{BASE}/recipients/{view.row.id}")

    async def delete_broadcast_recipient(
        self, principal: Principal, *, recipient_id: UUID
    ) -> Reply:
        await self._recipients.delete(principal, recipient_id)
        return no_content()

    async def import_broadcast_recipients(self, principal: Principal, *, body: Upload) -> Reply:
        part = body.files["file"]
        row, new = await self._recipients.start_import(
            principal, list_name=body.fields["list_name"], filename=part.filename, data=part.data
        )
        if not new:
            return ok(import_json(row))
        return Reply(import_json(row), status=202, location=f"{BASE}/recipients/imports/{row.id}")

    async def list_broadcast_imports(
        self, principal: Principal, *, page: int, page_size: int
    ) -> Reply:
        found = await self._recipients.list_imports(principal, PageRequest(page, page_size))
        return ok(_page(found, import_json))

    async def get_broadcast_import(self, principal: Principal, *, import_id: UUID) -> Reply:
        return ok(import_json(await self._recipients.get_import(principal, import_id)))

    async def list_broadcast_import_rows(
        self,
        principal: Principal,
        *,
        import_id: UUID,
        page: int,
        page_size: int,
        outcome: str | None,
    ) -> Reply:
        found = await self._recipients.import_lines(
            principal, import_id, PageRequest(page, page_size), outcome=outcome
        )
        return ok(
            {
                "data": [
                    {
                        "line": x.line,
                        "outcome": x.outcome,
                        "reason": x.reason,
                        "recipient_id": x.recipient_id,
                    }
                    for x in found.items
                ],
                "meta": found.meta,
            }
        )

    # --- campaigns ------------------------------------------------------------------------------

    async def list_broadcast_campaigns(
        self, principal: Principal, *, page: int, page_size: int, status: str | None
    ) -> Reply:
        found = await self._broadcasts.list_campaigns(
            principal, PageRequest(page, page_size), status=status
        )
        return ok(_page(found, campaign_json))

    async def create_broadcast_campaign(
        self, principal: Principal, *, body: dict[str, Any]
    ) -> Reply:
        audience = body["audience"]
        row = await self._broadcasts.create_campaign(
            principal,
            name=body["name"],
            template_id=UUID(body["template_id"]),
            segment_ids=[UUID(s) for s in audience.get("segment_ids", ())],
            recipient_lists=list(audience.get("recipient_lists", ())),
        )
        return created(
            campaign_json(row), location=f"{BASE}/campaigns/{row.id}", version=row.version
        )

    async def get_broadcast_campaign(self, principal: Principal, *, campaign_id: UUID) -> Reply:
        row = await self._broadcasts.get_campaign(principal, campaign_id)
        return resource(campaign_json(row), version=row.version)

    async def update_broadcast_campaign(
        self,
        principal: Principal,
        *,
        campaign_id: UUID,
        if_match: int | None,
        body: dict[str, Any],
    ) -> Reply:
        row = await self._broadcasts.update_campaign(principal, campaign_id, body, version=if_match)
        return resource(campaign_json(row), version=row.version)

    async def delete_broadcast_campaign(
        self, principal: Principal, *, campaign_id: UUID, if_match: int | None
    ) -> Reply:
        await self._broadcasts.delete_campaign(principal, campaign_id, version=if_match)
        return no_content()

    async def schedule_broadcast_campaign(
        self, principal: Principal, *, campaign_id: UUID, body: dict[str, Any]
    ) -> Reply:
        row = await self._broadcasts.schedule(
            principal, campaign_id, at=_instant(body["at"], "/body/at")
        )
        return ok(campaign_json(row))

    async def send_broadcast_campaign(self, principal: Principal, *, campaign_id: UUID) -> Reply:
        return accepted(campaign_json(await self._broadcasts.send(principal, campaign_id)))

    async def cancel_broadcast_campaign(self, principal: Principal, *, campaign_id: UUID) -> Reply:
        return ok(campaign_json(await self._broadcasts.cancel(principal, campaign_id)))

    async def get_broadcast_campaign_stats(
        self, principal: Principal, *, campaign_id: UUID
    ) -> Reply:
        stats = await self._broadcasts.stats(principal, campaign_id)
        row = stats.campaign
        counts = {status: stats.by_status.get(status, 0) for status in STATUSES}
        return ok(
            {
                "campaign_id": row.id,
                "status": row.status,
                "audience": row.audience,
                "excluded": {
                    "opted_out": row.excluded_opted_out,
                    "restricted": row.excluded_restricted,
                    "no_address": row.excluded_no_address,
                },
                "messages": {"total": sum(counts.values()), **counts},
            }
        )

    async def list_broadcast_messages(
        self,
        principal: Principal,
        *,
        page: int,
        page_size: int,
        campaign_id: UUID | None,
        status: str | None,
    ) -> Reply:
        found = await self._broadcasts.messages(
            principal, PageRequest(page, page_size), campaign_id=campaign_id, status=status
        )
        return ok(_page(found, message_json))

    # --- preferences, unsubscribe, receipts -----------------------------------------------------

    async def get_message_preferences(self, principal: Principal, *, patient_id: UUID) -> Reply:
        return ok(_preferences(await self._broadcasts.preferences(principal, patient_id)))

    async def set_message_preferences(
        self, principal: Principal, *, patient_id: UUID, body: dict[str, Any]
    ) -> Reply:
        found = await self._broadcasts.set_preferences(principal, patient_id, body)
        return ok(_preferences(found))

    async def unsubscribe_broadcasts(self, *, token: str) -> Reply:
        channel = await self._broadcasts.unsubscribe(token)
        return ok({"channel": channel, "unsubscribed": True})

    async def receive_provider_event(
        self,
        *,
        webhook_id: str | None,
        webhook_timestamp: str | None,
        webhook_signature: str | None,
        body: dict[str, Any],
        raw_body: bytes,
    ) -> Reply:
        event = dict(body)
        if event.get("occurred_at"):
            event["occurred_at"] = _instant(event["occurred_at"], "/body/occurred_at")
        applied = await self._broadcasts.receipt(
            webhook_id=webhook_id,
            timestamp=webhook_timestamp,
            signature=webhook_signature,
            raw=raw_body,
            event=event,
        )
        return accepted({"applied": applied})


def _instant(text: str, pointer: str) -> dt.datetime:
    """The contract checked the format; a time Python cannot hold in UTC (year 1 with a
    positive offset) is the caller's 422, not a 500."""
    moment = instant(text)
    if moment is None:
        raise ValidationFailed([FieldError(pointer, "Not a time that can be held.", "range")])
    return moment


def template_json(row: TemplateRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "channel": row.channel,
        "subject": row.subject,
        "body": row.body,
        "version": row.version,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def recipient_json(view: RecipientView) -> dict[str, Any]:
    row = view.row
    return {
        "id": row.id,
        "list_name": row.list_name,
        "patient_id": row.patient_id,
        "given_name": row.given_name,
        "family_name": row.family_name,
        "email": row.email,
        "phone": view.phone,
        "import_id": row.import_id,
        "created_at": row.created_at,
    }


def import_json(row: ImportRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "list_name": row.list_name,
        "filename": row.filename,
        "media_type": row.media_type,
        "status": row.status,
        "total_rows": row.total_rows,
        "rows_done": min(row.rows_done, row.total_rows)
        if row.total_rows is not None
        else row.rows_done,
        "counts": {
            "created": row.created,
            "matched": row.matched,
            "invalid": row.invalid,
            "duplicate": row.duplicate,
        },
        "error": row.error,
        "created_at": row.created_at,
        "finished_at": row.finished_at,
    }


def campaign_json(row: CampaignRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "template_id": row.template_id,
        "channel": row.channel,
        "audience": {"segment_ids": row.segment_ids, "recipient_lists": row.recipient_lists},
        "status": row.status,
        "scheduled_at": row.scheduled_at,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "failure_reason": row.failure_reason,
        "version": row.version,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def message_json(row: MessageRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "campaign_id": row.campaign_id,
        "channel": row.channel,
        "patient_id": row.patient_id,
        "recipient_id": row.recipient_id,
        "status": row.status,
        "attempts": row.attempts,
        "provider": row.provider,
        "provider_message_id": row.provider_message_id,
        "error": row.error,
        "created_at": row.created_at,
        "sent_at": row.sent_at,
        "delivered_at": row.delivered_at,
        "updated_at": row.updated_at,
    }


def _page(found: Page[Any], shape: Any) -> dict[str, Any]:
    return {"data": [shape(item) for item in found.items], "meta": found.meta}


def _preferences(found: Preferences) -> dict[str, Any]:
    return {
        "patient_id": found.patient_id,
        "channels": [
            {
                "channel": channel,
                "subscribed": channel not in found.opted_out,
                "changed_at": found.opted_out[channel].created_at
                if channel in found.opted_out
                else None,
                "source": found.opted_out[channel].source if channel in found.opted_out else None,
            }
            for channel in CHANNELS
        ],
    }
