"""Webhooks against the real database and real HTTP receivers on 127.0.0.1: endpoints and
their secrets, the SSRF guard at registration and at delivery, Standard Webhooks signatures
checked by the reference library, retries, the dead letter, auto-disable, per-endpoint
scheduling, competing workers, and the telemetry forward."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from support import Clinic, Person
from webhook_support import (
    DELIVERY_DNS,
    RECEIVER_HOST,
    Answer,
    Receiver,
    running_receiver,
)

from carebase.apps.core import CoreApp
from carebase.integrations.webhooks import WebhookPoster
from carebase.persistence import webhooks as repo
from carebase.security.egress import EgressPolicy
from carebase.services.data_keys import reseal_all
from carebase.services.webhook_delivery import (
    EventDispatcher,
    TelemetryForwarder,
    WebhookSender,
)

pytestmark = pytest.mark.integration

BASE = "/v1/webhooks/endpoints"
Conn = psycopg.Connection[tuple[Any, ...]]


# --- parts -----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def only_this_tests_work(admin_conn: Conn) -> None:
    """The sender and dispatcher work for the whole database: other tests' endpoints (the
    contract tests register dozens) leave deliveries and events behind. Set them aside, so a
    round here is about this test's deliveries only."""
    admin_conn.execute(
        "UPDATE webhooks.deliveries SET status = 'failed', finished_at = now()"
        " WHERE status = 'pending'"
    )
    admin_conn.execute("UPDATE audit.outbox SET dispatched_at = now() WHERE dispatched_at IS NULL")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as started:
        yield started


def make_sender(app: CoreApp, **options: Any) -> WebhookSender:
    """A sender as the worker builds one, whose resolver knows only the loopback receiver
    (and what a test adds): nothing beyond 127.0.0.1 is ever connected to."""
    policy = EgressPolicy(
        allow_http=True,
        trusted_hosts=frozenset({RECEIVER_HOST}),
        resolver=DELIVERY_DNS.resolve,
    )
    return WebhookSender(
        app.dependencies.database,
        sealer=app.dependencies.sealer,
        egress=policy,
        poster=WebhookPoster(connect_timeout_s=2, total_timeout_s=3),
        **options,
    )


@pytest.fixture
async def sender(app: CoreApp) -> AsyncIterator[WebhookSender]:
    made = make_sender(app)
    yield made
    await made._poster.close()


async def dispatch(app: CoreApp) -> None:
    while await app.events.dispatcher.dispatch_once():
        pass


async def send(sender: WebhookSender, endpoint_ids: set[str]) -> list[repo.Outcome]:
    """One round of the sender; the outcomes for these endpoints (others' are not ours)."""
    done = await sender.send_once()
    return [a.outcome for a in done if str(a.outcome.endpoint_id) in endpoint_ids]


async def register(
    client: httpx.AsyncClient, admin: Person, url: str, **fields: Any
) -> tuple[dict[str, Any], str]:
    made = await client.post(BASE, headers=admin.auth, json={"url": url, **fields})
    assert made.status_code == 201, made.text
    body = made.json()
    return body["endpoint"], body["secret"]


async def new_patient(client: httpx.AsyncClient, admin: Person, given: str = "Ana") -> str:
    made = await client.post(
        "/v1/patients", headers=admin.auth, json={"given_name": given, "family_name": "Horvat"}
    )
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def due_now(conn: Conn, endpoint_id: str) -> None:
    """The next attempt is due (instead of waiting out the schedule)."""
    conn.execute(
        "UPDATE webhooks.deliveries SET next_attempt_at = now()"
        " WHERE endpoint_id = %s AND status = 'pending'",
        (endpoint_id,),
    )


def ticking(start: float | None = None) -> Callable[[], float]:
    """A clock that moves on a second each time it is read."""
    base = time.time() if start is None else start
    counter = itertools.count()
    return lambda: base + next(counter)


@dataclass(frozen=True)
class Kit:
    app: CoreApp
    client: httpx.AsyncClient
    clinic: Callable[..., Clinic]
    conn: Conn


@pytest.fixture
def kit(
    app: CoreApp, client: httpx.AsyncClient, clinic: Callable[..., Clinic], admin_conn: Conn
) -> Kit:
    return Kit(app, client, clinic, admin_conn)


