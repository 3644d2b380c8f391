"""Core with one test-only slow operation, served by uvicorn as `carebase serve` does, for the
graceful-drain test: it runs as its own process, so the SIGTERM it gets is a real one.

`POST /test/slow {organization_id, marker, seconds}` writes a patient and its audit row in one
transaction, then holds the transaction open for `seconds` before committing.

Usage: python tests/drain_server.py <port>   (settings from the environment)
"""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from carebase.apps import common
from carebase.apps.core import create_app
from carebase.config import load_settings
from carebase.operations import cli
from carebase.persistence.db import Database
from carebase.principal import Principal
from carebase.services import audit
from carebase.web.contract import Contract
from carebase.web.results import Reply

APPLICATION = "drain-test"  # its pools' application_name: carebase-drain-test

SLOW: dict[str, Any] = {
    "/test/slow": {
        "post": {
            "operationId": "slowWrite",
            "tags": ["System"],
            "summary": "Test-only: a write that holds its transaction open",
            "security": [],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["organization_id", "marker", "seconds"],
                            "properties": {
                                "organization_id": {"type": "string", "format": "uuid"},
                                "marker": {"type": "string", "maxLength": 40},
                                "seconds": {"type": "number", "minimum": 0, "maximum": 120},
                            },
                        }
                    }
                },
            },
            "responses": {
                "201": {
                    "description": "Written",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
            },
        }
    }
}


@dataclass(frozen=True)
class Made:
    id: uuid.UUID


class SlowHandlers:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def slow_write(self, *, body: dict[str, Any]) -> Reply:
        org = uuid.UUID(body["organization_id"])
        async with self.db.admin_transaction() as q:
            made = await q.fetch_one(
                "INSERT INTO patients.patients (organization_id, given_name, family_name)"
                " VALUES (%s, %s, 'Drain') RETURNING id",
                (org, body["marker"]),
                row=Made,
            )
            assert made is not None
            await audit.record(
                q,
                Principal.system(org),
                action="patient.created",
                entity_type="patient",
                entity_id=made.id,
            )
            await asyncio.sleep(body["seconds"])
        return Reply({"marker": body["marker"]}, status=201)


def main() -> None:
    port = int(sys.argv[1])
    settings = load_settings()
    document = yaml.safe_load(Contract.for_service("core").raw)
    document["paths"].update(SLOW)
    path = settings.data_dir / "drain-contract.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    database = common.build_database(settings, service=APPLICATION)
    app = create_app(
        settings,
        overrides={
            "database": database,
            "contract": Contract(Path(path)),
            "extra_handlers": [SlowHandlers(database)],
        },
    )
    signal.signal(signal.SIGTERM, lambda *_: None)  # as `carebase serve`: a drain exits 0
    cli.serve_in_process(app, settings, host="127.0.0.1", port=port)


if __name__ == "__main__":
    main()
