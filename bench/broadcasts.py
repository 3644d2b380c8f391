"""Broadcasts (issue 15): audience expansion over a large clinic, and how many messages one
worker hands to a provider per second.

- **Expansion**: the segments bench's clinic (BENCH_SEGMENT_PATIENTS patients, default
  100,000) in one static segment; an e-mail campaign to it is sent and `expand_one()` timed:
  one statement that classifies every member (restricted, no address, opted out by record or
  by address) and writes one message per address. The campaign is cancelled afterwards.
- **Sending**: BENCH_BROADCAST_MESSAGES contacts (default 20,000) with sealed phone numbers
  on a recipient list, an SMS campaign to it, sent by one `BroadcastWorker` through the
  Twilio-shaped HTTP adapter to the local fake provider (tests/messaging_support.py) running
  under uvicorn in a process of its own. Every check stays on: claim with a lease, the
  opt-out and restriction check per message, the phone unsealed, the template rendered, the
  Redis pace (its rates set out of the way), the outcome written, the campaign finished.

Run alone: `python bench/broadcasts.py` (it prepares the stack that bench/run.py uses).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from typing import Any

import psycopg
from asgi_lifespan import LifespanManager

from carebase.apps import common, core
from carebase.config import PROJECT_ROOT, load_settings
from carebase.integrations.messaging import Channels, EmailMessaging, HttpMessaging
from carebase.operations import devstack
from carebase.principal import Principal
from carebase.services.broadcast_recipients import phone_index, seal_phone
from carebase.services.broadcasts import BroadcastService

MESSAGES = int(os.environ.get("BENCH_BROADCAST_MESSAGES", "20000"))
RESULTS = PROJECT_ROOT / "docs" / "benchmarks-broadcasts.json"
ACCOUNT = "AC0123456789abcdef0123456789abcdef"
TOKEN = "fake-auth-token-for-tests"  # noqa: S105 - the local fake provider's


def _settings(stack: devstack.EmbeddedStack, data_dir: Any) -> Any:
    return load_settings(
        {
            "ENVIRONMENT": "test",
            "DATA_DIR": str(data_dir),
            "DATABASE_URL": stack.database_url,
            "DATABASE_ADMIN_URL": stack.database_admin_url,
            "REDIS_URL": stack.redis_url,
            "RUN_WORKERS": "false",
            "LOG_LEVEL": "warning",
            "DB_STATEMENT_TIMEOUT_MS": "120000",
            "BROADCAST_RATE_PER_ORGANIZATION": "10000",
            "BROADCAST_RATE_PER_PROVIDER": "100000",
        }
    )


def _contacts(
    app: core.CoreApp, conn: psycopg.Connection[Any], org: uuid.UUID, list_name: str
) -> None:
    sealer = app.dependencies.sealer
    rows = []
    for n in range(MESSAGES):
        recipient = uuid.uuid4()
        phone = f"+3859{n:08d}"
        rows.append((org, recipient, list_name, f"Contact{n}",
                     seal_phone(sealer, org, recipient, phone),
                     phone_index(sealer, phone)))  # fmt: skip
    with (
        conn.cursor() as cursor,
        cursor.copy(
            "COPY broadcasts.recipients (organization_id, id, list_name, given_name, phone_sealed,"
            " phone_index) FROM STDIN"
        ) as copy,
    ):
        for row in rows:
            copy.write_row(row)


async def _run(stack: devstack.EmbeddedStack, data_dir: Any, provider_url: str) -> dict[str, Any]:
    import segments  # noqa: PLC0415 - the segments bench owns the large clinic

    org, admin, _, _ = segments.prepare(stack)
    settings = _settings(stack, data_dir)
    app = core.create_app(settings)
    principal = Principal(admin, org, "admin")
    async with LifespanManager(app):
        deps = app.dependencies
        channels = Channels(
            EmailMessaging(deps.mail),
            HttpMessaging(base_url=provider_url, account_id=ACCOUNT, auth_token=TOKEN,
                          from_sms="+38512345678", from_whatsapp=None),
        )  # fmt: skip
        worker = common.broadcast_worker(
            settings, deps.database, sealer=deps.sealer, blobs=app.blobs, mail=deps.mail,
            redis_pipe=deps.redis_pipe, channels=channels,
        )  # fmt: skip
        service = BroadcastService(
            db=deps.database,
            links=common.unsubscribe_links(settings, deps.sealer), receipt_secret=None,
        )  # fmt: skip
        list_name = f"bench-{uuid.uuid4().hex[:8]}"
        segment = uuid.uuid4()
        with psycopg.connect(stack.database_admin_url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO segments.segments (organization_id, id, name, kind)"
                " VALUES (%s, %s, %s, 'static')",
                (org, segment, f"Everyone {list_name}"),
            )
            members = conn.execute(
                "INSERT INTO segments.members (organization_id, segment_id, patient_id, source)"
                " SELECT organization_id, %s, id, 'manual' FROM patients.patients"
                " WHERE organization_id = %s",
                (segment, org),
            ).rowcount
            _contacts(app, conn, org, list_name)
            conn.execute("ANALYZE segments.members")
            conn.execute("ANALYZE broadcasts.recipients")
        email = await service.create_template(
            principal, name="Bench e-mail", channel="email", subject="Hello {{patient.given_name}}",
            body="Your exercises are in the app.\n\n{{clinic.name}}",
        )  # fmt: skip
        sms = await service.create_template(
            principal,
            name="Bench SMS",
            channel="sms",
            subject=None,
            body="Hi {{patient.given_name}}, {{clinic.name}}",
        )
        # Expansion of the whole clinic.
        wide = await service.create_campaign(
            principal,
            name="Everyone",
            template_id=email.id,
            segment_ids=[segment],
            recipient_lists=[],
        )
        await service.send(principal, wide.id)
        started = time.perf_counter()
        assert await worker.expand_one()  # noqa: S101
        expansion_s = time.perf_counter() - started
        stats = await service.stats(principal, wide.id)
        await service.cancel(principal, wide.id)
        # Sending to the list.
        texted = await service.create_campaign(
            principal, name="Texts", template_id=sms.id, segment_ids=[], recipient_lists=[list_name]
        )
        await service.send(principal, texted.id)
        assert await worker.expand_one()  # noqa: S101
        started = time.perf_counter()
        sent = 0
        while claimed := await worker.send_batch():
            sent += claimed
        sending_s = time.perf_counter() - started
        after = await service.stats(principal, texted.id)
        await worker.close()
    return {
        "patients": members,
        "expansion_s": round(expansion_s, 3),
        "expanded_messages": stats.by_status.get("queued", 0),
        "audience": stats.campaign.audience,
        "messages": sent,
        "sending_s": round(sending_s, 3),
        "messages_per_s": round(sent / sending_s),
        "sent": after.by_status.get("sent", 0),
        "campaign_status": after.campaign.status,
    }


def measure(stack: devstack.EmbeddedStack, data_dir: Any) -> dict[str, Any]:
    sys.path.insert(0, str(PROJECT_ROOT / "tests"))  # the tests' fake provider
    from messaging_support import fake_provider_process  # noqa: PLC0415

    with fake_provider_process() as provider:
        result = asyncio.run(_run(stack, data_dir, provider.url))
    print(f"bench broadcasts: {json.dumps(result)}", flush=True)
    return result


def markdown(result: dict[str, Any] | None) -> str:
    if not result:
        return ""
    r = result
    return f"""## Broadcasts (issue 15)