# --- endpoints -------------------------------------------------------------------------------


async def test_the_catalogue_lists_audit_actions_and_platform_events(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    c = clinic()
    found = await client.get("/v1/webhooks/event-types", headers=c.admin.auth)
    assert found.status_code == 200, found.text
    catalogue = {item["type"]: item["description"] for item in found.json()["data"]}
    assert catalogue["patient.created"]
    assert {"webhook.test", "webhook.delivery.exhausted", "appointment.cancelled"} <= set(catalogue)
    staff = await client.get("/v1/webhooks/event-types", headers=c.staff.auth)
    assert staff.status_code == 403


async def test_a_secret_is_shown_once_and_sealed_at_rest(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic], admin_conn: Conn
) -> None:
    c = clinic()
    endpoint, secret = await register(
        client, c.admin, "https://hooks.north.example.com/in", event_types=["patient.created"]
    )
    assert secret.startswith("whsec_")
    assert len(secret) == 50
    assert endpoint["status"] == "enabled"
    assert endpoint["event_types"] == ["patient.created"]
    read = await client.get(f"{BASE}/{endpoint['id']}", headers=c.admin.auth)
    assert read.status_code == 200
    assert "secret" not in read.json()
    assert secret not in read.text
    sealed = admin_conn.execute(
        "SELECT secret_sealed FROM webhooks.endpoints WHERE id = %s", (endpoint["id"],)
    ).fetchone()
    assert sealed is not None
    assert secret.encode() not in bytes(sealed[0])
    assert secret.removeprefix("whsec_").encode() not in bytes(sealed[0])


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://0.0.0.0/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://100.64.0.1/hook",
        "http://10.0.0.1/hook",
        "http://[fc00::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[64:ff9b::7f00:1]/hook",
        "http://2130706433/",
        "http://0x7f.1/",
        "https://user:pass@hooks.example.com/hook",
        "https://hooks.example.com:22/hook",
        "ftp://hooks.example.com/hook",
    ],
)
async def test_registration_refuses_what_is_not_a_public_destination(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic], url: str
) -> None:
    c = clinic()
    refused = await client.post(BASE, headers=c.admin.auth, json={"url": url})
    assert refused.status_code in (400, 422), refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert [e["pointer"] for e in refused.json()["errors"]] == ["/body/url"]


async def test_a_name_that_does_not_resolve_or_an_unknown_type_is_refused(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    c = clinic()
    nowhere = await client.post(BASE, headers=c.admin.auth, json={"url": "https://nx.invalid/"})
    assert nowhere.status_code == 422
    assert nowhere.json()["errors"][0]["pointer"] == "/body/url"
    unknown = await client.post(
        BASE,
        headers=c.admin.auth,
        json={"url": "https://hooks.example.com/", "event_types": ["patient.created", "nope.x"]},
    )
    assert unknown.status_code in (400, 422), unknown.text
    assert [e["pointer"] for e in unknown.json()["errors"]] == ["/body/event_types/1"]


async def test_only_admins_manage_endpoints_and_tenants_stay_apart(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic], sender: WebhookSender
) -> None:
    c, other = clinic(), clinic()
    endpoint, _ = await register(client, c.admin, "https://hooks.example.com/in")
    tested = await client.post(f"{BASE}/{endpoint['id']}/test", headers=c.admin.auth)
    delivery = tested.json()["id"]
    for who in (c.staff, c.specialist, c.patient):
        listed = await client.get(BASE, headers=who.auth)
        assert listed.status_code == 403
        made = await client.post(BASE, headers=who.auth, json={"url": "https://a.example.com"})
        assert made.status_code == 403
    paths = [
        ("GET", f"{BASE}/{endpoint['id']}"),
        ("PATCH", f"{BASE}/{endpoint['id']}"),
        ("DELETE", f"{BASE}/{endpoint['id']}"),
        ("POST", f"{BASE}/{endpoint['id']}/rotate-secret"),
        ("POST", f"{BASE}/{endpoint['id']}/enable"),
        ("POST", f"{BASE}/{endpoint['id']}/test"),
        ("GET", f"{BASE}/{endpoint['id']}/deliveries"),
        ("GET", f"{BASE}/{endpoint['id']}/deliveries/{delivery}"),
        ("POST", f"{BASE}/{endpoint['id']}/deliveries/{delivery}/redeliver"),
    ]
    for method, path in paths:
        headers = {**other.admin.auth, "If-Match": "*"}
        body = {"description": "x"} if method == "PATCH" else None
        crossed = await client.request(method, path, headers=headers, json=body)
        assert crossed.status_code == 404, (method, path, crossed.text)
    recover = await client.post(
        f"{BASE}/{endpoint['id']}/recover",
        headers=other.admin.auth,
        json={"since": "2026-01-01T00:00:00Z"},
    )
    assert recover.status_code == 404
    listed = await client.get(BASE, headers=other.admin.auth)
    assert listed.json()["data"] == []


