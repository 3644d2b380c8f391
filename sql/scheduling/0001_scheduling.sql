-- migrate:up
CREATE SCHEMA IF NOT EXISTS scheduling;
GRANT USAGE ON SCHEMA scheduling TO carebase_app_access;
-- Equality on uuid inside a GiST exclusion constraint (a trusted extension: the owner may add it).
CREATE EXTENSION IF NOT EXISTS btree_gist WITH SCHEMA public;

-- Roles that run the clinic (everyone but a patient).
CREATE FUNCTION scheduling.is_staff() RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT platform.current_app_role() IN ('admin', 'specialist', 'staff') $$;
GRANT EXECUTE ON FUNCTION scheduling.is_staff() TO carebase_app_access;

-- ---------------------------------------------------------------------------------------------
-- Availability: a specialist's weekly working hours in an IANA zone, and date overrides that
-- replace a date's weekly hours (no interval = a day off). Intervals are local wall-clock
-- times; the service expands them into instants with the zone database (DST included).
CREATE TABLE scheduling.schedules (
    organization_id uuid        NOT NULL,
    specialist_id   uuid        NOT NULL,
    time_zone       text        NOT NULL,
    weekly          jsonb       NOT NULL DEFAULT '[]',
    version         integer     NOT NULL DEFAULT 1,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, specialist_id),
    FOREIGN KEY (organization_id, specialist_id)
        REFERENCES specialists.specialists (organization_id, id) ON DELETE CASCADE,
    CONSTRAINT schedules_weekly_is_array CHECK (jsonb_typeof(weekly) = 'array'),
    CONSTRAINT schedules_time_zone_length CHECK (char_length(time_zone) BETWEEN 1 AND 64)
);

CREATE TABLE scheduling.date_overrides (
    organization_id uuid  NOT NULL,
    specialist_id   uuid  NOT NULL,
    on_date         date  NOT NULL,
    intervals       jsonb NOT NULL DEFAULT '[]',
    PRIMARY KEY (organization_id, specialist_id, on_date),
    FOREIGN KEY (organization_id, specialist_id)
        REFERENCES scheduling.schedules (organization_id, specialist_id) ON DELETE CASCADE,
    CONSTRAINT date_overrides_intervals_is_array CHECK (jsonb_typeof(intervals) = 'array')
);

-- ---------------------------------------------------------------------------------------------
-- What a clinic offers. An appointment copies what it needs from its template when it is
-- made, so editing a template never changes appointments already made from it.
CREATE TABLE scheduling.appointment_templates (
    organization_id       uuid        NOT NULL REFERENCES platform.organizations (id) ON DELETE CASCADE,
    id                    uuid        NOT NULL DEFAULT gen_random_uuid(),
    slug                  text        NOT NULL,
    title                 text        NOT NULL,
    description           text        NOT NULL DEFAULT '',
    duration_minutes      integer     NOT NULL,
    buffer_before_minutes integer     NOT NULL DEFAULT 0,
    buffer_after_minutes  integer     NOT NULL DEFAULT 0,
    min_notice_minutes    integer     NOT NULL DEFAULT 0,
    max_advance_days      integer     NOT NULL DEFAULT 90,
    specialty_id          uuid,
    video                 boolean     NOT NULL DEFAULT false,
    requires_confirmation boolean     NOT NULL DEFAULT false,
    form_template_ids     uuid[]      NOT NULL DEFAULT '{}',
    active                boolean     NOT NULL DEFAULT true,
    version               integer     NOT NULL DEFAULT 1,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id),
    CONSTRAINT appointment_templates_slug_key UNIQUE (organization_id, slug),
    CONSTRAINT appointment_templates_specialty_fkey FOREIGN KEY (organization_id, specialty_id)
        REFERENCES specialists.specialties (organization_id, id) ON DELETE SET NULL (specialty_id),
    CONSTRAINT appointment_templates_slug_format
        CHECK (slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$' AND char_length(slug) <= 64),
    CONSTRAINT appointment_templates_title_length CHECK (char_length(title) BETWEEN 1 AND 200),
    CONSTRAINT appointment_templates_description_length CHECK (char_length(description) <= 2000),
    CONSTRAINT appointment_templates_duration_range CHECK (duration_minutes BETWEEN 5 AND 480),
    CONSTRAINT appointment_templates_buffers_range
        CHECK (buffer_before_minutes BETWEEN 0 AND 120 AND buffer_after_minutes BETWEEN 0 AND 120),
    CONSTRAINT appointment_templates_notice_range CHECK (min_notice_minutes BETWEEN 0 AND 43200),
    CONSTRAINT appointment_templates_advance_range CHECK (max_advance_days BETWEEN 1 AND 730),
    CONSTRAINT appointment_templates_forms_count CHECK (cardinality(form_template_ids) <= 20)
);

