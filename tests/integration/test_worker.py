"""`carebase worker` as its own process, and the mail outbox claimed with a lease: competing
relays never send one mail twice, and no transaction is open while SMTP is talked to."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from support import Clinic, Inbox
from webhook_support import Receiver, running_receiver

from carebase.apps.common import Background, event_relays
from carebase.config import Settings
from carebase.integrations.mail import Mail, OutboxRelay
from carebase.persistence import work_queue
from carebase.persistence.db import Database
from carebase.services.attachments import BlobReaper
from carebase.services.scheduling_worker import SchedulingWorker


def _queue(conn: psycopg.Connection[Any], recipients: list[str]) -> None:
    for recipient in recipients:
        conn.execute(
            "INSERT INTO identity.email_outbox (recipient, subject, body) VALUES (%s, 'Hi', 'x')",
            (recipient,),
        )


class _Counting:
    """A sender that counts, and checks that the mail's row is not locked while it is sent."""

    def __init__(self, sent: list[str], probes: list[str], admin_url: str) -> None:
        self.sent = sent
        self.probes = probes
        self.admin_url = admin_url

    def _probe(self, recipient: str) -> None:
        # Waits out another relay's claim (milliseconds); a relay that sent inside its own
        # claiming transaction would hold the lock until this send returned: LockNotAvailable.
        with psycopg.connect(self.admin_url) as conn, conn.transaction():
            conn.execute("SET LOCAL lock_timeout = '3s'")
            conn.execute(
                "SELECT 1 FROM identity.email_outbox WHERE recipient = %s FOR UPDATE",
                (recipient,),
            )
        self.probes.append(recipient)

    async def send(self, mail: Mail) -> None:
        await asyncio.to_thread(self._probe, mail.recipient)
        self.sent.append(mail.recipient)


async def test_competing_relays_send_each_mail_once(
    app: Any, admin_conn: psycopg.Connection[Any], inbox: Inbox, settings: Settings
) -> None:
    recipients = [f"lease-{uuid.uuid4().hex[:8]}@example.com" for _ in range(30)]
    _queue(admin_conn, recipients)
    database: Database = app.dependencies.database
    sent: list[str] = []
    probes: list[str] = []
    admin_url = settings.database_admin_url or ""
    relays = [OutboxRelay(database, _Counting(sent, probes, admin_url)) for _ in range(3)]

    async def drain(relay: OutboxRelay) -> None:
        while await relay.deliver_batch():
            pass

    await asyncio.gather(*(drain(relay) for relay in relays))
    # Together (and with any other relay at work on the database), every mail went out once.
    # Mail other tests left queued goes out in these rounds too: only this test's is counted.
    ours = [r for r in sent if r in recipients]
    by_app = [m["To"] for m in inbox.messages if m["To"] in recipients]
    assert sorted(ours + by_app) == sorted(recipients)
    assert sorted(p for p in probes if p in recipients) == sorted(ours)
    left = admin_conn.execute(
        "SELECT count(*) FROM identity.email_outbox WHERE recipient = ANY(%s)"
        " AND (sent_at IS NULL OR claimed_until IS NOT NULL)",
        (recipients,),
    ).fetchone()
    assert left == (0,)


async def test_a_claimed_mail_is_not_claimed_again_while_its_lease_holds(
    app: Any, admin_conn: psycopg.Connection[Any], settings: Settings
) -> None:
    recipient = f"held-{uuid.uuid4().hex[:8]}@example.com"
    _queue(admin_conn, [recipient])
    admin_conn.execute(
        "UPDATE identity.email_outbox SET claimed_until = now() + interval '1 minute'"
        " WHERE recipient = %s",
        (recipient,),
    )
    sent: list[str] = []
    relay = OutboxRelay(
        app.dependencies.database, _Counting(sent, [], settings.database_admin_url or "")
    )
    while await relay.deliver_batch():
        pass
    assert recipient not in sent  # a relay holds it (or died holding it: see below)
    admin_conn.execute(
        "UPDATE identity.email_outbox SET claimed_until = now() - interval '1 second'"
        " WHERE recipient = %s",
        (recipient,),
    )
    while await relay.deliver_batch():
        pass
    assert sent.count(recipient) == 1  # the lease ran out: sent again, at least once


