-- migrate:up
CREATE SCHEMA IF NOT EXISTS identity;
GRANT USAGE ON SCHEMA identity TO carebase_app_access;

-- People, across organizations. A user belongs to tenants through memberships; the app role
-- sees a user only as themself or as a member of the current organization.
-- Authentication (register, login, refresh, reset) runs before any tenant exists and uses
-- the owner pool; the app role never reads password hashes. Sign-in lockout lives in Redis,
-- keyed by the address whether or not it has an account, so it reveals nothing.
CREATE TABLE identity.users (
    id                  uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    email               text        NOT NULL,
    display_name        text        NOT NULL DEFAULT '',
    locale              text        NOT NULL DEFAULT 'en',
    password_hash       text,
    email_verified_at   timestamptz,
    is_superadmin       boolean     NOT NULL DEFAULT false,
    external_subject    text,
    password_changed_at timestamptz,
    last_login_at       timestamptz,
    default_org_id      uuid        REFERENCES platform.organizations (id) ON DELETE SET NULL,
    version             integer     NOT NULL DEFAULT 1,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_email_key UNIQUE (email),
    CONSTRAINT users_external_subject_key UNIQUE (external_subject),
    CONSTRAINT users_email_format CHECK (email = lower(email) AND char_length(email) BETWEEN 3 AND 254),
    CONSTRAINT users_display_name_length CHECK (char_length(display_name) <= 200),
    CONSTRAINT users_locale_format CHECK (locale ~ '^[a-z]{2}(-[A-Z]{2})?$')
);

CREATE TABLE identity.memberships (
    organization_id uuid        NOT NULL REFERENCES platform.organizations (id) ON DELETE CASCADE,
    user_id         uuid        NOT NULL REFERENCES identity.users (id) ON DELETE CASCADE,
    role            text        NOT NULL,
    version         integer     NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, user_id),
    CONSTRAINT memberships_role_known CHECK (role IN ('admin', 'specialist', 'staff', 'patient'))
);
CREATE INDEX memberships_user_idx ON identity.memberships (user_id);

-- A member sees the members of the current organization, and their own memberships
-- everywhere (to list and switch organizations). Only an admin of the current organization
-- changes its memberships, and the database checks that too, not only the API.
ALTER TABLE identity.memberships ENABLE ROW LEVEL SECURITY;
ALTER TABLE identity.memberships FORCE ROW LEVEL SECURITY;
CREATE POLICY memberships_select ON identity.memberships FOR SELECT
    USING (organization_id = platform.current_org_id() OR user_id = platform.current_user_id());
CREATE POLICY memberships_insert ON identity.memberships FOR INSERT
    WITH CHECK (organization_id = platform.current_org_id() AND platform.current_app_role() = 'admin');
CREATE POLICY memberships_update ON identity.memberships FOR UPDATE
    USING (organization_id = platform.current_org_id() AND platform.current_app_role() = 'admin')
    WITH CHECK (organization_id = platform.current_org_id() AND platform.current_app_role() = 'admin');
CREATE POLICY memberships_delete ON identity.memberships FOR DELETE
    USING (organization_id = platform.current_org_id() AND platform.current_app_role() = 'admin');
GRANT SELECT, INSERT, DELETE, UPDATE (role, version, updated_at)
    ON identity.memberships TO carebase_app_access;

ALTER TABLE identity.users ENABLE ROW LEVEL SECURITY;
ALTER TABLE identity.users FORCE ROW LEVEL SECURITY;
CREATE POLICY users_select ON identity.users FOR SELECT
    USING (
        id = platform.current_user_id()
        OR EXISTS (
            SELECT 1 FROM identity.memberships m
            WHERE m.user_id = users.id AND m.organization_id = platform.current_org_id()
        )
    );
CREATE POLICY users_update ON identity.users FOR UPDATE
    USING (id = platform.current_user_id())
    WITH CHECK (id = platform.current_user_id());
-- Column grants: the app role can read and change a profile, never a credential.
GRANT SELECT (id, email, display_name, locale, email_verified_at, is_superadmin,
              default_org_id, version, created_at, updated_at)
    ON identity.users TO carebase_app_access;
GRANT UPDATE (display_name, locale, default_org_id, version, updated_at)
    ON identity.users TO carebase_app_access;

-- A member lists the organizations they belong to (to pick one to act in).
CREATE POLICY organizations_select_member ON platform.organizations FOR SELECT
    USING (EXISTS (
        SELECT 1 FROM identity.memberships m
        WHERE m.organization_id = organizations.id AND m.user_id = platform.current_user_id()
    ));

-- Opaque refresh tokens, stored as SHA-256 hashes. Each login starts a family; every use
-- rotates the token within it. Presenting a token already rotated revokes the family.
CREATE TABLE identity.refresh_tokens (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    family_id       uuid        NOT NULL,
    user_id         uuid        NOT NULL REFERENCES identity.users (id) ON DELETE CASCADE,
    organization_id uuid        REFERENCES platform.organizations (id) ON DELETE SET NULL,
    token_hash      bytea       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    rotated_at      timestamptz,
    revoked_at      timestamptz,
    CONSTRAINT refresh_tokens_hash_key UNIQUE (token_hash)
);
CREATE INDEX refresh_tokens_family_idx ON identity.refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user_idx ON identity.refresh_tokens (user_id);
ALTER TABLE identity.refresh_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE identity.refresh_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY refresh_tokens_own ON identity.refresh_tokens FOR SELECT
    USING (user_id = platform.current_user_id());