-- ---------------------------------------------------------------------------------------------
-- Appointments. `blocked` is the time the specialist cannot give anyone else: the appointment
-- and its buffers, [starts_at - before, ends_at + after). It is stored, not generated:
-- timestamptz ± interval is not immutable. The exclusion constraint is the authority on
-- double-booking: of two racing transactions exactly one commits (SQLSTATE 23P01 for the other),
-- whatever the application checked before. It sees rows that row-level security hides, so it
-- keys on the organization and its detail is never shown to a caller.
CREATE TABLE scheduling.appointments (
    organization_id       uuid        NOT NULL,
    id                    uuid        NOT NULL DEFAULT gen_random_uuid(),
    uid                   text        NOT NULL,
    specialist_id         uuid        NOT NULL,
    patient_id            uuid        NOT NULL,
    template_id           uuid,
    specialty_id          uuid,
    title                 text        NOT NULL,
    status                text        NOT NULL,
    starts_at             timestamptz NOT NULL,
    ends_at               timestamptz NOT NULL,
    buffer_before_minutes integer     NOT NULL DEFAULT 0,
    buffer_after_minutes  integer     NOT NULL DEFAULT 0,
    blocked               tstzrange   NOT NULL,
    time_zone             text        NOT NULL,
    requires_confirmation boolean     NOT NULL DEFAULT false,
    hold_expires_at       timestamptz,
    video                 boolean     NOT NULL DEFAULT false,
    video_status          text        NOT NULL DEFAULT 'none',
    video_room            text,
    video_url             text,
    video_expires_at      timestamptz,
    form_template_ids     uuid[]      NOT NULL DEFAULT '{}',
    cancel_reason         text,
    version               integer     NOT NULL DEFAULT 1,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id),
    -- 128 random bits, base32: the public id of the appointment; never changes, not even on
    -- reschedule, and is unique across tenants so the video room named from it is too.
    CONSTRAINT appointments_uid_key UNIQUE (uid),
    CONSTRAINT appointments_specialist_fkey FOREIGN KEY (organization_id, specialist_id)
        REFERENCES specialists.specialists (organization_id, id) ON DELETE RESTRICT,
    CONSTRAINT appointments_patient_fkey FOREIGN KEY (organization_id, patient_id)
        REFERENCES patients.patients (organization_id, id) ON DELETE CASCADE,
    CONSTRAINT appointments_template_fkey FOREIGN KEY (organization_id, template_id)
        REFERENCES scheduling.appointment_templates (organization_id, id)
        ON DELETE SET NULL (template_id),
    CONSTRAINT appointments_specialty_fkey FOREIGN KEY (organization_id, specialty_id)
        REFERENCES specialists.specialties (organization_id, id) ON DELETE SET NULL (specialty_id),
    CONSTRAINT appointments_uid_format CHECK (uid ~ '^[a-z2-7]{26}$'),
    CONSTRAINT appointments_status_known CHECK (status IN (
        'held', 'booked', 'upcoming', 'confirmed', 'in_progress', 'done', 'cancelled', 'no_show',
        'entered_in_error')),
    CONSTRAINT appointments_times CHECK (ends_at > starts_at),
    CONSTRAINT appointments_blocked_covers CHECK (blocked @> tstzrange(starts_at, ends_at)),
    CONSTRAINT appointments_hold CHECK ((status = 'held') = (hold_expires_at IS NOT NULL)),
    CONSTRAINT appointments_title_length CHECK (char_length(title) BETWEEN 1 AND 200),
    CONSTRAINT appointments_video_status_known
        CHECK (video_status IN ('none', 'pending', 'ready', 'failed')),
    CONSTRAINT appointments_cancel_reason_length CHECK (char_length(cancel_reason) <= 500),
    CONSTRAINT appointments_forms_count CHECK (cardinality(form_template_ids) <= 20),
    CONSTRAINT appointments_no_double_booking EXCLUDE USING gist (
        organization_id WITH =, specialist_id WITH =, blocked WITH &&
    ) WHERE (status IN ('held', 'booked', 'upcoming', 'confirmed', 'in_progress'))
);
-- The calendar: a range of starts, per organization or per specialist, read in the order it
-- is shown (starts_at, id) straight from the index, with no sort.
CREATE INDEX appointments_calendar_idx
    ON scheduling.appointments (organization_id, starts_at, id);
