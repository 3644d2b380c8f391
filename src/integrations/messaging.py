"""Broadcast messages on their way out: the `MessageSender` protocol and its providers.

- **e-mail** goes through the mail sender every other mail uses (SMTP, or the development
  mailbox), with an HTML part, the RFC 8058 one-click `List-Unsubscribe` headers and a
  Message-ID derived from the message's id;
- **SMS and WhatsApp** go through `HttpMessaging`, a Twilio-shaped REST adapter
  (`POST …/Accounts/{account}/Messages.json`, form-encoded, basic auth), with retries and
  backoff, `Retry-After` honoured on 429, and an `Idempotency-Key` of the message's id, so a
  provider that honours it never sends a retried message twice; or through `OutboxMessaging`,
  which writes each message to `<DATA_DIR>/outbox/` in development.

Delivery receipts come back to `POST /v1/broadcasts/provider-events`, signed by the provider
per Standard Webhooks (HMAC-SHA256 over id, timestamp and the exact body): `verify_receipt`.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import smtplib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from uuid import UUID

import aiohttp
import structlog

from carebase.integrations import webhooks
from carebase.integrations.mail import Mail, MailSender
from carebase.integrations.webhooks import retry_after_s

_log = structlog.get_logger("carebase.integrations.messaging")

RECEIPT_TOLERANCE_S = 300


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    id: UUID
    channel: str
    to: str
    subject: str | None
    text: str
    html: str | None = None
    unsubscribe_url: str | None = None


@dataclass(frozen=True, slots=True)
class Accepted:
    """The provider took the message: its id, for the receipts that follow."""

    provider_message_id: str


class SendFailed(Exception):
    """The provider refused or could not be reached. `permanent`: sending again will not help
    (a bad number, a refused address); otherwise retried later, after `retry_after_s` if the
    provider named it."""

    def __init__(self, reason: str, *, permanent: bool, retry_after_s: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.retry_after_s = retry_after_s


class MessageSender(Protocol):
    name: str
    """Recorded on each message as its `provider`; receipts are matched within it."""

    async def send(self, message: OutgoingMessage) -> Accepted: ...

    async def close(self) -> None: ...


class EmailMessaging:
    """Broadcast e-mail through the platform's mail sender (SMTP or the development mailbox)."""

    name = "email"

    def __init__(self, mail: MailSender, *, domain: str = "carebase.localhost") -> None:
        self._mail = mail
        self._domain = domain

    async def send(self, message: OutgoingMessage) -> Accepted:
        message_id = f"<{message.id}@{self._domain}>"
        headers = {"Message-ID": message_id, "Precedence": "bulk"}
        if message.unsubscribe_url:
            headers["List-Unsubscribe"] = f"<{message.unsubscribe_url}>"
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        mail = Mail(
            message.to, message.subject or "", message.text, html=message.html, headers=headers
        )
        try:
            await self._mail.send(mail)
        except smtplib.SMTPRecipientsRefused as exc:
            raise SendFailed("the recipient's address was refused", permanent=True) from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise SendFailed(f"mail server: {type(exc).__name__}", permanent=False) from exc
        return Accepted(message_id)

    async def close(self) -> None:
        return None


class OutboxMessaging:
    """Development: each SMS or WhatsApp message becomes `<dir>/<message id>.json` (written
    again, not twice, when a message is retried) and a log line."""

    name = "outbox"

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    async def send(self, message: OutgoingMessage) -> Accepted:
        self._directory.mkdir(parents=True, exist_ok=True)
        path = self._directory / f"{message.id}.json"
        document = {"channel": message.channel, "to": message.to, "body": message.text}
        await asyncio.to_thread(path.write_text, json.dumps(document, ensure_ascii=False))
        _log.info("message_written_to_outbox", channel=message.channel, file=str(path))
        return Accepted(f"outbox-{message.id}")

    async def close(self) -> None:
        return None


