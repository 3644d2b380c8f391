"""The data map: every table of every store, what it holds of a data subject, and what a
request does to it. tests/integration/test_gdpr.py fails when a table of any catalogue (core's
and telemetry's PostgreSQL, ClickHouse) is missing here.

Core's entries carry the SQL the GDPR worker runs on the owner connection, always filtered by
the organization, with `%(org)s`, `%(patient)s` (the subject's record), `%(user)s` (their
account) and `%(email)s` (their addresses) bound: `rows` selects the subject's rows for an
export (one JSON object each), `erase` changes them, `remaining` counts what an erase must
leave none of. Telemetry's stores are erased and exported by telemetry itself
(`services/telemetry/subjects.py`), through its authenticated endpoints.
"""

from __future__ import annotations

from dataclasses import dataclass

HEALTH_RECORDS = "Health records, kept by law (national retention rules for medical records)"
ACCOUNTABILITY = "Accountability (GDPR Art. 5(2)): who did what, naming ids, never values"
NO_SUBJECT = "no data of a patient"


@dataclass(frozen=True, slots=True)
class Table:
    store: str
    """`core`, `telemetry` (its PostgreSQL database), `clickhouse` or `blobs`."""
    table: str
    subject: str
    erase: str
    """`delete`, `anonymize`, `retain` (with `basis` and `years`), `ttl` (removed by its own
    retention) or `none` (holds nothing of a subject)."""
    exported: bool
    basis: str | None = None
    years: int | None = None
    rows: str | None = None
    erase_sql: tuple[str, ...] = ()
    remaining: str | None = None


def _none(store: str, table: str, what: str = NO_SUBJECT) -> Table:
    return Table(store, table, what, "none", exported=False)


