"""Webhook endpoints as an organization's admins manage them, and their deliveries.

An endpoint's URL passes the SSRF guard at registration (and again at every delivery, in the
worker). Its secret is shown once, when created or rotated, and sealed at rest; after a
rotation the previous secret keeps signing beside the new one for `overlap_s`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from uuid import UUID, uuid4

import orjson

from carebase.errors import Conflict, FieldError, NotFound, PreconditionFailed, ValidationFailed
from carebase.integrations.webhooks import new_secret, sendable
from carebase.pages import Page, PageRequest
from carebase.persistence import webhooks as repo
from carebase.persistence.db import Database, Querier
from carebase.persistence.work_queue import announce
from carebase.principal import Principal, organization_of
from carebase.security.egress import EgressPolicy, EgressRefused
from carebase.security.encryption import Sealer
from carebase.security.events import SecurityEvents
from carebase.services.audit import record

NO_ENDPOINT = "No such webhook endpoint."
NO_DELIVERY = "No such delivery."
MAX_ENDPOINTS = 50
TEST_EVENT = "webhook.test"
CREATED_FIELDS = ("url", "description", "event_types", "secret")


def secret_aad(organization_id: UUID, endpoint_id: UUID) -> bytes:
    return f"webhooks.endpoint:{organization_id}:{endpoint_id}".encode()


@dataclass(frozen=True, slots=True)
class EndpointChange:
    """A PATCH: only the names in `given` change."""

    given: frozenset[str]
    url: str | None = None
    description: str | None = None
    event_types: list[str] | None = None
    status: str | None = None


@dataclass(frozen=True, slots=True)
class DeliveryView:
    delivery: repo.DeliveryRow
    attempts: list[repo.AttemptRow]


class WebhookService:
    def __init__(
        self,
        *,
        db: Database,
        sealer: Sealer,
        egress: EgressPolicy,
        catalogue: Mapping[str, str],
        overlap_s: int,
        security: SecurityEvents | None = None,
    ) -> None:
        self._db = db
        self._sealer = sealer
        self._egress = egress
        self._catalogue = dict(sorted(catalogue.items()))
        self._overlap_s = overlap_s
        self._security = security

    def event_types(self) -> Mapping[str, str]:
        return self._catalogue

    async def create(
        self, principal: Principal, *, url: str, description: str, event_types: Sequence[str]
    ) -> tuple[repo.EndpointRow, str]:
        organization_id = organization_of(principal, NO_ENDPOINT)
        await self._check_url(url, principal)
        types = self._check_types(event_types)
        secret = new_secret()
        endpoint_id = uuid4()
        sealed = self._sealer.seal(secret.encode(), secret_aad(organization_id, endpoint_id))
        new = repo.NewEndpoint(organization_id, endpoint_id, url, description, types, sealed)
        async with self._db.transaction(principal) as q:
            if await repo.count_endpoints(q, organization_id) >= MAX_ENDPOINTS:
                raise Conflict(f"An organization has at most {MAX_ENDPOINTS} webhook endpoints.")
            row = await repo.insert_endpoint(q, new)
            if row is None:
                raise NotFound(NO_ENDPOINT)
            await self._audit(
                q, principal, "webhook_endpoint.created", row.id, changed=CREATED_FIELDS
            )
        return row, secret

    async def list_endpoints(
        self, principal: Principal, page: PageRequest, *, status: str | None
    ) -> Page[repo.EndpointRow]:
        organization_id = organization_of(principal, NO_ENDPOINT)
        rows, total = await repo.endpoints(
            self._db.reader(principal), organization_id, page, status=status
        )
        return Page(rows, total, page)

    async def get(self, principal: Principal, endpoint_id: UUID) -> repo.EndpointRow:
        organization_id = organization_of(principal, NO_ENDPOINT)
        row = await repo.endpoint(self._db.reader(principal), organization_id, endpoint_id)
        if row is None:
            raise NotFound(NO_ENDPOINT)
        return row

    async def update(
        self,
        principal: Principal,
        endpoint_id: UUID,
        change: EndpointChange,
        *,
        version: int | None,
    ) -> repo.EndpointRow:
        organization_id = organization_of(principal, NO_ENDPOINT)
        if "url" in change.given and change.url is not None:
            await self._check_url(change.url, principal)
        types = (
            self._check_types(change.event_types or []) if "event_types" in change.given else None
        )
        async with self._db.transaction(principal) as q:
            current = await repo.endpoint(q, organization_id, endpoint_id)
            if current is None:
                raise NotFound(NO_ENDPOINT)
            wanted = current
            if change.url is not None:
                wanted = replace(wanted, url=change.url)
            if change.description is not None:
                wanted = replace(wanted, description=change.description)
            if types is not None:
                wanted = replace(wanted, event_types=types)
            if change.status is not None and change.status != current.status:
                reason = None if change.status == "enabled" else "manual"
                wanted = replace(wanted, status=change.status, disabled_reason=reason)
            row = await repo.update_endpoint(q, organization_id, wanted, version=version)
            if row is None:
                raise PreconditionFailed("The endpoint changed since it was read; read it again.")
            changed = [
                name
                for name in ("url", "description", "event_types", "status")
                if getattr(current, name) != getattr(row, name)
            ]
            await self._audit(q, principal, "webhook_endpoint.updated", row.id, changed=changed)
        return row

    async def delete(self, principal: Principal, endpoint_id: UUID, *, version: int | None) -> None:
        organization_id = organization_of(principal, NO_ENDPOINT)
        async with self._db.transaction(principal) as q:
            if await repo.endpoint(q, organization_id, endpoint_id) is None:
                raise NotFound(NO_ENDPOINT)
            if not await repo.delete_endpoint(q, organization_id, endpoint_id, version=version):
                raise PreconditionFailed("The endpoint changed since it was read; read it again.")
            await self._audit(q, principal, "webhook_endpoint.deleted", endpoint_id)

    async def rotate_secret(
        self, principal: Principal, endpoint_id: UUID
    ) -> tuple[repo.EndpointRow, str]:
        organization_id = organization_of(principal, NO_ENDPOINT)
        secret = new_secret()
        sealed = self._sealer.seal(secret.encode(), secret_aad(organization_id, endpoint_id))
        async with self._db.transaction(principal) as q:
            row = await repo.rotate_secret(
                q, organization_id, endpoint_id, sealed=sealed, overlap_s=self._overlap_s
            )
            if row is None:
                raise NotFound(NO_ENDPOINT)
            await self._audit(
                q, principal, "webhook_endpoint.secret_rotated", row.id, changed=["secret"]
            )
        return row, secret

    async def enable(self, principal: Principal, endpoint_id: UUID) -> repo.EndpointRow:
        organization_id = organization_of(principal, NO_ENDPOINT)
        async with self._db.transaction(principal) as q:
            current = await repo.endpoint(q, organization_id, endpoint_id)
            if current is None:
                raise NotFound(NO_ENDPOINT)
            # The URL may have become unacceptable (its name now resolves inward).
            await self._check_url(current.url, principal)
            row = await repo.enable_endpoint(q, organization_id, endpoint_id)
            await self._audit(q, principal, "webhook_endpoint.enabled", row.id, changed=["status"])
            if current.status != "enabled":  # its pending deliveries are due again
                await announce(q, repo.DELIVERIES_TABLE)
        return row

    async def send_test(self, principal: Principal, endpoint_id: UUID) -> repo.DeliveryRow:
        """A `webhook.test` event for this endpoint only, delivered like any other."""
        organization_id = organization_of(principal, NO_ENDPOINT)
        event_id = uuid4()
        body = orjson.dumps(
            {
                "type": TEST_EVENT,
                "timestamp": timestamp_text(datetime.now(UTC)),
                "data": {"organization_id": str(organization_id), "endpoint_id": str(endpoint_id)},
            }
        )
        async with self._db.transaction(principal) as q:
            if await repo.endpoint(q, organization_id, endpoint_id) is None:
                raise NotFound(NO_ENDPOINT)
            row = await repo.insert_delivery(
                q,
                organization_id,
                endpoint_id=endpoint_id,
                event_id=event_id,
                event_type=TEST_EVENT,
                body=body,
            )
            if row is None:
                raise NotFound(NO_ENDPOINT)
            await self._audit(q, principal, "webhook_endpoint.tested", endpoint_id)
        return row

    async def deliveries(
        self, principal: Principal, endpoint_id: UUID, page: PageRequest, *, status: str | None
    ) -> Page[repo.DeliveryRow]:
        organization_id = organization_of(principal, NO_ENDPOINT)
        q = self._db.reader(principal)
        if await repo.endpoint(q, organization_id, endpoint_id) is None:
            raise NotFound(NO_ENDPOINT)
        rows, total = await repo.deliveries(q, organization_id, endpoint_id, page, status=status)
        return Page(rows, total, page)

    async def delivery(
        self, principal: Principal, endpoint_id: UUID, delivery_id: UUID
    ) -> DeliveryView:
        organization_id = organization_of(principal, NO_DELIVERY)
        async with self._db.transaction(principal, read_only=True) as q:
            row = await repo.delivery(q, organization_id, endpoint_id, delivery_id)
            if row is None:
                raise NotFound(NO_DELIVERY)
            return DeliveryView(row, await repo.attempts(q, organization_id, delivery_id))

    async def redeliver(
        self, principal: Principal, endpoint_id: UUID, delivery_id: UUID
    ) -> repo.DeliveryRow:
        organization_id = organization_of(principal, NO_DELIVERY)
        async with self._db.transaction(principal) as q:
            if await repo.delivery(q, organization_id, endpoint_id, delivery_id) is None:
                raise NotFound(NO_DELIVERY)
            row = await repo.redeliver(q, organization_id, endpoint_id, delivery_id)
            if row is None:
                raise Conflict("The delivery is being attempted right now; try again shortly.")
            await self._audit(
                q,
                principal,
                "webhook_delivery.redelivered",
                delivery_id,
                entity_type="webhook_delivery",
            )
        return row

    async def recover(self, principal: Principal, endpoint_id: UUID, since: datetime) -> int:
        organization_id = organization_of(principal, NO_ENDPOINT)
        if since.timestamp() > time.time():
            raise ValidationFailed(
                [FieldError("/body/since", "Must not be in the future.", "range")]
            )
        async with self._db.transaction(principal) as q:
            if await repo.endpoint(q, organization_id, endpoint_id) is None:
                raise NotFound(NO_ENDPOINT)
            count = await repo.recover(q, organization_id, endpoint_id, since)
            await self._audit(q, principal, "webhook_endpoint.recovered", endpoint_id)
        return count

    async def _check_url(self, url: str, principal: Principal) -> None:
        if not sendable(url):
            raise ValidationFailed([FieldError("/body/url", "The URL cannot be read.", "format")])
        try:
            await self._egress.check(url)
        except EgressRefused as exc:
            if self._security is not None:
                origin = principal.origin
                self._security.record(
                    "webhook_target_blocked",
                    organization_id=principal.organization_id,
                    actor_user_id=principal.user_id,
                    ip=origin.ip if origin else None,
                    request_id=origin.request_id if origin else None,
                    detail={"at": "registration", "reason": exc.reason[:200]},
                )
            raise ValidationFailed([FieldError("/body/url", exc.reason, "egress")]) from None

    def _check_types(self, event_types: Sequence[str]) -> list[str]:
        unknown = [
            FieldError(f"/body/event_types/{i}", "No such event type.", "unknown")
            for i, name in enumerate(event_types)
            if name not in self._catalogue
        ]
        if unknown:
            raise ValidationFailed(unknown)
        return sorted(set(event_types))

    async def _audit(
        self,
        q: Querier,
        principal: Principal,
        action: str,
        entity_id: UUID,
        *,
        changed: Sequence[str] = (),
        entity_type: str = "webhook_endpoint",
    ) -> None:
        await record(
            q,
            principal,
            action=action,
            entity_type=entity_type,
            entity_id=entity_id,
            changed_fields=changed,
        )


def timestamp_text(moment: datetime) -> str:
    """RFC 3339 in UTC with `Z`, as Standard Webhooks' examples write it."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
