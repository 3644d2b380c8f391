"""Handlers for openapi/core/webhooks.yaml."""

from __future__ import annotations

from uuid import UUID

from carebase.generated.models import core as api
from carebase.pages import PageRequest
from carebase.persistence.webhooks import AttemptRow, DeliveryRow, EndpointRow
from carebase.principal import Principal
from carebase.services.webhooks import EndpointChange, WebhookService
from carebase.web.results import NO_STORE, Reply, accepted, created, no_content, ok, resource

BASE = "/v1/webhooks/endpoints"


class WebhookHandlers:
    def __init__(self, *, webhooks: WebhookService) -> None:
        self._webhooks = webhooks

    async def list_webhook_event_types(self, principal: Principal) -> Reply:
        catalogue = self._webhooks.event_types()
        return ok(
            api.WebhookEventTypeList.model_construct(
                data=[
                    api.WebhookEventTypeInfo.model_construct(type=name, description=text)
                    for name, text in catalogue.items()
                ]
            )
        )

    async def list_webhook_endpoints(
        self, principal: Principal, *, page: int, page_size: int, status: str | None
    ) -> Reply:
        found = await self._webhooks.list_endpoints(
            principal, PageRequest(page, page_size), status=status
        )
        return ok(
            api.WebhookEndpointPage.model_construct(
                data=[_endpoint(row) for row in found.items], meta=found.meta
            )
        )

    async def create_webhook_endpoint(
        self, principal: Principal, *, body: api.WebhookEndpointCreate
    ) -> Reply:
        given = body.model_dump(mode="json")
        row, secret = await self._webhooks.create(
            principal,
            url=given["url"],
            description=given["description"],
            event_types=given["event_types"],
        )
        return created(
            api.WebhookEndpointSecret.model_construct(endpoint=_endpoint(row), secret=secret),
            location=f"{BASE}/{row.id}",
            version=row.version,
            headers=NO_STORE,
        )

    async def get_webhook_endpoint(self, principal: Principal, *, endpoint_id: UUID) -> Reply:
        row = await self._webhooks.get(principal, endpoint_id)
        return resource(_endpoint(row), version=row.version)

    async def update_webhook_endpoint(
        self,
        principal: Principal,
        *,
        endpoint_id: UUID,
        if_match: int | None,
        body: api.WebhookEndpointUpdate,
    ) -> Reply:
        given = body.model_dump(mode="json", exclude_unset=True)
        change = EndpointChange(given=frozenset(given), **given)
        row = await self._webhooks.update(principal, endpoint_id, change, version=if_match)
        return resource(_endpoint(row), version=row.version)

    async def delete_webhook_endpoint(
        self, principal: Principal, *, endpoint_id: UUID, if_match: int | None
    ) -> Reply:
        await self._webhooks.delete(principal, endpoint_id, version=if_match)
        return no_content()

    async def rotate_webhook_endpoint_secret(
        self, principal: Principal, *, endpoint_id: UUID
    ) -> Reply:
        row, secret = await self._webhooks.rotate_secret(principal, endpoint_id)
        return resource(
            api.WebhookEndpointSecret.model_construct(endpoint=_endpoint(row), secret=secret),
            version=row.version,
            headers=NO_STORE,
        )

    async def enable_webhook_endpoint(self, principal: Principal, *, endpoint_id: UUID) -> Reply:
        row = await self._webhooks.enable(principal, endpoint_id)
        return resource(_endpoint(row), version=row.version)

    async def test_webhook_endpoint(self, principal: Principal, *, endpoint_id: UUID) -> Reply:
        return accepted(_delivery(await self._webhooks.send_test(principal, endpoint_id)))

    async def recover_webhook_endpoint(
        self, principal: Principal, *, endpoint_id: UUID, body: api.WebhookRecover
    ) -> Reply:
        count = await self._webhooks.recover(principal, endpoint_id, body.since)
        return accepted(api.WebhookRecovery.model_construct(requeued=count))

    async def list_webhook_deliveries(
        self,
        principal: Principal,
        *,
        endpoint_id: UUID,
        page: int,
        page_size: int,
        status: str | None,
    ) -> Reply:
        found = await self._webhooks.deliveries(
            principal, endpoint_id, PageRequest(page, page_size), status=status
        )
        return ok(
            api.WebhookDeliveryPage.model_construct(
                data=[_delivery(row) for row in found.items], meta=found.meta
            )
        )

    async def get_webhook_delivery(
        self, principal: Principal, *, endpoint_id: UUID, delivery_id: UUID
    ) -> Reply:
        view = await self._webhooks.delivery(principal, endpoint_id, delivery_id)
        return ok(
            api.WebhookDeliveryDetail.model_construct(
                delivery=_delivery(view.delivery),
                attempts=[_attempt(row) for row in view.attempts],
            )
        )

    async def redeliver_webhook_delivery(
        self, principal: Principal, *, endpoint_id: UUID, delivery_id: UUID
    ) -> Reply:
        row = await self._webhooks.redeliver(principal, endpoint_id, delivery_id)
        return accepted(_delivery(row))


def _endpoint(row: EndpointRow) -> api.WebhookEndpoint:
    return api.WebhookEndpoint.model_construct(
        id=row.id,
        url=row.url,
        description=row.description,
        event_types=row.event_types,
        status=row.status,
        disabled_reason=row.disabled_reason,
        previous_secret_expires_at=row.previous_secret_expires_at,
        failing_since=row.failing_since,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _delivery(row: DeliveryRow) -> api.WebhookDelivery:
    return api.WebhookDelivery.model_construct(
        id=row.id,
        endpoint_id=row.endpoint_id,
        event_id=row.event_id,
        event_type=row.event_type,
        status=row.status,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        created_at=row.created_at,
        finished_at=row.finished_at,
    )


def _attempt(row: AttemptRow) -> api.WebhookAttempt:
    return api.WebhookAttempt.model_construct(
        number=row.number,
        attempted_at=row.attempted_at,
        duration_ms=row.duration_ms,
        outcome=row.outcome,
        status_code=row.status_code,
        error=row.error,
        response_excerpt=row.response_excerpt,
    )