CORE: tuple[Table, ...] = (
    Table(
        "core",
        "patients.patients",
        "the patient's record: names, e-mail, sealed identifiers, notes, custom values",
        "anonymize",
        exported=True,
        basis=HEALTH_RECORDS,
        years=10,
        rows="SELECT to_jsonb(t) AS row FROM patients.patients t"
        " WHERE organization_id = %(org)s AND id = %(patient)s",
        erase_sql=(
            "UPDATE patients.patients SET given_name = 'Erased', family_name = 'Patient',"
            " email = NULL, birth_date_sealed = NULL, national_id_sealed = NULL,"
            " national_id_index = NULL, phone_sealed = NULL, phone_index = NULL,"
            " address_sealed = NULL, custom_values = '{}', custom_sealed = NULL,"
            " user_id = NULL, birth_year = NULL, region = NULL,"
            " restricted_at = coalesce(restricted_at, now()),"
            " anonymized_at = coalesce(anonymized_at, now()), version = version + 1,"
            " updated_at = now()"
            " WHERE organization_id = %(org)s AND id = %(patient)s"
            " AND (anonymized_at IS NULL OR email IS NOT NULL OR given_name <> 'Erased')",
        ),
        remaining="SELECT count(*) FROM patients.patients WHERE organization_id = %(org)s"
        " AND id = %(patient)s AND (email IS NOT NULL OR phone_sealed IS NOT NULL"
        " OR national_id_sealed IS NOT NULL OR address_sealed IS NOT NULL"
        " OR birth_date_sealed IS NOT NULL OR user_id IS NOT NULL OR anonymized_at IS NULL)",
    ),
    Table(
        "core",
        "identity.users",
        "the account: e-mail, name, password hash (closed when no other organization uses it)",
        "anonymize",
        exported=True,
        rows="SELECT to_jsonb(t) - 'password_hash' AS row FROM identity.users t"
        " WHERE id = %(user)s",
        erase_sql=(
            "UPDATE identity.users SET email = 'erased-' || id || '@erased.invalid',"
            " display_name = '', password_hash = NULL, email_verified_at = NULL,"
            " external_subject = NULL, version = version + 1, updated_at = now()"
            " WHERE id = %(user)s AND email NOT LIKE 'erased-%%' AND NOT EXISTS (SELECT 1 FROM "
            "identity.memberships o WHERE o.user_id = %(user)s AND o.organization_id <> %(org)s)",
        ),
        remaining="SELECT count(*) FROM identity.users WHERE id = %(user)s"
        " AND email NOT LIKE 'erased-%%' AND NOT EXISTS (SELECT 1 FROM identity.memberships o "
        "WHERE o.user_id = %(user)s AND o.organization_id <> %(org)s)",
    ),
    Table(
        "core",
        "identity.memberships",
        "the subject's membership in the organization",
        "delete",
        exported=True,
        rows="SELECT to_jsonb(t) AS row FROM identity.memberships t"
        " WHERE organization_id = %(org)s AND user_id = %(user)s",
        erase_sql=(
            "DELETE FROM identity.memberships WHERE organization_id = %(org)s"
            " AND user_id = %(user)s",
        ),
        remaining="SELECT count(*) FROM identity.memberships WHERE organization_id = %(org)s"
        " AND user_id = %(user)s",
    ),
    Table(
        "core",
        "identity.refresh_tokens",
        "the account's sessions (hashed tokens)",
        "delete",
        exported=False,
        erase_sql=(
            "DELETE FROM identity.refresh_tokens WHERE user_id = %(user)s AND NOT EXISTS (SELECT "
            "1 FROM identity.memberships o WHERE o.user_id = %(user)s AND o.organization_id <> "
            "%(org)s)",
        ),
        remaining="SELECT count(*) FROM identity.refresh_tokens WHERE user_id = %(user)s"
        " AND NOT EXISTS (SELECT 1 FROM identity.memberships o WHERE o.user_id = %(user)s AND "
        "o.organization_id <> %(org)s)",
    ),
    Table(
        "core",
        "identity.action_tokens",
        "mailed links of the account (hashed tokens)",
        "delete",
        exported=False,
        erase_sql=(
            "DELETE FROM identity.action_tokens WHERE user_id = %(user)s AND NOT EXISTS (SELECT "
            "1 FROM identity.memberships o WHERE o.user_id = %(user)s AND o.organization_id <> "
            "%(org)s)",
        ),
        remaining="SELECT count(*) FROM identity.action_tokens WHERE user_id = %(user)s"
        " AND NOT EXISTS (SELECT 1 FROM identity.memberships o WHERE o.user_id = %(user)s AND "
        "o.organization_id <> %(org)s)",
    ),
    Table(
        "core",
        "identity.email_outbox",
        "mail to the subject: address, subject line, text",
        "delete",
        exported=True,
        rows="SELECT to_jsonb(t) AS row FROM identity.email_outbox t"
        " WHERE user_id = %(user)s OR recipient = ANY(%(email)s)",
        erase_sql=(
            "DELETE FROM identity.email_outbox WHERE user_id = %(user)s"
            " OR recipient = ANY(%(email)s)",
        ),
        remaining="SELECT count(*) FROM identity.email_outbox WHERE user_id = %(user)s"
        " OR recipient = ANY(%(email)s)",
    ),
    _none("core", "identity.api_keys", "the organization's keys"),
    _none("core", "platform.organizations", "the organization itself"),
    Table(
        "core",
        "platform.idempotency_keys",
        "stored answers to repeated creates, sealed",
        "ttl",
        exported=False,
        basis="Removed after IDEMPOTENCY_TTL_S (a day by default)",
    ),
    Table(
        "core",
        "audit.events",
        "changes to the subject's records and by their account: ids and field names",
        "retain",
        exported=True,
        basis=ACCOUNTABILITY,
        years=6,
        rows="SELECT to_jsonb(t) AS row FROM audit.events t WHERE organization_id = %(org)s"
        " AND (entity_id = %(patient)s OR entity_id = %(user)s OR actor_user_id = %(user)s)",
        erase_sql=(
            "UPDATE audit.events SET ip = NULL, user_agent = NULL"
            " WHERE organization_id = %(org)s AND actor_user_id = %(user)s"
            " AND (ip IS NOT NULL OR user_agent IS NOT NULL)",
        ),
        remaining="SELECT count(*) FROM audit.events WHERE organization_id = %(org)s"
        " AND actor_user_id = %(user)s AND (ip IS NOT NULL OR user_agent IS NOT NULL)",
    ),
    Table(
        "core",
        "audit.outbox",
        "events on their way to webhooks and telemetry: ids and field names",
        "ttl",
        exported=False,
        basis="Removed by housekeeping once every consumer has them",
    ),
    _none("core", "custom_fields.fields", "the organization's field library"),
    _none("core", "custom_fields.definitions", "the organization's field library"),
    _none("core", "specialists.specialties"),
    _none("core", "specialists.specialists", "the clinic's specialists"),
    _none("core", "specialists.specialist_specialties"),
    Table(
        "core",
        "scheduling.appointments",
        "the patient's appointments: times, statuses, specialists, cancellation reasons",
        "anonymize",
        exported=True,
        basis=HEALTH_RECORDS,
        years=10,
        rows="SELECT to_jsonb(t) AS row FROM scheduling.appointments t"
        " WHERE organization_id = %(org)s AND patient_id = %(patient)s",
        erase_sql=(
            "UPDATE scheduling.appointments SET cancel_reason = NULL, version = version + 1,"
            " updated_at = now() WHERE organization_id = %(org)s AND patient_id = %(patient)s"
            " AND cancel_reason IS NOT NULL",
        ),
        remaining="SELECT count(*) FROM scheduling.appointments WHERE organization_id = %(org)s"
        " AND patient_id = %(patient)s AND cancel_reason IS NOT NULL",
    ),
    Table(
        "core",
        "scheduling.appointment_events",
        "the history of the patient's appointments, with the reasons given",
        "anonymize",
        exported=True,
        basis=HEALTH_RECORDS,
        years=10,
        rows="SELECT to_jsonb(t) AS row FROM scheduling.appointment_events t"
        " WHERE organization_id = %(org)s AND appointment_id IN (SELECT id FROM "
        "scheduling.appointments WHERE organization_id = %(org)s AND patient_id = %(patient)s)",
        erase_sql=(
            "UPDATE scheduling.appointment_events SET reason = NULL"
            " WHERE organization_id = %(org)s AND reason IS NOT NULL"
            " AND appointment_id IN (SELECT id FROM scheduling.appointments WHERE "
            "organization_id = %(org)s AND patient_id = %(patient)s)",
        ),
        remaining="SELECT count(*) FROM scheduling.appointment_events"
        " WHERE organization_id = %(org)s AND reason IS NOT NULL"
        " AND appointment_id IN (SELECT id FROM scheduling.appointments WHERE organization_id = "
        "%(org)s AND patient_id = %(patient)s)",
    ),
    Table(
        "core",
        "scheduling.reminders",
        "reminder mail due for the patient's appointments",
        "delete",
        exported=False,
        erase_sql=(
            "DELETE FROM scheduling.reminders WHERE organization_id = %(org)s"
            " AND sent_at IS NULL AND appointment_id IN (SELECT id FROM scheduling.appointments "
            "WHERE organization_id = %(org)s AND patient_id = %(patient)s)",
        ),
        remaining="SELECT count(*) FROM scheduling.reminders WHERE organization_id = %(org)s"
        " AND sent_at IS NULL AND appointment_id IN (SELECT id FROM scheduling.appointments "
        "WHERE organization_id = %(org)s AND patient_id = %(patient)s)",
    ),
    Table(
        "core",
        "scheduling.video_tasks",
        "video rooms to make or remove (room names only)",
        "ttl",
        exported=False,
        basis="Done tasks are removed by housekeeping",
    ),
    _none("core", "scheduling.schedules", "specialists' working hours"),
    _none("core", "scheduling.date_overrides", "specialists' working hours"),
    _none("core", "scheduling.appointment_templates"),
    _none("core", "scheduling.calendar_feeds", "specialists' calendar subscriptions"),
    Table(
        "core",
        "forms.forms",
        "the patient's forms and answers (sealed ones opened in an export); signed forms are"
        " kept, unsigned ones deleted",
        "retain",
        exported=True,
        basis=HEALTH_RECORDS,
        years=10,
        rows="SELECT to_jsonb(t) AS row FROM forms.forms t"
        " WHERE organization_id = %(org)s AND patient_id = %(patient)s",
        erase_sql=(
            "DELETE FROM forms.forms WHERE organization_id = %(org)s"
            " AND patient_id = %(patient)s AND status <> 'signed'",
        ),
        remaining="SELECT count(*) FROM forms.forms WHERE organization_id = %(org)s"
        " AND patient_id = %(patient)s AND status <> 'signed'",
    ),
    _none("core", "forms.templates", "the clinic's form templates"),
    _none("core", "forms.template_versions", "the clinic's form templates"),
    Table(
        "core",
        "documents.documents",
        "reports and prescriptions of the patient (bodies opened in an export); final ones are"
        " kept, drafts deleted",
        "retain",
        exported=True,
        basis=HEALTH_RECORDS,
        years=10,
        rows="SELECT to_jsonb(t) AS row FROM documents.documents t"
        " WHERE organization_id = %(org)s AND patient_id = %(patient)s",
        erase_sql=(
            "DELETE FROM documents.documents WHERE organization_id = %(org)s"
            " AND patient_id = %(patient)s AND status = 'draft'",
        ),
        remaining="SELECT count(*) FROM documents.documents WHERE organization_id = %(org)s"
        " AND patient_id = %(patient)s AND status = 'draft'",
    ),
    Table(
        "core",
        "attachments.attachments",
        "files on the patient's record, forms and documents (those of final documents kept)",
        "delete",
        exported=True,
        rows="SELECT to_jsonb(t) AS row FROM attachments.attachments t"
        " WHERE organization_id = %(org)s AND patient_id = %(patient)s",
        erase_sql=(
            "DELETE FROM attachments.attachments a WHERE a.organization_id = %(org)s"
            " AND a.patient_id = %(patient)s AND NOT EXISTS (SELECT 1 FROM documents.documents d"
            " WHERE d.organization_id = a.organization_id AND d.id = a.document_id"
            " AND d.status <> 'draft')",
        ),
        remaining="SELECT count(*) FROM attachments.attachments a"
        " WHERE a.organization_id = %(org)s AND a.patient_id = %(patient)s"
        " AND NOT EXISTS (SELECT 1 FROM documents.documents d"
        " WHERE d.organization_id = a.organization_id AND d.id = a.document_id"
        " AND d.status <> 'draft')",
    ),
    Table(
        "core",
        "attachments.blob_deletions",
        "keys of removed files waiting for the blob worker",
        "ttl",
        exported=False,
        basis="Removed once the object is gone",
    ),
    _none("core", "webhooks.endpoints", "the organization's receivers"),
    Table(
        "core",
        "webhooks.deliveries",
        "events sent to the organization's receivers: ids and field names",
        "ttl",
        exported=False,
        basis="Kept for the retry schedule and redelivery, then removed by housekeeping",
    ),
    _none("core", "webhooks.attempts", "outcomes of deliveries"),
    _none("core", "segments.segments", "the clinic's segments and their rules"),
    Table(
        "core",
        "segments.members",
        "the segments the patient belongs to",
        "delete",
        exported=True,
        rows="SELECT to_jsonb(t) AS row FROM segments.members t"
        " WHERE organization_id = %(org)s AND patient_id = %(patient)s",
        erase_sql=(
            "DELETE FROM segments.members WHERE organization_id = %(org)s"
            " AND patient_id = %(patient)s",
        ),
        remaining="SELECT count(*) FROM segments.members WHERE organization_id = %(org)s"
        " AND patient_id = %(patient)s",
    ),
    Table(
        "core",
        "gdpr.requests",
        "the subject's requests and their outcomes",
        "retain",
        exported=False,
        basis="Accountability: proof that a request was received and answered",
        years=6,
    ),
    _none("core", "broadcasts.templates", "the clinic's message templates"),
    _none("core", "broadcasts.campaigns", "campaigns: a template and an audience of segments"),
    Table(
        "core",
        "broadcasts.imports",
        "uploaded recipient files: a name and a hash (the file is deleted once read)",
        "none",
        exported=False,
    ),
    Table(
        "core",
        "broadcasts.import_rows",
        "each imported line's outcome, naming a recipient row by id",
        "none",
        exported=False,
    ),
    Table(
        "core",
        "broadcasts.recipients",
        "the lists the patient (or their addresses) is on",
        "delete",
        exported=True,
        rows="SELECT to_jsonb(t) - 'phone_sealed' - 'phone_index' AS row"
        " FROM broadcasts.recipients t WHERE organization_id = %(org)s"
        " AND (patient_id = %(patient)s OR email = ANY(%(email)s))",
        erase_sql=(
            "DELETE FROM broadcasts.recipients WHERE organization_id = %(org)s"
            " AND (patient_id = %(patient)s OR email = ANY(%(email)s))",
        ),
        remaining="SELECT count(*) FROM broadcasts.recipients WHERE organization_id = %(org)s"
        " AND (patient_id = %(patient)s OR email = ANY(%(email)s))",
    ),
    Table(
        "core",
        "broadcasts.opt_outs",
        "the channels the patient stopped",
        "delete",
        exported=True,
        rows="SELECT to_jsonb(t) - 'address_key' AS row FROM broadcasts.opt_outs t"
        " WHERE organization_id = %(org)s AND patient_id = %(patient)s",
        erase_sql=(
            "DELETE FROM broadcasts.opt_outs WHERE organization_id = %(org)s"
            " AND patient_id = %(patient)s",
        ),
        remaining="SELECT count(*) FROM broadcasts.opt_outs WHERE organization_id = %(org)s"
        " AND patient_id = %(patient)s",
    ),
    Table(
        "core",
        "broadcasts.messages",
        "the broadcasts sent to the patient: campaign, status, times (never a body)",
        "delete",
        exported=True,
        rows="SELECT to_jsonb(t) - 'address_key' AS row FROM broadcasts.messages t"
        " WHERE organization_id = %(org)s AND patient_id = %(patient)s",
        erase_sql=(
            "DELETE FROM broadcasts.messages WHERE organization_id = %(org)s"
            " AND patient_id = %(patient)s",
        ),
        remaining="SELECT count(*) FROM broadcasts.messages WHERE organization_id = %(org)s"
        " AND patient_id = %(patient)s",
    ),
)

