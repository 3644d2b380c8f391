"""Core's client of telemetry's data-subject endpoints (the service credential): a subject's
telemetry exported or erased for the GDPR worker."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import httpx


class TelemetryUnavailable(Exception):
    """Telemetry did not answer, or answered with an error: the step is tried again later."""


class TelemetrySubjects:
    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        timeout_s: float = 120.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        # Erasing a subject with many rows waits for ClickHouse's mutations: a long timeout.
        self._timeout = httpx.Timeout(timeout_s)
        self._transport = transport

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            async with httpx.AsyncClient(
                timeout=self._timeout, follow_redirects=False, transport=self._transport
            ) as client:
                answer = await client.post(self._base + path, json=body, headers=self._headers)
        except httpx.HTTPError as exc:
            raise TelemetryUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if answer.status_code != 200:
            raise TelemetryUnavailable(f"HTTP {answer.status_code}: {answer.text[:300]}")
        found: dict[str, Any] = answer.json()
        return found

    @staticmethod
    def _subject(
        organization_id: UUID, subject_id: UUID | None, session_ids: Sequence[UUID]
    ) -> dict[str, Any]:
        return {
            "organization_id": str(organization_id),
            "subject_id": str(subject_id) if subject_id else None,
            "session_ids": [str(s) for s in session_ids],
        }

    async def erase(
        self,
        organization_id: UUID,
        subject_id: UUID | None,
        session_ids: Sequence[UUID],
        *,
        reason: str = "erase",
    ) -> list[dict[str, Any]]:
        body = {**self._subject(organization_id, subject_id, session_ids), "reason": reason}
        tables: list[dict[str, Any]] = (await self._post("/v1/privacy/subjects/erase", body))[
            "tables"
        ]
        return tables

    async def export(
        self, organization_id: UUID, subject_id: UUID | None, session_ids: Sequence[UUID]
    ) -> dict[str, list[dict[str, Any]]]:
        body = self._subject(organization_id, subject_id, session_ids)
        found = await self._post("/v1/privacy/subjects/export", body)
        return {t["table"]: t["rows"] for t in found["tables"]}
