"""The webhook parts that need no server: signatures (checked by the reference library), the
retry schedule, Retry-After, event bodies, pinned URLs, and trusted hosts in the guard."""

from __future__ import annotations

import datetime as dt
import email.utils
import ipaddress
import json
import time

import pytest
from standardwebhooks.webhooks import Webhook

from carebase.integrations.webhooks import (
    new_secret,
    pinned_url,
    retry_after_s,
    secret_key,
    signature,
    signed_headers,
)
from carebase.security.egress import Destination, EgressPolicy, EgressRefused
from carebase.services.webhook_delivery import (
    MAX_BODY_BYTES,
    RETRY_SCHEDULE_S,
    event_body,
    forward_backoff_s,
    retry_delay_s,
)

PAYLOAD = {
    "event_id": "2f1e0d9c-8b7a-4695-a4b3-c2d1e0f9a8b7",
    "occurred_at": "2026-11-30T09:00:00.123456+00:00",
    "organization_id": "0b7d2c4e-8f1a-4c3b-9d5e-6f7a8b9c0d1e",
    "actor_user_id": "7c6b5a49-3827-4d16-a5f4-e3d2c1b0a998",
    "actor_api_key_id": None,
    "impersonator_id": None,
    "action": "patient.updated",
    "entity_type": "patient",
    "entity_id": "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
    "changed_fields": ["family_name", "phone"],
    "request_id": "abc",
}


def test_our_signature_is_the_reference_librarys() -> None:
    secret = new_secret()
    body = event_body(PAYLOAD)
    now = int(time.time())
    ours = signature(secret_key(secret), "msg_1", now, body)
    assert ours == Webhook(secret).sign("msg_1", _when(now), body.decode())


def test_two_keys_sign_twice_and_each_verifies() -> None:
    old, new = new_secret(), new_secret()
    body = event_body(PAYLOAD)
    headers = signed_headers([secret_key(new), secret_key(old)], "msg_2", body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        assert Webhook(secret).verify(body, headers)["type"] == "patient.updated"


def test_secrets_are_32_random_bytes() -> None:
    secrets = {new_secret() for _ in range(50)}
    assert len(secrets) == 50
    assert all(len(secret_key(s)) == 32 for s in secrets)


def test_the_schedule_and_its_jitter() -> None:
    assert [retry_delay_s(step, rand=lambda: 0.5) for step in range(7)] == list(RETRY_SCHEDULE_S)
    assert RETRY_SCHEDULE_S == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert retry_delay_s(0, rand=lambda: 0.0) == pytest.approx(4.0)
    assert retry_delay_s(0, rand=lambda: 1.0) == pytest.approx(6.0)
    assert retry_delay_s(7) is None  # the eighth attempt was the last
    assert retry_delay_s(1, 30.0) == 30.0  # Retry-After shortens
    assert retry_delay_s(0, 600.0) == 600.0  # and lengthens
    assert retry_delay_s(0, 10**9) == max(RETRY_SCHEDULE_S)  # within the longest wait
    assert retry_delay_s(0, 0.0) == 1.0
    assert retry_delay_s(7, 5.0) is None  # but never beyond the last attempt


def test_retry_after_in_seconds_or_as_a_date() -> None:
    now = time.time()
    assert retry_after_s("120") == 120.0
    later = email.utils.formatdate(now + 90, usegmt=True)
    assert retry_after_s(later, now=now) == pytest.approx(90, abs=1)
    assert retry_after_s("soon") is None
    assert retry_after_s(None) is None
    assert retry_after_s(email.utils.formatdate(now - 60, usegmt=True), now=now) == 0.0


def test_a_body_names_ids_and_fields_never_values() -> None:
    body = json.loads(event_body(PAYLOAD))
    assert body == {
        "type": "patient.updated",
        "timestamp": "2026-11-30T09:00:00.123456Z",
        "data": {
            "organization_id": PAYLOAD["organization_id"],
            "entity_type": "patient",
            "entity_id": PAYLOAD["entity_id"],
            "changed_fields": ["family_name", "phone"],
            "actor": {"type": "user", "id": PAYLOAD["actor_user_id"]},
        },
    }
    system = json.loads(event_body({**PAYLOAD, "actor_user_id": None}))
    assert system["data"]["actor"] == {"type": "system", "id": None}


def test_a_body_stays_within_64_kb() -> None:
    huge = {**PAYLOAD, "changed_fields": [f"field_{i:05d}" for i in range(10_000)]}
    body = event_body(huge)
    assert len(body) <= MAX_BODY_BYTES
    assert json.loads(body)["data"]["changed_fields_truncated"] is True


def test_the_pinned_url_keeps_path_query_and_port() -> None:
    v4 = ipaddress.ip_address("93.184.215.14")
    v6 = ipaddress.ip_address("2606:2800:220:1::1")
    destination = Destination(
        "https://hooks.example.com:8443/in?x=1", "https", "hooks.example.com", 8443, (v4,)
    )
    assert pinned_url(destination, v4) == "https://93.184.215.14:8443/in?x=1"
    assert pinned_url(destination, v6) == "https://[2606:2800:220:1::1]:8443/in?x=1"


def test_forward_backoff_grows_and_is_capped() -> None:
    mid = [forward_backoff_s(n, rand=lambda: 0.5) for n in (1, 2, 3, 20)]
    assert mid == [1.0, 2.0, 4.0, 300.0]


async def _private(host: str, port: int) -> list[str]:
    return ["10.0.0.5"]


async def test_a_trusted_host_may_be_private_on_any_port_but_not_carry_user_info() -> None:
    policy = EgressPolicy(
        allow_http=True, trusted_hosts=frozenset({"hooks.internal"}), resolver=_private
    )
    found = await policy.check("http://hooks.internal:9999/in")
    assert [str(a) for a in found.addresses] == ["10.0.0.5"]
    with pytest.raises(EgressRefused):
        await policy.check("http://other.internal/in")
    with pytest.raises(EgressRefused):
        await policy.check("http://u:p@hooks.internal/in")
    with pytest.raises(EgressRefused):
        await EgressPolicy(trusted_hosts=frozenset({"hooks.internal"}), resolver=_private).check(
            "http://hooks.internal/in"
        )  # http only where allowed


def _when(epoch: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, tz=dt.UTC)
