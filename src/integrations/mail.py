"""Outgoing mail: senders (SMTP, and a development mailbox) and the relay that drains the outbox.

Requests only queue mail (`identity.email_outbox`, in their own transaction); the relay
delivers it in the background with retries, so SMTP being slow or down never fails a request
and a crash loses nothing.
"""

from __future__ import annotations

import asyncio
import email.policy
import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Protocol

import structlog

from carebase.persistence import identity
from carebase.persistence.db import Database
from carebase.persistence.work_queue import Rounds

_log = structlog.get_logger("carebase.integrations.mail")

MAX_ATTEMPTS = 8
BATCH = 20
# A claim's lease: a batch of 20 at the default 10 s SMTP timeout fits in it. A mail whose
# lease runs out before it is marked may be sent twice: at least once, never lost.
LEASE_S = 300.0


@dataclass(frozen=True, slots=True)
class Mail:
    recipient: str
    subject: str
    body: str
    html: str | None = None
    """An HTML alternative to `body` (broadcasts), already escaped."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Extra headers; a `Message-ID` here replaces the generated one."""


class MailSender(Protocol):
    async def send(self, mail: Mail) -> None: ...


# RFC 5322's line limit, not the recommended 78: a header longer than 78 characters without a
# space (a List-Unsubscribe URL) would otherwise be sent as RFC 2047 encoded words, which no
# mail client reads as a URL.
_POLICY = email.policy.default.clone(max_line_length=998)


def _message(mail: Mail, sender: str) -> EmailMessage:
    message = EmailMessage(policy=_POLICY)
    message["From"] = sender
    message["To"] = mail.recipient
    message["Subject"] = mail.subject
    if "Message-ID" not in mail.headers:
        message["Message-ID"] = make_msgid(domain="carebase.localhost")
    for name, value in mail.headers.items():
        message[name] = value
    message.set_content(mail.body)
    if mail.html is not None:
        message.add_alternative(mail.html, subtype="html")
    return message


class SmtpSender:
    """Blocking smtplib in a worker thread: one connection per mail, STARTTLS when asked."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = True,
        timeout_s: float = 10.0,
    ) -> None:
        self._host, self._port, self._sender = host, port, sender
        self._username, self._password = username, password
        self._starttls, self._timeout_s = starttls, timeout_s

    async def send(self, mail: Mail) -> None:
        await asyncio.to_thread(self._send, _message(mail, self._sender))

    def _send(self, message: EmailMessage) -> None:
        with smtplib.SMTP(self._host, self._port, timeout=self._timeout_s) as client:
            if self._starttls:
                client.starttls(context=ssl.create_default_context())
            if self._username and self._password:
                client.login(self._username, self._password)
            client.send_message(message)


class MailboxSender:
    """Development: each mail is logged and written to `<DATA_DIR>/mailbox/` as an .eml file."""

    def __init__(self, directory: Path, *, sender: str) -> None:
        self._directory = directory
        self._sender = sender
        self._count = 0

    async def send(self, mail: Mail) -> None:
        self._directory.mkdir(parents=True, exist_ok=True)
        self._count += 1
        message = _message(mail, self._sender)
        safe = "".join(c if c.isalnum() else "_" for c in mail.recipient)
        path = self._directory / f"{asyncio.get_running_loop().time():.6f}-{safe}.eml"
        path.write_bytes(message.as_bytes())
        _log.info(
            "mail_delivered_to_mailbox",
            recipient=mail.recipient,
            subject=mail.subject,
            body=mail.body,
            file=str(path),
        )


class OutboxRelay:
    """Delivers queued mail. Several processes may run one: rows are claimed SKIP LOCKED."""

    def __init__(self, db: Database, sender: MailSender, *, interval_s: float = 1.0) -> None:
        self._db = db
        self._sender = sender
        self.rounds = Rounds("mail_relay", interval_s, _log)
        self.nudge = self.rounds.nudge

    async def run(self) -> None:
        await self.rounds.run(self._drain)

    async def _drain(self) -> None:
        while not self.rounds.stopping and await self.deliver_batch():
            pass

    async def deliver_batch(self) -> int:
        """Send what is due; the number of mails tried (0 when the outbox is drained).

        The claim commits before any mail is sent, and each mail is marked in its own
        transaction after its send: no transaction is open while SMTP is talked to."""
        async with self._db.admin_transaction() as q:
            batch = await identity.claim_mail(
                q, limit=BATCH, max_attempts=MAX_ATTEMPTS, lease_s=LEASE_S
            )
        for row in batch:
            try:
                await self._sender.send(Mail(row.recipient, row.subject, row.body))
            except (OSError, smtplib.SMTPException) as exc:
                delay = min(2 ** (row.attempts + 1) * 5, 3600)
                async with self._db.admin_transaction() as q:
                    await identity.mark_mail_failed(q, row.id, error=repr(exc), delay_s=delay)
                _log.warning("mail_send_failed", mail_id=row.id, retry_in_s=delay, error=repr(exc))
            else:
                async with self._db.admin_transaction() as q:
                    await identity.mark_mail_sent(q, row.id)
        return len(batch)
