-- migrate:up
CREATE SCHEMA IF NOT EXISTS custom_fields;
GRANT USAGE ON SCHEMA custom_fields TO carebase_app_access;

-- A field library per organization and entity type. A field's definition is versioned:
-- values are validated against, and remember, the version they were written under, so
-- editing a definition that already has values adds a version instead of changing it.
CREATE TABLE custom_fields.fields (
    organization_id    uuid        NOT NULL REFERENCES platform.organizations (id) ON DELETE CASCADE,
    id                 uuid        NOT NULL DEFAULT gen_random_uuid(),
    entity_type        text        NOT NULL,
    key                text        NOT NULL,
    current_definition integer     NOT NULL DEFAULT 1,
    archived_at        timestamptz,
    version            integer     NOT NULL DEFAULT 1,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id),
    CONSTRAINT fields_key_unique UNIQUE (organization_id, entity_type, key),
    CONSTRAINT fields_entity_type_known CHECK (entity_type IN ('patient', 'specialist')),
    CONSTRAINT fields_key_format CHECK (key ~ '^[a-z][a-z0-9_]{0,62}$')
);

CREATE TABLE custom_fields.definitions (
    organization_id uuid        NOT NULL,
    field_id        uuid        NOT NULL,
    definition      integer     NOT NULL,
    label           text        NOT NULL,
    type            text        NOT NULL,
    required        boolean     NOT NULL DEFAULT false,
    sensitive       boolean     NOT NULL DEFAULT false,
    min_value       numeric,
    max_value       numeric,
    options         text[],
    pattern         text,
    in_use          boolean     NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, field_id, definition),
    FOREIGN KEY (organization_id, field_id)
        REFERENCES custom_fields.fields (organization_id, id) ON DELETE CASCADE,
    CONSTRAINT definitions_type_known
        CHECK (type IN ('text', 'number', 'date', 'boolean', 'select', 'multi_select')),
    CONSTRAINT definitions_label_length CHECK (char_length(label) BETWEEN 1 AND 200),
    CONSTRAINT definitions_options_for_choices
        CHECK ((type IN ('select', 'multi_select')) = (options IS NOT NULL))
);

ALTER TABLE custom_fields.fields ENABLE ROW LEVEL SECURITY;
ALTER TABLE custom_fields.fields FORCE ROW LEVEL SECURITY;
ALTER TABLE custom_fields.definitions ENABLE ROW LEVEL SECURITY;
ALTER TABLE custom_fields.definitions FORCE ROW LEVEL SECURITY;
-- Every member reads the library (patients fill their own profile); admins change it.
CREATE POLICY fields_select ON custom_fields.fields FOR SELECT
    USING (organization_id = platform.current_org_id());
CREATE POLICY fields_write ON custom_fields.fields FOR ALL
    USING (organization_id = platform.current_org_id() AND platform.current_app_role() = 'admin')
    WITH CHECK (organization_id = platform.current_org_id() AND platform.current_app_role() = 'admin');
CREATE POLICY definitions_select ON custom_fields.definitions FOR SELECT
    USING (organization_id = platform.current_org_id());
CREATE POLICY definitions_insert ON custom_fields.definitions FOR INSERT
    WITH CHECK (organization_id = platform.current_org_id() AND platform.current_app_role() = 'admin');
-- Saving a value marks its definition as used, whoever saves it; nothing else changes.
CREATE POLICY definitions_mark_used ON custom_fields.definitions FOR UPDATE
    USING (organization_id = platform.current_org_id())
    WITH CHECK (organization_id = platform.current_org_id());
CREATE POLICY definitions_edit_unused ON custom_fields.definitions FOR DELETE
    USING (organization_id = platform.current_org_id() AND platform.current_app_role() = 'admin');
GRANT SELECT, INSERT, DELETE, UPDATE (current_definition, archived_at, version, updated_at)
    ON custom_fields.fields TO carebase_app_access;
GRANT SELECT, INSERT, DELETE, UPDATE (in_use) ON custom_fields.definitions TO carebase_app_access;

-- migrate:down
DROP TABLE custom_fields.definitions;
DROP TABLE custom_fields.fields;