CREATE INDEX appointments_specialist_calendar_idx
    ON scheduling.appointments (organization_id, specialist_id, starts_at, id);
CREATE INDEX appointments_patient_idx
    ON scheduling.appointments (organization_id, patient_id, starts_at);

-- A patient sees, books and changes only their own appointments; the clinic sees all of its.
CREATE FUNCTION scheduling.visible_patient(p_organization_id uuid, p_patient_id uuid)
    RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
        SELECT platform.current_app_role() IS DISTINCT FROM 'patient'
            OR EXISTS (SELECT 1 FROM patients.patients p
                        WHERE p.organization_id = p_organization_id AND p.id = p_patient_id
                          AND p.user_id = platform.current_user_id())
    $$;
GRANT EXECUTE ON FUNCTION scheduling.visible_patient(uuid, uuid) TO carebase_app_access;

ALTER TABLE scheduling.appointments ENABLE ROW LEVEL SECURITY;
ALTER TABLE scheduling.appointments FORCE ROW LEVEL SECURITY;
CREATE POLICY appointments_select ON scheduling.appointments FOR SELECT
    USING (organization_id = platform.current_org_id()
           AND scheduling.visible_patient(organization_id, patient_id));
CREATE POLICY appointments_insert ON scheduling.appointments FOR INSERT
    WITH CHECK (organization_id = platform.current_org_id()
                AND scheduling.visible_patient(organization_id, patient_id));
CREATE POLICY appointments_update ON scheduling.appointments FOR UPDATE
    USING (organization_id = platform.current_org_id()
           AND scheduling.visible_patient(organization_id, patient_id))
    WITH CHECK (organization_id = platform.current_org_id()
                AND scheduling.visible_patient(organization_id, patient_id));
CREATE POLICY appointments_delete ON scheduling.appointments FOR DELETE
    USING (organization_id = platform.current_org_id()
           AND scheduling.visible_patient(organization_id, patient_id));
GRANT SELECT, INSERT, UPDATE, DELETE ON scheduling.appointments TO carebase_app_access;

-- Every write that can take a specialist's time (booking, rescheduling) calls this first, in
-- its transaction. It serializes those writes per specialist with a transaction-scoped
-- advisory lock: two transactions that both insert overlapping rows before either checks the
-- exclusion constraint would otherwise wait on each other until PostgreSQL's deadlock detector
-- aborts one (SQLSTATE 40P01, a second later). Behind the lock, the second sees the first's
-- committed row and fails the constraint at once (23P01). Then it deletes the expired holds on
-- the time: a patient booking cannot see other patients' holds, so this runs as the owner, for
-- the caller's organization only.
CREATE FUNCTION scheduling.claim_time(p_specialist_id uuid, p_blocked tstzrange)
    RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    released integer;
BEGIN
    PERFORM pg_advisory_xact_lock(
        hashtextextended('scheduling:' || platform.current_org_id()::text || ':'
                         || p_specialist_id::text, 0));
    DELETE FROM scheduling.appointments a
     WHERE a.organization_id = platform.current_org_id()
       AND a.specialist_id = p_specialist_id
       AND a.status = 'held' AND a.hold_expires_at <= now()
       AND a.blocked && p_blocked;
    GET DIAGNOSTICS released = ROW_COUNT;
    RETURN released;
END
$$;
REVOKE ALL ON FUNCTION scheduling.claim_time(uuid, tstzrange) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION scheduling.claim_time(uuid, tstzrange) TO carebase_app_access;

