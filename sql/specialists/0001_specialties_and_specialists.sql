-- migrate:up
CREATE SCHEMA IF NOT EXISTS specialists;
GRANT USAGE ON SCHEMA specialists TO carebase_app_access;

CREATE TABLE specialists.specialties (
    organization_id uuid        NOT NULL REFERENCES platform.organizations (id) ON DELETE CASCADE,
    id              uuid        NOT NULL DEFAULT gen_random_uuid(),
    name            text        NOT NULL,
    description     text        NOT NULL DEFAULT '',
    version         integer     NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id),
    CONSTRAINT specialties_name_length CHECK (char_length(name) BETWEEN 1 AND 120),
    CONSTRAINT specialties_description_length CHECK (char_length(description) <= 2000)
);
CREATE UNIQUE INDEX specialties_name_key ON specialists.specialties (organization_id, lower(name));

-- A specialist is a member of the organization with a professional profile. Keys are
-- composite with organization_id, so no row can point into another tenant (GROUND.md).
CREATE TABLE specialists.specialists (
    organization_id uuid        NOT NULL,
    id              uuid        NOT NULL DEFAULT gen_random_uuid(),
    user_id         uuid        NOT NULL,
    display_name    text        NOT NULL,
    title           text        NOT NULL DEFAULT '',
    bio             text        NOT NULL DEFAULT '',
    accepting_patients boolean  NOT NULL DEFAULT true,
    custom_values   jsonb       NOT NULL DEFAULT '{}',
    custom_sealed   bytea,
    version         integer     NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id),
    CONSTRAINT specialists_user_key UNIQUE (organization_id, user_id),
    CONSTRAINT specialists_member_fkey FOREIGN KEY (organization_id, user_id)
        REFERENCES identity.memberships (organization_id, user_id) ON DELETE CASCADE,
    CONSTRAINT specialists_display_name_length CHECK (char_length(display_name) BETWEEN 1 AND 200),
    CONSTRAINT specialists_title_length CHECK (char_length(title) <= 120),
    CONSTRAINT specialists_bio_length CHECK (char_length(bio) <= 4000)
);
CREATE INDEX specialists_name_idx ON specialists.specialists (organization_id, lower(display_name), id);

CREATE TABLE specialists.specialist_specialties (
    organization_id uuid NOT NULL,
    specialist_id   uuid NOT NULL,
    specialty_id    uuid NOT NULL,
    PRIMARY KEY (organization_id, specialist_id, specialty_id),
    FOREIGN KEY (organization_id, specialist_id)
        REFERENCES specialists.specialists (organization_id, id) ON DELETE CASCADE,
    CONSTRAINT specialist_specialties_specialty_fkey FOREIGN KEY (organization_id, specialty_id)
        REFERENCES specialists.specialties (organization_id, id) ON DELETE RESTRICT
);
CREATE INDEX specialist_specialties_specialty_idx
    ON specialists.specialist_specialties (organization_id, specialty_id);

-- Every member reads specialties and specialists; admins change them.
ALTER TABLE specialists.specialties ENABLE ROW LEVEL SECURITY;
ALTER TABLE specialists.specialties FORCE ROW LEVEL SECURITY;
ALTER TABLE specialists.specialists ENABLE ROW LEVEL SECURITY;
ALTER TABLE specialists.specialists FORCE ROW LEVEL SECURITY;
ALTER TABLE specialists.specialist_specialties ENABLE ROW LEVEL SECURITY;
ALTER TABLE specialists.specialist_specialties FORCE ROW LEVEL SECURITY;
CREATE POLICY specialties_select ON specialists.specialties FOR SELECT
    USING (organization_id = platform.current_org_id());
CREATE POLICY specialties_write ON specialists.specialties FOR ALL
    USING (organization_id = platform.current_org_id() AND platform.current_app_role() = 'admin')
    WITH CHECK (organization_id = platform.current_org_id() AND platform.current_app_role() = 'admin');
CREATE POLICY specialists_select ON specialists.specialists FOR SELECT
    USING (organization_id = platform.current_org_id());
CREATE POLICY specialists_write ON specialists.specialists FOR ALL
    USING (organization_id = platform.current_org_id() AND platform.current_app_role() = 'admin')
    WITH CHECK (organization_id = platform.current_org_id() AND platform.current_app_role() = 'admin');
CREATE POLICY specialist_specialties_select ON specialists.specialist_specialties FOR SELECT
    USING (organization_id = platform.current_org_id());
CREATE POLICY specialist_specialties_write ON specialists.specialist_specialties FOR ALL
    USING (organization_id = platform.current_org_id() AND platform.current_app_role() = 'admin')
    WITH CHECK (organization_id = platform.current_org_id() AND platform.current_app_role() = 'admin');
GRANT SELECT, INSERT, DELETE, UPDATE (name, description, version, updated_at)
    ON specialists.specialties TO carebase_app_access;
GRANT SELECT, INSERT, DELETE,
    UPDATE (display_name, title, bio, accepting_patients, custom_values, custom_sealed, version, updated_at)
    ON specialists.specialists TO carebase_app_access;
GRANT SELECT, INSERT, DELETE ON specialists.specialist_specialties TO carebase_app_access;

-- migrate:down
DROP TABLE specialists.specialist_specialties;
DROP TABLE specialists.specialists;
DROP TABLE specialists.specialties;
