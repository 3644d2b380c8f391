"""Broadcasts demo data: each demo clinic gets an e-mail and an SMS template, last week's
e-mail campaign to the newsletter pilot (sent: its delivery log filled as the worker fills
it), and a draft SMS campaign to the follow-up segment, ready to send."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

Conn = psycopg.Connection[tuple[Any, ...]]

EXERCISES_SUBJECT = "Your exercises for this week, {{patient.given_name}}"
EXERCISES_BODY = (
    "Hello {{patient.given_name}},\n\n"
    "your exercise plan for this week is in the app: ten minutes a day keeps the progress "
    "you made in your sessions.\n\n"
    "Your next session: {{appointment.next_at}}.\n\n"
    "{{clinic.name}}"
)
CLOSED_BODY = (
    "{{clinic.name}} is closed on Monday. Your booked sessions are unchanged."
    " Message settings: in the app."
)


def seed_broadcasts(conn: Conn, organization_id: uuid.UUID) -> None:
    """Once per clinic (a clinic with templates is left as it is)."""
    found = conn.execute(
        "SELECT 1 FROM broadcasts.templates WHERE organization_id = %s LIMIT 1", (organization_id,)
    ).fetchone()
    if found is not None:
        return
    segments: dict[str, uuid.UUID] = dict(
        conn.execute(
            "SELECT name, id FROM segments.segments WHERE organization_id = %s",
            (organization_id,),
        ).fetchall()
    )
    email, sms = uuid.uuid4(), uuid.uuid4()
    conn.execute(
        "INSERT INTO broadcasts.templates (organization_id, id, name, channel, subject, body)"
        " VALUES (%s, %s, 'Weekly exercises', 'email', %s, %s),"
        " (%s, %s, 'Closed on Monday', 'sms', NULL, %s)",
        (organization_id, email, EXERCISES_SUBJECT, EXERCISES_BODY, organization_id, sms,
         CLOSED_BODY),
    )  # fmt: skip
    sent, draft = uuid.uuid4(), uuid.uuid4()
    pilot, follow_up = segments.get("Newsletter pilot"), segments.get("Follow-up")
    conn.execute(
        "INSERT INTO broadcasts.campaigns (organization_id, id, name, template_id, channel,"
        " segment_ids, status, started_at, expanded_at, finished_at, subject, body, created_at,"
        " updated_at) VALUES (%s, %s, 'Exercises, last week', %s, 'email', %s, 'sent',"
        " now() - interval '7 days', now() - interval '7 days',"
        " now() - interval '7 days' + interval '2 minutes', %s, %s, now() - interval '8 days',"
        " now() - interval '7 days')",
        (organization_id, sent, email, [pilot] if pilot else [], EXERCISES_SUBJECT,
         EXERCISES_BODY),
    )  # fmt: skip
    conn.execute(
        "INSERT INTO broadcasts.campaigns (organization_id, id, name, template_id, channel,"
        " segment_ids) VALUES (%s, %s, 'Closed on Monday', %s, 'sms', %s)",
        (organization_id, draft, sms, [follow_up] if follow_up else []),
    )
    # The sent campaign's log, as the worker leaves it: one message per member's address.
    messages = conn.execute(
        "INSERT INTO broadcasts.messages (organization_id, campaign_id, channel, patient_id,"
        " address_key, status, attempts, provider, provider_message_id, created_at, sent_at,"
        " updated_at, next_attempt_at)"
        " SELECT p.organization_id, %s, 'email', p.id, sha256(convert_to(p.email, 'UTF8')),"
        " 'sent', 1, 'email', '<' || gen_random_uuid() || '@carebase.localhost>',"
        " now() - interval '7 days', now() - interval '7 days' + interval '1 minute',"
        " now() - interval '7 days' + interval '1 minute', now() - interval '7 days'"
        " FROM segments.members m JOIN patients.patients p"
        " ON p.organization_id = m.organization_id AND p.id = m.patient_id"
        " WHERE m.organization_id = %s AND m.segment_id = %s AND p.email IS NOT NULL"
        " AND p.restricted_at IS NULL",
        (sent, organization_id, pilot),
    ).rowcount
    members = conn.execute(
        "SELECT count(*) FROM segments.members WHERE organization_id = %s AND segment_id = %s",
        (organization_id, pilot),
    ).fetchone()
    audience = int(members[0]) if members else 0
    conn.execute(
        "UPDATE broadcasts.campaigns SET audience = %s, excluded_no_address = %s"
        " WHERE organization_id = %s AND id = %s",
        (audience, max(audience - messages, 0), organization_id, sent),
    )