-- Single-use links sent by email: verify an address, reset a password, accept an invitation.
CREATE TABLE identity.action_tokens (
    token_hash  bytea       PRIMARY KEY,
    user_id     uuid        NOT NULL REFERENCES identity.users (id) ON DELETE CASCADE,
    purpose     text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    CONSTRAINT action_tokens_purpose_known
        CHECK (purpose IN ('verify_email', 'reset_password', 'invitation'))
);
CREATE INDEX action_tokens_user_idx ON identity.action_tokens (user_id, purpose);
ALTER TABLE identity.action_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE identity.action_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY action_tokens_own ON identity.action_tokens FOR SELECT
    USING (user_id = platform.current_user_id());

-- Organization API keys for server-to-server calls: a public prefix to find the key and a
-- SHA-256 hash of the secret. Authentication looks keys up by prefix on the owner pool.
CREATE TABLE identity.api_keys (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid        NOT NULL REFERENCES platform.organizations (id) ON DELETE CASCADE,
    name            text        NOT NULL,
    prefix          text        NOT NULL,
    secret_hash     bytea       NOT NULL,
    role            text        NOT NULL,
    created_by      uuid        REFERENCES identity.users (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz,
    last_used_at    timestamptz,
    revoked_at      timestamptz,
    CONSTRAINT api_keys_prefix_key UNIQUE (prefix),
    CONSTRAINT api_keys_org_id_key UNIQUE (organization_id, id),
    CONSTRAINT api_keys_name_length CHECK (char_length(name) BETWEEN 1 AND 100),
    CONSTRAINT api_keys_role_known CHECK (role IN ('admin', 'specialist', 'staff'))
);
ALTER TABLE identity.api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE identity.api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY api_keys_select ON identity.api_keys FOR SELECT
    USING (organization_id = platform.current_org_id() AND platform.current_app_role() = 'admin');
CREATE POLICY api_keys_insert ON identity.api_keys FOR INSERT
    WITH CHECK (organization_id = platform.current_org_id() AND platform.current_app_role() = 'admin');
CREATE POLICY api_keys_update ON identity.api_keys FOR UPDATE
    USING (organization_id = platform.current_org_id() AND platform.current_app_role() = 'admin')
    WITH CHECK (organization_id = platform.current_org_id() AND platform.current_app_role() = 'admin');
GRANT SELECT (id, organization_id, name, prefix, role, created_by, created_at, expires_at,
              last_used_at, revoked_at),
      INSERT (organization_id, name, prefix, secret_hash, role, created_by, expires_at),
      UPDATE (revoked_at)
    ON identity.api_keys TO carebase_app_access;

-- Mail waits here until the sender delivers it, so a request never waits on SMTP and a
-- crash loses nothing. Bodies carry single-use links, so they are erased once sent.
CREATE TABLE identity.email_outbox (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         uuid        REFERENCES identity.users (id) ON DELETE CASCADE,
    recipient       text        NOT NULL,
    subject         text        NOT NULL,
    body            text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    last_error      text
);
CREATE INDEX email_outbox_pending_idx ON identity.email_outbox (next_attempt_at)
    WHERE sent_at IS NULL;
ALTER TABLE identity.email_outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE identity.email_outbox FORCE ROW LEVEL SECURITY;
CREATE POLICY email_outbox_own ON identity.email_outbox FOR SELECT
    USING (user_id = platform.current_user_id());

-- The app role sees no user outside the current organization, so finding or creating the
-- account for an address runs as the owner, and only for an admin of the current organization.
CREATE FUNCTION identity.find_or_invite_user(p_email text, p_display_name text)
    RETURNS TABLE (user_id uuid, created boolean)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF platform.current_org_id() IS NULL OR platform.current_app_role() IS DISTINCT FROM 'admin' THEN
        RAISE EXCEPTION 'only an admin of the current organization adds members'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN QUERY
        INSERT INTO identity.users AS u (email, display_name)
        VALUES (lower(p_email), coalesce(p_display_name, ''))
        ON CONFLICT (email) DO NOTHING
        RETURNING u.id, true;
    IF NOT FOUND THEN
        RETURN QUERY SELECT u.id, false FROM identity.users AS u WHERE u.email = lower(p_email);
    END IF;
END
$$;
REVOKE ALL ON FUNCTION identity.find_or_invite_user(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION identity.find_or_invite_user(text, text) TO carebase_app_access;

-- Requests that mail someone (a verification link, an invitation) queue it in the same
-- transaction as the change that causes it.
GRANT INSERT (user_id, recipient, subject, body) ON identity.email_outbox TO carebase_app_access;
CREATE POLICY email_outbox_insert ON identity.email_outbox FOR INSERT
    WITH CHECK (user_id = platform.current_user_id() OR platform.current_app_role() = 'admin');
GRANT INSERT (token_hash, user_id, purpose, expires_at) ON identity.action_tokens
    TO carebase_app_access;
CREATE POLICY action_tokens_insert ON identity.action_tokens FOR INSERT
    WITH CHECK (
        (purpose = 'verify_email' AND user_id = platform.current_user_id())
        OR (purpose = 'invitation' AND platform.current_app_role() = 'admin')
    );

-- migrate:down
DROP FUNCTION identity.find_or_invite_user(text, text);
DROP POLICY organizations_select_member ON platform.organizations;
DROP TABLE identity.email_outbox;
DROP TABLE identity.api_keys;
DROP TABLE identity.action_tokens;
DROP TABLE identity.refresh_tokens;
DROP TABLE identity.memberships;
DROP TABLE identity.users;