async def test_update_disable_and_delete_follow_versions(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic], admin_conn: Conn
) -> None:
    c = clinic()
    endpoint, _ = await register(client, c.admin, "https://hooks.example.com/in")
    path = f"{BASE}/{endpoint['id']}"
    stale = await client.patch(
        path, headers={**c.admin.auth, "If-Match": '"7"'}, json={"description": "x"}
    )
    assert stale.status_code == 412
    changed = await client.patch(
        path,
        headers={**c.admin.auth, "If-Match": f'"{endpoint["version"]}"'},
        json={"status": "disabled", "event_types": ["appointment.created"]},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["status"] == "disabled"
    assert changed.json()["disabled_reason"] == "manual"
    refused = await client.patch(
        path, headers={**c.admin.auth, "If-Match": "*"}, json={"url": "http://10.1.2.3/"}
    )
    assert refused.status_code == 422
    enabled = await client.post(f"{path}/enable", headers=c.admin.auth)
    assert enabled.json()["status"] == "enabled"
    assert enabled.json()["disabled_reason"] is None
    gone = await client.delete(path, headers={**c.admin.auth, "If-Match": "*"})
    assert gone.status_code == 204
    assert (await client.get(path, headers=c.admin.auth)).status_code == 404
    trail = admin_conn.execute(
        "SELECT action FROM audit.events WHERE entity_id = %s ORDER BY occurred_at",
        (endpoint["id"],),
    ).fetchall()
    assert [row[0] for row in trail] == [
        "webhook_endpoint.created",
        "webhook_endpoint.updated",
        "webhook_endpoint.enabled",
        "webhook_endpoint.deleted",
    ]


# --- deliveries ------------------------------------------------------------------------------


async def test_events_arrive_signed_and_verify_with_the_reference_library(
    app: CoreApp,
    client: httpx.AsyncClient,
    clinic: Callable[..., Clinic],
    sender: WebhookSender,
    receiver: Receiver,
) -> None:
    c = clinic()
    endpoint, secret = await register(
        client, c.admin, receiver.url(), event_types=["patient.created", "patient.updated"]
    )
    patient = await new_patient(client, c.admin, given="Zrinka")
    await client.post("/v1/specialties", headers=c.admin.auth, json={"name": "Not subscribed"})
    await dispatch(app)
    outcomes = await send(sender, {endpoint["id"]})
    assert [o.outcome for o in outcomes] == ["succeeded"]
    [got] = receiver.received
    verified = Webhook(secret).verify(got.body, got.headers)
    assert verified["type"] == "patient.created"
    assert verified["data"]["entity_id"] == patient
    assert verified["data"]["entity_type"] == "patient"
    assert verified["data"]["actor"] == {"type": "user", "id": str(c.admin.user_id)}
    assert b"Zrinka" not in got.body
    assert b"Horvat" not in got.body
    assert got.headers["content-type"] == "application/json"
    assert got.headers["host"] == f"{RECEIVER_HOST}:{receiver.port}"
    other_secret = "whsec_" + "A" * 43 + "="
    with pytest.raises(WebhookVerificationError):
        Webhook(other_secret).verify(got.body, got.headers)
    listed = await client.get(f"{BASE}/{endpoint['id']}/deliveries", headers=c.admin.auth)
    [delivery] = listed.json()["data"]
    assert delivery["status"] == "succeeded"
    assert delivery["event_id"] == got.headers["webhook-id"]


async def test_during_a_rotation_either_secret_verifies(
    app: CoreApp,
    client: httpx.AsyncClient,
    clinic: Callable[..., Clinic],
    sender: WebhookSender,
    receiver: Receiver,
) -> None:
    c = clinic()
    endpoint, old = await register(client, c.admin, receiver.url())
    rotated = await client.post(f"{BASE}/{endpoint['id']}/rotate-secret", headers=c.admin.auth)
    assert rotated.status_code == 200, rotated.text
    assert rotated.headers["cache-control"] == "no-store"
    new = rotated.json()["secret"]
    assert new != old
    assert rotated.json()["endpoint"]["previous_secret_expires_at"]
    await client.post(f"{BASE}/{endpoint['id']}/test", headers=c.admin.auth)
    await send(sender, {endpoint["id"]})
    [got] = receiver.received
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    assert Webhook(new).verify(got.body, got.headers)["type"] == "webhook.test"
    assert Webhook(old).verify(got.body, got.headers)["type"] == "webhook.test"


async def test_the_previous_secret_stops_signing_when_it_expires(
    kit: Kit,
    sender: WebhookSender,
    receiver: Receiver,
) -> None:
    client = kit.client
    clinic = kit.clinic
    admin_conn = kit.conn
    c = clinic()
    endpoint, old = await register(client, c.admin, receiver.url())
    rotated = await client.post(f"{BASE}/{endpoint['id']}/rotate-secret", headers=c.admin.auth)
    admin_conn.execute(
        "UPDATE webhooks.endpoints SET previous_secret_expires_at = now() - interval '1 s'"
        " WHERE id = %s",
        (endpoint["id"],),
    )
    await client.post(f"{BASE}/{endpoint['id']}/test", headers=c.admin.auth)
    await send(sender, {endpoint["id"]})
    [got] = receiver.received
    assert len(got.headers["webhook-signature"].split(" ")) == 1
    Webhook(rotated.json()["secret"]).verify(got.body, got.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(got.body, got.headers)


async def test_two_failures_then_success_is_three_attempts_under_one_id(
    app: CoreApp,
    client: httpx.AsyncClient,
    clinic: Callable[..., Clinic],
    receiver: Receiver,
    admin_conn: Conn,
) -> None:
    c = clinic()
    sender = make_sender(app, clock=ticking())
    receiver.script = [Answer(500, body=b"boom"), Answer(500), Answer(200)]
    endpoint, secret = await register(client, c.admin, receiver.url())
    await client.post(f"{BASE}/{endpoint['id']}/test", headers=c.admin.auth)
    first = await send(sender, {endpoint["id"]})
    assert [o.status for o in first] == ["pending"]
    wait = (first[0].next_attempt_at - first[0].attempted_at).total_seconds()
    assert 4.0 <= wait <= 6.0  # 5 s ± 20 %
    assert await send(sender, {endpoint["id"]}) == []  # not due yet
    for _ in range(2):
        due_now(admin_conn, endpoint["id"])
        await send(sender, {endpoint["id"]})
    await sender._poster.close()
    assert len(receiver.received) == 3
    assert len(set(receiver.ids())) == 1
    stamps = [int(r.headers["webhook-timestamp"]) for r in receiver.received]
    assert stamps == sorted(set(stamps))  # fresh for each attempt
    for got in receiver.received:
        Webhook(secret).verify(got.body, got.headers)
    assert len({r.body for r in receiver.received}) == 1  # the same bytes each time
    delivery_id = str(first[0].delivery_id)
    detail = await client.get(
        f"{BASE}/{endpoint['id']}/deliveries/{delivery_id}", headers=c.admin.auth
    )
    body = detail.json()
    assert body["delivery"]["status"] == "succeeded"
    assert body["delivery"]["attempts"] == 3
    assert [(a["outcome"], a["status_code"]) for a in body["attempts"]] == [
        ("failed", 500),
        ("failed", 500),
        ("succeeded", 200),
    ]
    assert body["attempts"][0]["response_excerpt"] == "boom"


async def test_gone_disables_the_endpoint_and_a_redirect_is_a_failure(
    kit: Kit,
    sender: WebhookSender,
    receiver: Receiver,
) -> None:
    client = kit.client
    clinic = kit.clinic
    admin_conn = kit.conn
    c = clinic()
    redirected, _ = await register(client, c.admin, receiver.url("/moved"))
    receiver.script = [Answer(302, headers={"location": receiver.url("/elsewhere")})]
    await client.post(f"{BASE}/{redirected['id']}/test", headers=c.admin.auth)
    [outcome] = await send(sender, {redirected["id"]})
    assert outcome.outcome == "failed"
    assert outcome.status_code == 302
    assert [r.path for r in receiver.received] == ["/moved"]  # never followed

    gone, _ = await register(client, c.admin, receiver.url("/gone"))
    receiver.script = [Answer(410)]
    await client.post(f"{BASE}/{gone['id']}/test", headers=c.admin.auth)
    await send(sender, {gone["id"]})
    read = (await client.get(f"{BASE}/{gone['id']}", headers=c.admin.auth)).json()
    assert (read["status"], read["disabled_reason"]) == ("disabled_auto", "gone")
    # Disabled: its pending deliveries wait; enabling sends them.
    due_now(admin_conn, gone["id"])
    assert await send(sender, {gone["id"]}) == []
    await client.post(f"{BASE}/{gone['id']}/enable", headers=c.admin.auth)
    due_now(admin_conn, gone["id"])
    assert [o.outcome for o in await send(sender, {gone["id"]})] == ["succeeded"]
    actions = admin_conn.execute(
        "SELECT action FROM audit.events WHERE entity_id = %s", (gone["id"],)
    ).fetchall()
    assert ("webhook_endpoint.auto_disabled",) in actions


async def test_retry_after_sets_the_next_attempt(
    app: CoreApp,
    client: httpx.AsyncClient,
    clinic: Callable[..., Clinic],
    sender: WebhookSender,
    receiver: Receiver,
) -> None:
    c = clinic()
    endpoint, _ = await register(client, c.admin, receiver.url())
    receiver.script = [Answer(503, headers={"retry-after": "120"})]
    await client.post(f"{BASE}/{endpoint['id']}/test", headers=c.admin.auth)
    [outcome] = await send(sender, {endpoint["id"]})
    wait = (outcome.next_attempt_at - outcome.attempted_at).total_seconds()
    assert 119 <= wait <= 121


async def test_the_last_failure_dead_letters_and_redelivery_starts_again(
    kit: Kit,
    sender: WebhookSender,
    receiver: Receiver,
) -> None:
    client = kit.client
    clinic = kit.clinic
    admin_conn = kit.conn
    c = clinic()
    endpoint, _ = await register(client, c.admin, receiver.url())
    receiver.otherwise = Answer(500)
    tested = await client.post(f"{BASE}/{endpoint['id']}/test", headers=c.admin.auth)
    delivery = tested.json()["id"]
    admin_conn.execute("UPDATE webhooks.deliveries SET step = 7 WHERE id = %s", (delivery,))
    [outcome] = await send(sender, {endpoint["id"]})
    assert outcome.status == "failed"
    exhausted = admin_conn.execute(
        "SELECT count(*) FROM audit.events WHERE action = 'webhook.delivery.exhausted'"
        " AND entity_id = %s",
        (delivery,),
    ).fetchone()
    assert exhausted == (1,)
    path = f"{BASE}/{endpoint['id']}/deliveries"
    failed = await client.get(path, headers=c.admin.auth, params={"status": "failed"})
    assert [d["id"] for d in failed.json()["data"]] == [delivery]

    receiver.otherwise = Answer(204)
    again = await client.post(f"{path}/{delivery}/redeliver", headers=c.admin.auth)
    assert again.status_code == 202
    assert again.json()["status"] == "pending"
    assert [o.outcome for o in await send(sender, {endpoint["id"]})] == ["succeeded"]
    assert len(set(receiver.ids())) == 1

    # Recover: every failed delivery since a moment is pending again.
    receiver.otherwise = Answer(500)
    for _ in range(2):
        await client.post(f"{BASE}/{endpoint['id']}/test", headers=c.admin.auth)
    admin_conn.execute(
        "UPDATE webhooks.deliveries SET step = 7 WHERE endpoint_id = %s AND status = 'pending'",
        (endpoint["id"],),
    )
    await send(sender, {endpoint["id"]})
    recovered = await client.post(
        f"{BASE}/{endpoint['id']}/recover",
        headers=c.admin.auth,
        json={"since": (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()},
    )
    assert recovered.status_code == 202
    assert recovered.json() == {"requeued": 2}
    future = await client.post(
        f"{BASE}/{endpoint['id']}/recover",
        headers=c.admin.auth,
        json={"since": "2999-01-01T00:00:00Z"},
    )
    assert future.status_code == 422


async def test_an_endpoint_failing_for_five_days_is_disabled(
    kit: Kit,
    sender: WebhookSender,
    receiver: Receiver,
) -> None:
    client = kit.client
    clinic = kit.clinic
    admin_conn = kit.conn
    c = clinic()
    endpoint, _ = await register(client, c.admin, receiver.url())
    receiver.otherwise = Answer(503)
    await client.post(f"{BASE}/{endpoint['id']}/test", headers=c.admin.auth)
    await send(sender, {endpoint["id"]})
    read = (await client.get(f"{BASE}/{endpoint['id']}", headers=c.admin.auth)).json()
    assert read["status"] == "enabled"
    assert read["failing_since"] is not None
    admin_conn.execute(
        "UPDATE webhooks.endpoints SET failing_since = now() - interval '5 days 1 minute'"
        " WHERE id = %s",
        (endpoint["id"],),
    )
    due_now(admin_conn, endpoint["id"])
    await send(sender, {endpoint["id"]})
    read = (await client.get(f"{BASE}/{endpoint['id']}", headers=c.admin.auth)).json()
    assert (read["status"], read["disabled_reason"]) == ("disabled_auto", "failing")


async def test_a_dead_endpoint_does_not_delay_a_healthy_one(
    app: CoreApp, client: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    c = clinic()
    with running_receiver() as dead, running_receiver() as healthy:
        release = threading.Event()
        dead.hold = release
        slow, _ = await register(client, c.admin, dead.url())
        fine, _ = await register(client, c.admin, healthy.url())
        for _ in range(15):
            await client.post(f"{BASE}/{slow['id']}/test", headers=c.admin.auth)
        sender = make_sender(app)
        running = asyncio.create_task(sender.run())
        sender.nudge()
        try:
            assert await asyncio.to_thread(dead.arrived.wait, 5)
            await client.post(f"{BASE}/{fine['id']}/test", headers=c.admin.auth)
            sender.nudge()
            started = time.monotonic()
            assert await asyncio.to_thread(healthy.arrived.wait, 5)
            assert time.monotonic() - started < 2.0
            # The dead one holds at most 10 connections; the rest wait their turn.
            assert len(dead.received) <= 10
        finally:
            release.set()
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)


async def test_competing_senders_deliver_each_claim_once(
    app: CoreApp,
    client: httpx.AsyncClient,
    clinic: Callable[..., Clinic],
    receiver: Receiver,
) -> None:
    c = clinic()
    await register(client, c.admin, receiver.url(), event_types=["patient.created"])
    for _ in range(8):
        await new_patient(client, c.admin)
    await dispatch(app)
    senders = [make_sender(app, per_endpoint=100) for _ in range(3)]
    await asyncio.gather(*(s.send_once() for s in senders))
    for s in senders:
        await s.send_once()
        await s._poster.close()
    assert len(receiver.received) == 8
    assert len(set(receiver.ids())) == 8  # N events, N distinct ids, none twice


async def test_a_claim_whose_lease_ran_out_is_sent_again_under_the_same_id(
    kit: Kit,
    sender: WebhookSender,
    receiver: Receiver,
) -> None:
    app = kit.app
    client = kit.client
    clinic = kit.clinic
    admin_conn = kit.conn
    c = clinic()
    endpoint, _ = await register(client, c.admin, receiver.url())
    tested = await client.post(f"{BASE}/{endpoint['id']}/test", headers=c.admin.auth)
    crashed = make_sender(app)
    claimed = await crashed._claim(100)  # claimed, then the worker died: never sent nor marked
    assert str(tested.json()["id"]) in {str(d.id) for d in claimed}
    assert await send(sender, {endpoint["id"]}) == []  # the lease holds
    admin_conn.execute(
        "UPDATE webhooks.deliveries SET claimed_until = now() - interval '1 s'"
        " WHERE endpoint_id = %s",
        (endpoint["id"],),
    )
    [outcome] = await send(sender, {endpoint["id"]})
    assert outcome.outcome == "succeeded"
    assert outcome.attempt == 2
    assert receiver.ids() == [str(tested.json()["event_id"])]


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "0.0.0.0",  # noqa: S104 (an address the guard must refuse)
        "169.254.169.254",
        "100.64.0.1",
        "10.0.0.1",
        "::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "64:ff9b::7f00:1",
    ],
)
async def test_a_name_that_turns_inward_after_registration_is_blocked(
    kit: Kit,
    sender: WebhookSender,
    address: str,
) -> None:
    client = kit.client
    clinic = kit.clinic
    admin_conn = kit.conn
    c = clinic()
    with running_receiver() as sink:
        host = f"rebind-{uuid.uuid4().hex[:8]}.carebase.test"
        # At registration the name answers a public address. The sink listens on a port no
        # URL may name, so the test moves the URL there behind the API's back: only the
        # address check stands between the delivery and the sink.
        endpoint, _ = await register(client, c.admin, f"http://{host}/hook")
        admin_conn.execute(
            "UPDATE webhooks.endpoints SET url = %s WHERE id = %s",
            (f"http://{host}:{sink.port}/hook", endpoint["id"]),
        )
        await client.post(f"{BASE}/{endpoint['id']}/test", headers=c.admin.auth)
        with DELIVERY_DNS.answering(host, [address]):
            [outcome] = await send(sender, {endpoint["id"]})
        assert outcome.outcome == "blocked"
        assert outcome.status == "pending"
        assert sink.bytes_read == 0
        assert sink.received == []
    events = admin_conn.execute(
        "SELECT count(*) FROM audit.events WHERE action = 'security.webhook_blocked'"
        " AND entity_id = %s",
        (endpoint["id"],),
    ).fetchone()
    assert events == (1,)


async def test_a_trusted_name_still_may_not_carry_user_info_at_delivery(
    kit: Kit,
    sender: WebhookSender,
    receiver: Receiver,
) -> None:
    admin_conn = kit.conn
    clinic = kit.clinic
    client = kit.client
    c = clinic()
    endpoint, _ = await register(client, c.admin, receiver.url())
    admin_conn.execute(
        "UPDATE webhooks.endpoints SET url = %s WHERE id = %s",
        (f"http://u:p@{RECEIVER_HOST}:{receiver.port}/hook", endpoint["id"]),
    )
    await client.post(f"{BASE}/{endpoint['id']}/test", headers=c.admin.auth)
    [outcome] = await send(sender, {endpoint["id"]})
    assert outcome.outcome == "blocked"
    assert receiver.received == []


# --- dispatch --------------------------------------------------------------------------------


async def test_dispatch_follows_filters_and_skips_disabled_endpoints(
    app: CoreApp,
    client: httpx.AsyncClient,
    clinic: Callable[..., Clinic],
    admin_conn: Conn,
) -> None:
    c = clinic()
    everything, _ = await register(client, c.admin, "https://all.example.com/")
    patients, _ = await register(
        client, c.admin, "https://p.example.com/", event_types=["patient.created"]
    )
    off, _ = await register(client, c.admin, "https://off.example.com/")
    await client.patch(
        f"{BASE}/{off['id']}",
        headers={**c.admin.auth, "If-Match": "*"},
        json={"status": "disabled"},
    )
    await new_patient(client, c.admin)
    await client.post("/v1/specialties", headers=c.admin.auth, json={"name": "Speech"})
    await dispatch(app)
    rows = admin_conn.execute(
        "SELECT endpoint_id::text, event_type FROM webhooks.deliveries"
        " WHERE organization_id = %s AND event_type NOT LIKE 'webhook%%'",
        (c.org,),
    ).fetchall()
    by_endpoint: dict[str, set[str]] = {}
    for endpoint_id, event_type in rows:
        by_endpoint.setdefault(endpoint_id, set()).add(event_type)
    assert by_endpoint[patients["id"]] == {"patient.created"}
    assert {"patient.created", "specialty.created"} <= by_endpoint[everything["id"]]
    assert off["id"] not in by_endpoint
    # Dispatched once: a second dispatcher finds nothing left.
    assert await EventDispatcher(app.dependencies.database).dispatch_once() == 0


# --- telemetry forward, metrics -------------------------------------------------------------


async def test_events_are_forwarded_to_telemetry_until_accepted(
    app: CoreApp,
    client: httpx.AsyncClient,
    clinic: Callable[..., Clinic],
    receiver: Receiver,
    admin_conn: Conn,
) -> None:
    c = clinic()
    # Everything older is some other test's: mark it forwarded so the batches are ours.
    admin_conn.execute("UPDATE audit.outbox SET forwarded_at = now() WHERE forwarded_at IS NULL")
    made = [await new_patient(client, c.admin) for _ in range(3)]
    forwarder = TelemetryForwarder(
        app.dependencies.database,
        base_url=f"http://127.0.0.1:{receiver.port}",
        token="service-token-for-tests",
        batch=2,
    )
    receiver.script = [Answer(503)]
    receiver.otherwise = Answer(202, body=b'{"accepted": 2, "rejected": []}')
    assert await forwarder.forward_once() == 0  # telemetry down: kept, retried later
    admin_conn.execute("UPDATE audit.outbox SET forward_next_at = now() WHERE forwarded_at IS NULL")
    assert await forwarder.forward_once() == 2
    assert await forwarder.forward_once() == 1
    assert await forwarder.forward_once() == 0
    await forwarder._client.aclose()
    assert all(r.path == "/v1/audit/events" for r in receiver.received)
    assert all(
        r.headers["authorization"] == "Bearer service-token-for-tests" for r in receiver.received
    )
    delivered = [e for r in receiver.received[1:] for e in orjson.loads(r.body)["events"]]
    assert sorted(e["entity_id"] for e in delivered) == sorted(made)
    assert len({e["event_id"] for e in delivered}) == 3
    left = admin_conn.execute(
        "SELECT count(*) FROM audit.outbox WHERE forwarded_at IS NULL"
    ).fetchone()
    assert left == (0,)


async def test_metrics_count_backlog_deliveries_and_endpoint_states(
    app: CoreApp,
    client: httpx.AsyncClient,
    clinic: Callable[..., Clinic],
) -> None:
    c = clinic()
    await register(client, c.admin, "https://m.example.com/")
    await new_patient(client, c.admin)
    async with app.dependencies.database.admin_transaction() as q:
        before = await repo.metrics(q)
    assert before.dispatch_backlog >= 1
    assert before.dispatch_oldest_s is not None
    assert before.endpoints.get("enabled", 0) >= 1
    await dispatch(app)
    async with app.dependencies.database.admin_transaction() as q:
        after = await repo.metrics(q)
    assert after.dispatch_backlog == 0
    assert after.dispatch_oldest_s is None
    assert after.deliveries.get("pending", 0) >= 1


async def test_a_data_key_rotation_reseals_endpoint_secrets(
    kit: Kit, sender: WebhookSender, receiver: Receiver
) -> None:
    """`carebase keys rotate-data` re-seals signing secrets too, so an old key can retire;
    the secret itself (what receivers verify with) does not change."""
    c = kit.clinic()
    endpoint, old = await register(kit.client, c.admin, receiver.url())
    rotated = await kit.client.post(f"{BASE}/{endpoint['id']}/rotate-secret", headers=c.admin.auth)
    new = rotated.json()["secret"]
    sealer = kit.app.dependencies.sealer
    before = sealer.keyring
    newer = before.rotated(before.active.created_at + 1)
    sealer._keyring = newer  # what `keys rotate-data` gives every process
    done = await reseal_all(kit.app.dependencies.database, sealer)
    assert done.webhook_secrets >= 2  # the current secret and the previous one
    row = kit.conn.execute(
        "SELECT secret_sealed, previous_secret_sealed FROM webhooks.endpoints WHERE id = %s",
        (endpoint["id"],),
    ).fetchone()
    assert row is not None
    assert newer.is_current(bytes(row[0]))
    assert newer.is_current(bytes(row[1]))
    await kit.client.post(f"{BASE}/{endpoint['id']}/test", headers=c.admin.auth)
    await send(sender, {endpoint["id"]})
    [got] = receiver.received
    Webhook(new).verify(got.body, got.headers)
    Webhook(old).verify(got.body, got.headers)