TELEMETRY: tuple[Table, ...] = (
    Table(
        "telemetry",
        "events.audit_events",
        "core's audit events as telemetry keeps them: the actor as a keyed hash",
        "retain",
        exported=False,
        basis=ACCOUNTABILITY,
        years=6,
    ),
    Table(
        "telemetry",
        "events.security_events",
        "security events: the actor as a keyed hash, the address truncated",
        "retain",
        exported=False,
        basis="Security of processing (GDPR Art. 32)",
        years=1,
    ),
    Table(
        "telemetry",
        "events.media_sessions",
        "quality summaries of the patient's video sessions",
        "delete",
        exported=True,
    ),
    Table("telemetry", "privacy.consents", "the subject's consent records", "delete", True),
    Table(
        "telemetry",
        "privacy.erasure_tombstones",
        "the erased subject's keyed hash, so that ingest keeps dropping their events",
        "retain",
        exported=False,
        basis="Erasure itself (GDPR Art. 17): without it, new events would be stored",
    ),
    _none("telemetry", "privacy.organization_keys", "each organization's hash key"),
    _none("telemetry", "privacy.organization_settings"),
)

CLICKHOUSE: tuple[Table, ...] = (
    Table(
        "clickhouse",
        "telemetry.analytics_events",
        "the subject's analytics events",
        "delete",
        exported=True,
    ),
    Table(
        "clickhouse",
        "telemetry.audit_events",
        "core's audit events: the actor as a keyed hash",
        "retain",
        exported=False,
        basis=ACCOUNTABILITY,
        years=6,
    ),
    Table(
        "clickhouse",
        "telemetry.pose_frames",
        "pose frames of the patient's sessions",
        "delete",
        exported=True,
    ),
    Table(
        "clickhouse",
        "telemetry.media_events",
        "video-session events sent by the subject",
        "delete",
        exported=True,
    ),
    Table(
        "clickhouse",
        "telemetry.media_samples",
        "bandwidth samples of the subject",
        "delete",
        exported=True,
    ),
    Table(
        "clickhouse",
        "telemetry.media_summaries",
        "quality of the patient's sessions",
        "delete",
        exported=True,
    ),
    Table("clickhouse", "telemetry.session_pose", "per-session pose totals", "delete", True),
    Table(
        "clickhouse",
        "telemetry.daily_staff",
        "staff activity per day (a keyed hash)",
        "delete",
        exported=False,
    ),
    _none("clickhouse", "telemetry.daily_analytics", "daily totals of the organization"),
    _none("clickhouse", "telemetry.daily_pose", "daily totals of the organization"),
)

BLOBS: tuple[Table, ...] = (
    Table("blobs", "attachments", "the patient's files", "delete", exported=True),
    Table(
        "blobs",
        "gdpr-exports",
        "export files made for the subject",
        "ttl",
        exported=False,
        basis="Deleted 7 days after they were made",
    ),
)

DATA_MAP: tuple[Table, ...] = (*CORE, *TELEMETRY, *CLICKHOUSE, *BLOBS)


def tables(store: str) -> list[Table]:
    return [t for t in DATA_MAP if t.store == store]
