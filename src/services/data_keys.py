"""Re-sealing stored health data under the newest data key (`carebase keys rotate-data`).

Runs on the owner pool (a platform job across tenants), in small batches, each its own
transaction, so a long rotation never holds many locks and can be interrupted and re-run:
values already under the newest key are left alone. Older keys stay in the keyring, so rows
not yet re-sealed stay readable throughout.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import structlog

from carebase.persistence import broadcasts, documents, forms, patients, specialists, webhooks
from carebase.persistence.db import Database, Querier
from carebase.security.encryption import Sealer, UnsealError
from carebase.services import documents as document_service
from carebase.services import forms as form_service
from carebase.services import patients as patient_service
from carebase.services import specialists as specialist_service
from carebase.services.broadcast_recipients import recipient_aad
from carebase.services.webhooks import secret_aad

BATCH = 500
_log = structlog.get_logger("carebase.data_keys")
START = (UUID(int=0), UUID(int=0))


@dataclass(frozen=True, slots=True)
class Resealed:
    patients: int
    specialists: int
    forms: int
    documents: int
    webhook_secrets: int
    recipients: int
    unreadable: int
    """Values that failed authentication: left as they are, and logged (without content)."""


class _Counter:
    def __init__(self) -> None:
        self.unreadable = 0


async def reseal_all(db: Database, sealer: Sealer, *, batch: int = BATCH) -> Resealed:
    counter = _Counter()
    patients_done = await _reseal_patients(db, sealer, batch, counter)
    specialists_done = await _reseal_column(db, sealer, batch, counter, SPECIALISTS)
    forms_done = await _reseal_column(db, sealer, batch, counter, FORMS)
    documents_done = await _reseal_column(db, sealer, batch, counter, DOCUMENTS)
    secrets_done = await _reseal_webhook_secrets(db, sealer, batch, counter)
    recipients_done = await _reseal_column(db, sealer, batch, counter, RECIPIENTS)
    return Resealed(
        patients_done,
        specialists_done,
        forms_done,
        documents_done,
        secrets_done,
        recipients_done,
        counter.unreadable,
    )


def _renewed(sealer: Sealer, sealed: bytes | None, aad: bytes, counter: _Counter) -> bytes | None:
    """The value sealed under the newest key; None when it needs nothing or cannot open."""
    if sealed is None:
        return None
    try:
        if sealer.keyring.is_current(sealed):
            return None
        return sealer.seal(sealer.open(sealed, aad), aad)
    except UnsealError:
        counter.unreadable += 1
        _log.error("reseal_unreadable_value", row=aad.decode().rsplit("|", 2)[0])
        return None


async def _reseal_patients(db: Database, sealer: Sealer, batch: int, counter: _Counter) -> int:
    after, changed = START, 0
    while True:
        async with db.admin_transaction() as q:
            rows = await patients.sealed_batch(q, after, batch)
            for row in rows:
                columns = {
                    f"{name}_sealed": getattr(row, f"{name}_sealed") for name in patients.SEALED
                }
                renewed_here = 0
                for name in patients.SEALED:
                    aad = patient_service.aad(row.organization_id, row.id, name)
                    renewed = _renewed(sealer, columns[f"{name}_sealed"], aad, counter)
                    if renewed is not None:
                        columns[f"{name}_sealed"] = renewed
                        renewed_here += 1
                if renewed_here:
                    await patients.reseal(q, row, columns)
                    changed += renewed_here
        if len(rows) < batch:
            return changed
        after = (rows[-1].organization_id, rows[-1].id)


@dataclass(frozen=True, slots=True)
class _OneColumn:
    """A table whose rows hold one sealed value: how to page through it, re-seal a row, and
    build a row's associated data."""

    batch: Callable[[Querier, tuple[UUID, UUID], int], Awaitable[Sequence[Any]]]
    reseal: Callable[[Querier, Any, bytes], Awaitable[None]]
    value: Callable[[Any], bytes | None]
    aad: Callable[[Any], bytes]


SPECIALISTS = _OneColumn(
    specialists.sealed_batch,
    specialists.reseal,
    lambda row: row.custom_sealed,
    lambda row: specialist_service.aad(row.organization_id, row.id, "custom"),
)
# Sensitive answers and document bodies: a signed form and a final document accept this one
# change (their hashes cover the plaintext, which stays the same).
FORMS = _OneColumn(
    forms.sealed_batch,
    forms.reseal,
    lambda row: row.sealed_answers,
    lambda row: form_service.answers_aad(row.organization_id, row.id),
)
DOCUMENTS = _OneColumn(
    documents.sealed_batch,
    documents.reseal,
    lambda row: row.body_sealed,
    lambda row: document_service.body_aad(row.organization_id, row.id),
)


# Broadcast recipients' phone numbers (contacts' and imported rows').
RECIPIENTS = _OneColumn(
    broadcasts.sealed_batch,
    broadcasts.reseal,
    lambda row: row.phone_sealed,
    lambda row: recipient_aad(row.organization_id, row.id),
)


async def _reseal_column(
    db: Database, sealer: Sealer, batch: int, counter: _Counter, table: _OneColumn
) -> int:
    after, changed = START, 0
    while True:
        async with db.admin_transaction() as q:
            rows = await table.batch(q, after, batch)
            for row in rows:
                renewed = _renewed(sealer, table.value(row), table.aad(row), counter)
                if renewed is not None:
                    await table.reseal(q, row, renewed)
                    changed += 1
        if len(rows) < batch:
            return changed
        after = (rows[-1].organization_id, rows[-1].id)


async def _reseal_webhook_secrets(
    db: Database, sealer: Sealer, batch: int, counter: _Counter
) -> int:
    """Endpoint signing secrets (and, during a rotation, the previous one)."""
    after, changed = START, 0
    while True:
        async with db.admin_transaction() as q:
            rows = await webhooks.sealed_batch(q, after, batch)
            for row in rows:
                aad = secret_aad(row.organization_id, row.id)
                secret = _renewed(sealer, row.secret_sealed, aad, counter)
                previous = _renewed(sealer, row.previous_secret_sealed, aad, counter)
                if secret is None and previous is None:
                    continue
                await webhooks.reseal(
                    q, row, secret or row.secret_sealed, previous or row.previous_secret_sealed
                )
                changed += (secret is not None) + (previous is not None)
        if len(rows) < batch:
            return changed
        after = (rows[-1].organization_id, rows[-1].id)