-- Who did what to an appointment, when: append-only for the app role.
CREATE TABLE scheduling.appointment_events (
    organization_id  uuid        NOT NULL,
    id               uuid        NOT NULL DEFAULT gen_random_uuid(),
    appointment_id   uuid        NOT NULL,
    occurred_at      timestamptz NOT NULL DEFAULT now(),
    kind             text        NOT NULL,
    actor_user_id    uuid,
    actor_api_key_id uuid,
    from_status      text,
    to_status        text,
    old_starts_at    timestamptz,
    old_ends_at      timestamptz,
    new_starts_at    timestamptz,
    new_ends_at      timestamptz,
    reason           text,
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, appointment_id)
        REFERENCES scheduling.appointments (organization_id, id) ON DELETE CASCADE,
    CONSTRAINT appointment_events_kind_known CHECK (kind IN (
        'created', 'status_changed', 'rescheduled', 'cancelled', 'updated', 'forms_attached')),
    CONSTRAINT appointment_events_reason_length CHECK (char_length(reason) <= 500)
);
CREATE INDEX appointment_events_appointment_idx
    ON scheduling.appointment_events (organization_id, appointment_id, occurred_at);
ALTER TABLE scheduling.appointment_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE scheduling.appointment_events FORCE ROW LEVEL SECURITY;
CREATE POLICY appointment_events_select ON scheduling.appointment_events FOR SELECT
    USING (organization_id = platform.current_org_id()
           AND EXISTS (SELECT 1 FROM scheduling.appointments a
                        WHERE a.organization_id = appointment_events.organization_id
                          AND a.id = appointment_events.appointment_id));
CREATE POLICY appointment_events_insert ON scheduling.appointment_events FOR INSERT
    WITH CHECK (organization_id = platform.current_org_id()
                AND EXISTS (SELECT 1 FROM scheduling.appointments a
                             WHERE a.organization_id = appointment_events.organization_id
                               AND a.id = appointment_events.appointment_id));
GRANT SELECT, INSERT ON scheduling.appointment_events TO carebase_app_access;

-- ---------------------------------------------------------------------------------------------
-- Work for the scheduling worker, written in the same transaction as the change that causes
-- it and claimed by the worker on the owner pool (FOR UPDATE SKIP LOCKED, with a lease).
CREATE TABLE scheduling.video_tasks (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id uuid        NOT NULL,
    appointment_id  uuid        NOT NULL,
    action          text        NOT NULL,
    room_name       text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz,
    done_at         timestamptz,
    last_error      text,
    CONSTRAINT video_tasks_action_known CHECK (action IN ('create', 'delete'))
);
CREATE INDEX video_tasks_due_idx ON scheduling.video_tasks (next_attempt_at) WHERE done_at IS NULL;
ALTER TABLE scheduling.video_tasks ENABLE ROW LEVEL SECURITY;
ALTER TABLE scheduling.video_tasks FORCE ROW LEVEL SECURITY;
CREATE POLICY video_tasks_insert ON scheduling.video_tasks FOR INSERT
    WITH CHECK (organization_id = platform.current_org_id());
GRANT INSERT (organization_id, appointment_id, action, room_name) ON scheduling.video_tasks
    TO carebase_app_access;

-- One reminder mail per active appointment, due `reminder_lead_minutes` before its start; the
-- worker turns a due reminder into a mail in identity.email_outbox exactly once.
CREATE TABLE scheduling.reminders (
    organization_id uuid        NOT NULL,
    appointment_id  uuid        NOT NULL,
    due_at          timestamptz NOT NULL,
    sent_at         timestamptz,
    PRIMARY KEY (organization_id, appointment_id),
    FOREIGN KEY (organization_id, appointment_id)
        REFERENCES scheduling.appointments (organization_id, id) ON DELETE CASCADE
);
CREATE INDEX reminders_due_idx ON scheduling.reminders (due_at) WHERE sent_at IS NULL;
ALTER TABLE scheduling.reminders ENABLE ROW LEVEL SECURITY;
ALTER TABLE scheduling.reminders FORCE ROW LEVEL SECURITY;
CREATE POLICY reminders_all ON scheduling.reminders FOR ALL
    USING (organization_id = platform.current_org_id()
           AND EXISTS (SELECT 1 FROM scheduling.appointments a
                        WHERE a.organization_id = reminders.organization_id
                          AND a.id = reminders.appointment_id))
    WITH CHECK (organization_id = platform.current_org_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON scheduling.reminders TO carebase_app_access;

-- ---------------------------------------------------------------------------------------------
-- iCalendar subscriptions: a specialist's calendar at an unguessable URL (the token is stored
-- hashed; revoking it ends the feed). The feed is read by token, as the owner.
CREATE TABLE scheduling.calendar_feeds (
    organization_id       uuid        NOT NULL,
    id                    uuid        NOT NULL DEFAULT gen_random_uuid(),
    specialist_id         uuid        NOT NULL,
    token_hash            bytea       NOT NULL,
    include_patient_names boolean     NOT NULL DEFAULT false,
    created_by            uuid,
    created_at            timestamptz NOT NULL DEFAULT now(),
    revoked_at            timestamptz,
    PRIMARY KEY (organization_id, id),
    CONSTRAINT calendar_feeds_token_key UNIQUE (token_hash),
    FOREIGN KEY (organization_id, specialist_id)
        REFERENCES specialists.specialists (organization_id, id) ON DELETE CASCADE
);

