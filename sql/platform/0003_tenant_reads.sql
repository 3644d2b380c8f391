-- migrate:up
-- One-statement tenant reads (Database.reader): the tenant settings and the read travel as
-- ONE prepared statement in autocommit, one round trip instead of BEGIN/settings, SELECT and
-- COMMIT:
--
--   SELECT r.* FROM platform.enter_tenant($org, $user, $role) AS t(entered)
--   CROSS JOIN LATERAL (SELECT * FROM (<the read>) AS q WHERE t.entered OFFSET 0) AS r
--
-- The read is a LATERAL subquery that refers to t and is fenced by OFFSET 0, so it runs after
-- enter_tenant() has returned (a nested loop with the function scan outside; checked with
-- custom and generic plans). The settings are transaction-local to the statement's own implicit
-- transaction and die with it, and transaction_read_only makes it a read-only transaction.
-- SECURITY INVOKER: the read still runs as the app role, under every row-level policy.
-- (No SET clause: it would cost a GUC save/restore per call; names are schema-qualified.)
CREATE FUNCTION platform.enter_tenant(org text, usr text, rol text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    AS $$
BEGIN
    PERFORM pg_catalog.set_config('transaction_read_only', 'on', true),
            pg_catalog.set_config('app.current_org_id', org, true),
            pg_catalog.set_config('app.current_user_id', usr, true),
            pg_catalog.set_config('app.current_role', rol, true);
    RETURN true;
END
$$;
REVOKE ALL ON FUNCTION platform.enter_tenant(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION platform.enter_tenant(text, text, text) TO carebase_app_access;

-- migrate:down
DROP FUNCTION platform.enter_tenant(text, text, text);