def _worker_env(settings: Settings, data_dir: Path, smtp_port: int) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", ""),
        "XDG_RUNTIME_DIR": os.environ.get("XDG_RUNTIME_DIR", ""),
        "ENVIRONMENT": "test",
        "DATA_DIR": str(data_dir),
        "DATABASE_URL": settings.database_url or "",
        "DATABASE_ADMIN_URL": settings.database_admin_url or "",
        "REDIS_URL": settings.redis_url or "",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp_port),
        "SMTP_STARTTLS": "false",
        "LOG_FORMAT": "json",
        "DB_POOL_MIN_SIZE": "0",
        "DB_POOL_MAX_SIZE": "2",
        # Other tests' endpoints name example hosts: a worker with the system's resolver must
        # not try them. The webhook test below turns it on after isolating its own delivery.
        "WEBHOOKS_WORKER": "false",
    }


async def test_the_worker_process_does_the_background_work_and_stops_cleanly(
    settings: Settings,
    admin_conn: psycopg.Connection[Any],
    smtp: tuple[Inbox, int],
    new_org: Any,
    tmp_path: Path,
) -> None:
    inbox, port = smtp
    org = new_org()
    # An object whose attachment is gone: only a worker deletes it (the test app's blob
    # worker is off), so its disappearance is the worker's doing.
    key = f"{org}/{uuid.uuid4()}"
    blob = tmp_path / "blobs" / key
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"%PDF-1.7")
    admin_conn.execute(
        "INSERT INTO attachments.blob_deletions (organization_id, storage_key) VALUES (%s, %s)",
        (org, key),
    )
    recipient = f"worker-{uuid.uuid4().hex[:8]}@example.com"
    _queue(admin_conn, [recipient])

    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "carebase.operations.cli",
        "worker",
        env=_worker_env(settings, tmp_path, port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while blob.exists() or not inbox.to(recipient):
            assert worker.returncode is None, "the worker stopped on its own"
            assert time.monotonic() < deadline, "the worker did not do its work in 30 s"
            await asyncio.sleep(0.1)
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(worker.communicate(), timeout=30)
    assert worker.returncode == 0, output
    assert b'"worker_started"' in output
    assert b'"worker_stopped"' in output
    queued = admin_conn.execute(
        "SELECT count(*) FROM attachments.blob_deletions WHERE storage_key = %s", (key,)
    ).fetchone()
    assert queued == (0,)


async def test_queues_announce_new_work_when_it_commits(
    app: Any, admin_conn: psycopg.Connection[Any], settings: Settings, new_org: Any
) -> None:
    seen: list[str] = []
    arrived = asyncio.Event()

    def on_work(table: str) -> None:
        seen.append(table)
        if table == "attachments.blob_deletions":
            arrived.set()

    listener = asyncio.create_task(work_queue.listen(settings.database_admin_url or "", on_work))
    try:
        while not seen:  # LISTEN is in place once a first announcement comes through
            _queue(admin_conn, [f"probe-{uuid.uuid4().hex[:8]}@example.com"])
            await asyncio.sleep(0.05)
        seen.clear()
        try:
            with admin_conn.transaction():
                _queue(admin_conn, ["never@example.com"])
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        admin_conn.execute(
            "INSERT INTO scheduling.video_tasks (organization_id, appointment_id, action,"
            " room_name, done_at) VALUES (%s, %s, 'delete', 'r', now())",
            (new_org(), uuid.uuid4()),
        )
        admin_conn.execute(
            "INSERT INTO attachments.blob_deletions (organization_id, storage_key)"
            " VALUES (%s, 'x/y')",
            (new_org(),),
        )
        await asyncio.wait_for(arrived.wait(), timeout=10)
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        admin_conn.execute("DELETE FROM attachments.blob_deletions WHERE storage_key = 'x/y'")
    # Notifications come in commit order: the rolled-back mail announced nothing.
    assert [t for t in seen if t != "identity.email_outbox"] == [
        "scheduling.video_tasks",
        "attachments.blob_deletions",
    ]
    assert "identity.email_outbox" not in seen[: seen.index("scheduling.video_tasks")]


async def test_an_announcement_wakes_the_queues_worker(app: Any, settings: Settings) -> None:
    database = app.dependencies.database
    background = Background(
        database,
        OutboxRelay(database, app.dependencies.mail),
        SchedulingWorker(database, app.video),
        BlobReaper(database, app.blobs),
        event_relays(settings, database, app.dependencies.sealer),
    )
    for table, worker in (
        ("identity.email_outbox", background.relay),
        ("scheduling.video_tasks", background.scheduling),
        ("attachments.blob_deletions", background.reaper),
        ("audit.outbox", background.events.dispatcher),
        ("webhooks.deliveries", background.events.sender),
    ):
        assert not worker.rounds.nudged
        background.wake(table)
        assert worker.rounds.nudged
    background.wake("some.other_table")  # unknown tables are ignored


@pytest.fixture
async def webhook_endpoint(
    app: Any,
    client: httpx.AsyncClient,
    clinic: Callable[..., Clinic],
    admin_conn: psycopg.Connection[Any],
    tmp_path: Path,
) -> AsyncIterator[tuple[Receiver, str, str]]:
    """An endpoint at a loopback receiver with one `webhook.test` delivery due, and nothing
    else for a worker to send: the rest of the suite's pending deliveries are set aside and
    every event so far counts as dispatched."""
    c = clinic()
    # The worker's data directory (tmp_path) holds the keyring the API sealed the secret with.
    (tmp_path / "data-keys.json").write_text(app.dependencies.sealer.keyring.dumps())
    with running_receiver() as receiver:
        made = await client.post(
            "/v1/webhooks/endpoints",
            headers=c.admin.auth,
            json={"url": receiver.url(), "event_types": ["webhook.test"]},
        )
        endpoint_id = made.json()["endpoint"]["id"]
        tested = await client.post(
            f"/v1/webhooks/endpoints/{endpoint_id}/test", headers=c.admin.auth
        )
        delivery_id = tested.json()["id"]
        # The worker process resolves names itself: it gets the address, trusted by its settings.
        admin_conn.execute(
            "UPDATE webhooks.endpoints SET url = %s WHERE id = %s",
            (f"http://127.0.0.1:{receiver.port}/hook", endpoint_id),
        )
        admin_conn.execute(
            "UPDATE webhooks.deliveries SET status = 'failed', finished_at = now()"
            " WHERE status = 'pending' AND id <> %s",
            (delivery_id,),
        )
        admin_conn.execute(
            "UPDATE audit.outbox SET dispatched_at = now() WHERE dispatched_at IS NULL"
        )
        yield receiver, endpoint_id, delivery_id


async def _start_worker(env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "carebase.operations.cli",
            "worker",
            env=env,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )


async def test_a_worker_killed_between_sending_and_marking_causes_a_redelivery_with_the_same_id(
    settings: Settings,
    admin_conn: psycopg.Connection[Any],
    smtp: tuple[Inbox, int],
    tmp_path: Path,
    webhook_endpoint: tuple[Receiver, str, str],
) -> None:
    receiver, _, delivery_id = webhook_endpoint
    env = {
        **_worker_env(settings, tmp_path, smtp[1]),
        "WEBHOOKS_WORKER": "true",
        "WEBHOOK_TRUSTED_HOSTS": "127.0.0.1",
        "SCHEDULING_WORKER": "false",
        "BLOB_REAPER": "false",
    }
    hold = threading.Event()
    receiver.hold = hold  # the receiver has the request and has not answered yet
    log = tmp_path / "worker.log"
    first = await _start_worker(env, log)
    try:
        arrived = await asyncio.to_thread(receiver.arrived.wait, 30)
        assert arrived, f"no delivery in 30 s: {log.read_text()[-3000:]}"
        first.kill()  # SIGKILL: no handler runs, nothing is marked
        await first.wait()
    finally:
        hold.set()
        if first.returncode is None:
            first.kill()
    row = admin_conn.execute(
        "SELECT status, attempts, claimed_until > now() FROM webhooks.deliveries WHERE id = %s",
        (delivery_id,),
    ).fetchone()
    assert row == ("pending", 1, True)  # claimed, sent, never marked
    # The lease runs out (60 s; moved here instead of waited for); another worker sends it again.
    admin_conn.execute(
        "UPDATE webhooks.deliveries SET claimed_until = now() - interval '1 s' WHERE id = %s",
        (delivery_id,),
    )
    receiver.arrived.clear()
    receiver.hold = None
    second = await _start_worker(env, log)
    try:
        arrived = await asyncio.to_thread(receiver.arrived.wait, 30)
        assert arrived, f"no redelivery in 30 s: {log.read_text()[-3000:]}"
        deadline = time.monotonic() + 30
        while admin_conn.execute(
            "SELECT status FROM webhooks.deliveries WHERE id = %s", (delivery_id,)
        ).fetchone() != ("succeeded",):
            assert time.monotonic() < deadline, "the redelivery was not marked"
            await asyncio.sleep(0.05)
    finally:
        second.send_signal(signal.SIGTERM)
        await asyncio.wait_for(second.wait(), timeout=30)
    ids = receiver.ids()
    assert len(ids) == 2  # sent twice: at least once
    assert len(set(ids)) == 1  # under the same event id: deduplicable
    assert second.returncode == 0