class HttpMessaging:
    """A Twilio-shaped messaging API. Each call is tried up to `attempts` times: after a
    connection error, a timeout or a 5xx with exponential backoff, after a 429 when its
    `Retry-After` says (when that is longer than `max_wait_s`, the message goes back to the
    queue instead). A 4xx other than 429 is permanent."""

    name = "http"

    def __init__(
        self,
        *,
        base_url: str,
        account_id: str,
        auth_token: str,
        from_sms: str | None,
        from_whatsapp: str | None,
        status_callback: str | None = None,
        timeout_s: float = 10.0,
        attempts: int = 3,
        backoff_s: float = 0.5,
        max_wait_s: float = 5.0,
    ) -> None:
        self._url = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{account_id}/Messages.json"
        self._authorization = (
            "Basic " + base64.b64encode(f"{account_id}:{auth_token}".encode()).decode()
        )
        self._from = {"sms": from_sms, "whatsapp": from_whatsapp}
        self._callback = status_callback
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._attempts, self._backoff_s, self._max_wait_s = attempts, backoff_s, max_wait_s
        self._session: aiohttp.ClientSession | None = None

    async def send(self, message: OutgoingMessage) -> Accepted:
        sender = self._from.get(message.channel)
        if not sender:
            raise SendFailed(f"no sender number for {message.channel}", permanent=True)
        prefix = "whatsapp:" if message.channel == "whatsapp" else ""
        form = {"To": prefix + message.to, "From": prefix + sender, "Body": message.text}
        if self._callback:
            form["StatusCallback"] = self._callback
        failure = SendFailed("not tried", permanent=False)
        for attempt in range(self._attempts):
            try:
                return await self._post(form, str(message.id))
            except SendFailed as exc:
                if exc.permanent:
                    raise
                failure = exc
                wait = exc.retry_after_s or self._backoff_s * 2**attempt
                if wait > self._max_wait_s or attempt + 1 == self._attempts:
                    break
                await asyncio.sleep(wait)
        raise failure

    async def _post(self, form: dict[str, str], key: str) -> Accepted:
        session = self._session
        if session is None or session.closed:
            session = self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with session.post(
                self._url,
                data=form,
                headers={
                    "Authorization": self._authorization,
                    "Idempotency-Key": key,
                    "I-Twilio-Idempotency-Token": key,
                },
                allow_redirects=False,
            ) as reply:
                status = reply.status
                text = await reply.text()
                retry = retry_after_s(reply.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SendFailed(
                f"provider unreachable: {type(exc).__name__}", permanent=False
            ) from exc
        if status in (200, 201):
            try:
                sid = str(json.loads(text)["sid"])
            except (ValueError, KeyError, TypeError) as exc:
                raise SendFailed(
                    "the provider's answer had no message id", permanent=False
                ) from exc
            return Accepted(sid[:200])
        detail = _provider_error(text)
        if status == 429:
            raise SendFailed(f"provider rate limit{detail}", permanent=False, retry_after_s=retry)
        if status >= 500:
            raise SendFailed(f"provider error {status}{detail}", permanent=False)
        raise SendFailed(f"refused by the provider ({status}){detail}", permanent=True)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _provider_error(text: str) -> str:
    """The provider's own code and message, when its error body has them (Twilio's does)."""
    try:
        body = json.loads(text)
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    parts = [str(body[k])[:120] for k in ("code", "message") if body.get(k) is not None]
    return f": {' '.join(parts)}" if parts else ""


class Channels:
    """The sender for each channel."""

    def __init__(self, email: MessageSender, text: MessageSender) -> None:
        self._by_channel = {"email": email, "sms": text, "whatsapp": text}

    def for_channel(self, channel: str) -> MessageSender:
        return self._by_channel[channel]

    async def close(self) -> None:
        for sender in {id(s): s for s in self._by_channel.values()}.values():
            await sender.close()


class ReceiptRefused(Exception):
    """A receipt whose signature is missing, wrong or too old."""


def verify_receipt(
    secret: str | None,
    *,
    webhook_id: str | None,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: float | None = None,
) -> None:
    """Standard Webhooks v1: `v1,<base64 HMAC-SHA256(id.timestamp.body)>`, any of the
    space-separated signatures (a rotation sends two), within five minutes of now."""
    if not secret:
        raise ReceiptRefused("provider receipts are not configured")
    if not (webhook_id and timestamp and signature):
        raise ReceiptRefused("the receipt is not signed")
    try:
        sent = int(timestamp)
    except ValueError:
        raise ReceiptRefused("the receipt's timestamp is not a number") from None
    if abs((time.time() if now is None else now) - sent) > RECEIPT_TOLERANCE_S:
        raise ReceiptRefused("the receipt's timestamp is too far from now")
    # The same scheme Carebase signs its own webhooks with.
    expected = webhooks.signature(webhooks.secret_key(secret), webhook_id, sent, body)
    for candidate in signature.split():
        if hmac.compare_digest(candidate, expected):
            return
    raise ReceiptRefused("the receipt's signature does not match")