-- Templates, availability and feeds: the organization reads; the clinic's roles change them.
ALTER TABLE scheduling.appointment_templates ENABLE ROW LEVEL SECURITY;
ALTER TABLE scheduling.appointment_templates FORCE ROW LEVEL SECURITY;
CREATE POLICY appointment_templates_select ON scheduling.appointment_templates FOR SELECT
    USING (organization_id = platform.current_org_id());
CREATE POLICY appointment_templates_write ON scheduling.appointment_templates FOR ALL
    USING (organization_id = platform.current_org_id() AND scheduling.is_staff())
    WITH CHECK (organization_id = platform.current_org_id() AND scheduling.is_staff());
GRANT SELECT, INSERT, UPDATE, DELETE ON scheduling.appointment_templates TO carebase_app_access;

ALTER TABLE scheduling.schedules ENABLE ROW LEVEL SECURITY;
ALTER TABLE scheduling.schedules FORCE ROW LEVEL SECURITY;
CREATE POLICY schedules_select ON scheduling.schedules FOR SELECT
    USING (organization_id = platform.current_org_id());
CREATE POLICY schedules_write ON scheduling.schedules FOR ALL
    USING (organization_id = platform.current_org_id() AND scheduling.is_staff())
    WITH CHECK (organization_id = platform.current_org_id() AND scheduling.is_staff());
GRANT SELECT, INSERT, UPDATE, DELETE ON scheduling.schedules TO carebase_app_access;

ALTER TABLE scheduling.date_overrides ENABLE ROW LEVEL SECURITY;
ALTER TABLE scheduling.date_overrides FORCE ROW LEVEL SECURITY;
CREATE POLICY date_overrides_select ON scheduling.date_overrides FOR SELECT
    USING (organization_id = platform.current_org_id());
CREATE POLICY date_overrides_write ON scheduling.date_overrides FOR ALL
    USING (organization_id = platform.current_org_id() AND scheduling.is_staff())
    WITH CHECK (organization_id = platform.current_org_id() AND scheduling.is_staff());
GRANT SELECT, INSERT, UPDATE, DELETE ON scheduling.date_overrides TO carebase_app_access;

ALTER TABLE scheduling.calendar_feeds ENABLE ROW LEVEL SECURITY;
ALTER TABLE scheduling.calendar_feeds FORCE ROW LEVEL SECURITY;
CREATE POLICY calendar_feeds_select ON scheduling.calendar_feeds FOR SELECT
    USING (organization_id = platform.current_org_id() AND scheduling.is_staff());
CREATE POLICY calendar_feeds_write ON scheduling.calendar_feeds FOR ALL
    USING (organization_id = platform.current_org_id() AND scheduling.is_staff())
    WITH CHECK (organization_id = platform.current_org_id() AND scheduling.is_staff());
GRANT SELECT, INSERT, UPDATE ON scheduling.calendar_feeds TO carebase_app_access;

-- migrate:down
DROP TABLE scheduling.calendar_feeds;
DROP TABLE scheduling.reminders;
DROP TABLE scheduling.video_tasks;
DROP TABLE scheduling.appointment_events;
DROP FUNCTION scheduling.claim_time(uuid, tstzrange);
DROP TABLE scheduling.appointments;
DROP FUNCTION scheduling.visible_patient(uuid, uuid);
DROP TABLE scheduling.appointment_templates;
DROP TABLE scheduling.date_overrides;
DROP TABLE scheduling.schedules;
DROP FUNCTION scheduling.is_staff();