bench/broadcasts.py, on the stack above, every check on.

| what | measured |
|---|---:|
| expand an e-mail campaign's audience of {r["patients"]:,} patients (one statement: {r["expanded_messages"]:,} messages) | {r["expansion_s"]:.2f} s |
| SMS handed to the local fake provider by one worker ({r["messages"]:,} messages in {r["sending_s"]:.1f} s) | {r["messages_per_s"]:,} messages/s |

The expansion classifies every member (restricted, without an address on the channel,
opted out by record or by address) and writes one message per address in the same
statement. Sending claims 100 messages with a lease, checks each again (opt-out,
restriction), unseals its phone, renders the template, takes the organization's and the
provider's token from Redis, posts to the Twilio-shaped adapter (16 in flight) and writes the
batch's outcomes in one statement; the fake provider runs under uvicorn in its own process on
the same two cores. In production the configured rates (`BROADCAST_RATE_PER_ORGANIZATION`,
default 20/s, and `BROADCAST_RATE_PER_PROVIDER`, 50/s) govern long before this ceiling.

Where the worker's time goes while sending (py-spy, 250 Hz): aiohttp's client 56 %, psycopg
16 %, the Redis pace 6 %, rendering and unsealing 3 %. Before the batch was claimed and read
in one statement, the read alone (an unnest of ids joined to the queue, which the prepared
statement's generic plan scanned) took 85 ms a batch at 10,000 queued: about 700 messages/s.
"""


def main() -> None:
    import run  # noqa: PLC0415 (bench/run.py owns the stack; it imports this module)

    stack = run.prepared_stack()
    try:
        result = measure(stack, run.BENCH_DIR)
    finally:
        stack.stop()
    if os.environ.get("BENCH_WRITE", "1") != "0":
        RESULTS.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
