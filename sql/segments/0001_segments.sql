-- migrate:up
CREATE SCHEMA IF NOT EXISTS segments;
GRANT USAGE ON SCHEMA segments TO carebase_app_access;

-- A group of patients: `dynamic` by its rules (a react-querybuilder tree, compiled to SQL with
-- every value bound, re-evaluated by the worker), or `static` (members added by hand or
-- imported from another segment). `member_count` is kept with the membership it counts.
CREATE TABLE segments.segments (
    organization_id uuid        NOT NULL REFERENCES platform.organizations (id) ON DELETE CASCADE,
    id              uuid        NOT NULL DEFAULT gen_random_uuid(),
    name            text        NOT NULL,
    description     text        NOT NULL DEFAULT '',
    kind            text        NOT NULL,
    rules           jsonb,
    member_count    integer     NOT NULL DEFAULT 0,
    evaluated_at    timestamptz,
    version         integer     NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id),
    CONSTRAINT segments_kind_known CHECK (kind IN ('dynamic', 'static')),
    CONSTRAINT segments_rules_for_dynamic CHECK ((kind = 'dynamic') = (rules IS NOT NULL)),
    CONSTRAINT segments_name_length CHECK (char_length(name) BETWEEN 1 AND 120),
    CONSTRAINT segments_description_length CHECK (char_length(description) <= 500),
    CONSTRAINT segments_member_count CHECK (member_count >= 0)
);
CREATE INDEX segments_listed_idx ON segments.segments (organization_id, lower(name), id);
-- The worker's scan: dynamic segments evaluated longest ago first.
CREATE INDEX segments_due_idx ON segments.segments (evaluated_at NULLS FIRST)
    WHERE kind = 'dynamic';

CREATE TABLE segments.members (
    organization_id uuid        NOT NULL,
    segment_id      uuid        NOT NULL,
    patient_id      uuid        NOT NULL,
    source          text        NOT NULL,
    added_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, segment_id, patient_id),
    FOREIGN KEY (organization_id, segment_id)
        REFERENCES segments.segments (organization_id, id) ON DELETE CASCADE,
    CONSTRAINT members_patient_fkey FOREIGN KEY (organization_id, patient_id)
        REFERENCES patients.patients (organization_id, id) ON DELETE CASCADE,
    CONSTRAINT members_source_known CHECK (source IN ('rule', 'manual', 'import'))
);
-- A patient's segments, and deleting a patient without scanning every membership.
CREATE INDEX members_patient_idx ON segments.members (organization_id, patient_id);

-- The clinic's staff roles read segments; admins and staff change them. Patients see none.
ALTER TABLE segments.segments ENABLE ROW LEVEL SECURITY;
ALTER TABLE segments.segments FORCE ROW LEVEL SECURITY;
ALTER TABLE segments.members ENABLE ROW LEVEL SECURITY;
ALTER TABLE segments.members FORCE ROW LEVEL SECURITY;
CREATE POLICY segments_select ON segments.segments FOR SELECT
    USING (organization_id = platform.current_org_id()
           AND platform.current_app_role() IN ('admin', 'specialist', 'staff'));
CREATE POLICY segments_write ON segments.segments FOR ALL
    USING (organization_id = platform.current_org_id()
           AND platform.current_app_role() IN ('admin', 'staff'))
    WITH CHECK (organization_id = platform.current_org_id()
                AND platform.current_app_role() IN ('admin', 'staff'));
CREATE POLICY members_select ON segments.members FOR SELECT
    USING (organization_id = platform.current_org_id()
           AND platform.current_app_role() IN ('admin', 'specialist', 'staff'));
CREATE POLICY members_write ON segments.members FOR ALL
    USING (organization_id = platform.current_org_id()
           AND platform.current_app_role() IN ('admin', 'staff'))
    WITH CHECK (organization_id = platform.current_org_id()
                AND platform.current_app_role() IN ('admin', 'staff'));
GRANT SELECT, INSERT, DELETE,
    UPDATE (name, description, rules, member_count, evaluated_at, version, updated_at)
    ON segments.segments TO carebase_app_access;
GRANT SELECT, INSERT, DELETE ON segments.members TO carebase_app_access;

-- migrate:down
DROP TABLE segments.members;
DROP TABLE segments.segments;
