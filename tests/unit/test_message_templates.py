"""The broadcast renderer and the receipt signature, without a database: what a template may
name, how values are substituted and escaped, and which receipts are refused."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from carebase.integrations import mail
from carebase.integrations.messaging import ReceiptRefused, verify_receipt
from carebase.services import message_templates as t

VALUES = {
    "patient.given_name": "Ana",
    "patient.family_name": "Kovač",
    "patient.full_name": "Ana Kovač",
    "clinic.name": "North & Co",
    "appointment.next_at": "2026-12-01 09:00",
    "appointment.next_date": "2026-12-01",
}


@pytest.mark.parametrize(
    ("text", "unknown"),
    [
        ("Hi {{patient.given_name}}", []),
        ("Hi {{ patient.given_name }} at {{clinic.name}}", []),
        ("{{ 7*7 }}", ["7*7"]),
        ("{{patient.age}} {{clinic}}", ["patient.age", "clinic"]),
        ("{{__class__.__mro__}}", ["__class__.__mro__"]),
        ("{% import os %}{# comment #}{{{patient.given_name}}}", []),
        ("{{ config.items() }}", ["config.items()"]),
    ],
)
def test_only_declared_variables_may_be_named(text: str, unknown: list[str]) -> None:
    assert t.unknown_variables("sms", text) == unknown


def test_the_unsubscribe_link_is_an_e_mail_variable_only() -> None:
    assert t.unknown_variables("email", "{{unsubscribe_url}}") == []
    assert t.unknown_variables("sms", "{{unsubscribe_url}}") == ["unsubscribe_url"]


def test_problems_name_the_field_that_holds_them() -> None:
    found = t.problems("sms", "A subject", "x" * 1601 + "{{nope}}")
    assert [(p.pointer, p.code) for p in found] == [
        ("/body/subject", "invalid"),
        ("/body/body", "max_length"),
        ("/body/body", "unknown_variable"),
    ]
    assert [p.pointer for p in t.problems("email", None, "Hello")] == ["/body/subject"]


def test_values_are_substituted_once_and_never_evaluated() -> None:
    values = {**VALUES, "patient.given_name": "{{clinic.name}} {% raw %}"}
    rendered = t.render("sms", None, "{{patient.given_name}}! {{clinic.name}}", values)
    assert rendered.text == "{{clinic.name}} {% raw %}! North & Co"
    assert rendered.subject is None
    assert rendered.html is None


def test_e_mail_html_escapes_the_template_and_the_values() -> None:
    values = {**VALUES, "patient.given_name": '<img src=x onerror="alert(1)">'}
    rendered = t.render(
        "email",
        "Hi {{patient.given_name}}\r\nBcc: someone@example.com",
        "<b>Hello</b> {{patient.given_name}}\n\nSee you {{appointment.next_at}}",
        values,
        unsubscribe_url="https://app.example.com/unsubscribe?token=a&b=<c>",
    )
    assert rendered.subject == 'Hi <img src=x onerror="alert(1)"> Bcc: someone@example.com'
    html = rendered.html or ""
    assert "<b>" not in html
    assert "<img" not in html
    assert "&lt;b&gt;Hello&lt;/b&gt; &lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html
    assert 'href="https://app.example.com/unsubscribe?token=a&amp;b=&lt;c&gt;"' in html
    assert rendered.text.startswith('<b>Hello</b> <img src=x onerror="alert(1)">\n\nSee you')
    assert rendered.text.rstrip().endswith("b=<c>")


SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def _signature(body: bytes, webhook_id: str, timestamp: int, secret: str = SECRET) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def test_a_receipt_signed_with_the_secret_passes_and_any_change_refuses_it() -> None:
    body, now = b'{"provider_message_id":"SM1","status":"delivered"}', 1_800_000_000
    good = _signature(body, "msg_1", now)
    verify_receipt(
        SECRET, webhook_id="msg_1", timestamp=str(now), signature=good, body=body, now=now
    )
    # A rotation sends two signatures; one matching is enough.
    verify_receipt(
        SECRET, webhook_id="msg_1", timestamp=str(now), signature=f"v1,AAAA {good}", body=body,
        now=now,
    )  # fmt: skip
    refused = [
        {"webhook_id": "msg_2", "timestamp": str(now), "signature": good, "body": body},
        {"webhook_id": "msg_1", "timestamp": str(now + 1), "signature": good, "body": body},
        {"webhook_id": "msg_1", "timestamp": str(now), "signature": good, "body": body + b" "},
        {
            "webhook_id": "msg_1",
            "timestamp": str(now),
            "signature": good.replace("v1,", "v2,"),
            "body": body,
        },
        {"webhook_id": "msg_1", "timestamp": "soon", "signature": good, "body": body},
        {"webhook_id": None, "timestamp": str(now), "signature": good, "body": body},
    ]
    for given in refused:
        with pytest.raises(ReceiptRefused):
            verify_receipt(SECRET, now=now, **given)  # type: ignore[arg-type]
    with pytest.raises(ReceiptRefused, match="too far"):
        verify_receipt(
            SECRET, webhook_id="msg_1", timestamp=str(now), signature=good, body=body,
            now=now + 301,
        )  # fmt: skip
    with pytest.raises(ReceiptRefused, match="not configured"):
        verify_receipt(None, webhook_id="msg_1", timestamp=str(now), signature=good, body=body)


def test_a_long_unsubscribe_url_goes_out_as_one_plain_header_line() -> None:
    """Folded at 78 characters, a URL without spaces became RFC 2047 encoded words, which no
    mail client reads as a link (seen in the development mailbox)."""
    url = "http://localhost:9000/v1/broadcasts/unsubscribe/" + "A" * 64
    message = mail._message(
        mail.Mail("ana@example.com", "News", "Hello", html="<p>Hello</p>",
                  headers={"List-Unsubscribe": f"<{url}>", "Message-ID": "<1@x>"}),
        "Clinic <no-reply@example.com>",
    )  # fmt: skip
    raw = message.as_bytes()
    assert f"List-Unsubscribe: <{url}>".encode() in raw
    assert b"Message-ID: <1@x>" in raw
    assert raw.count(b"Message-ID:") == 1
