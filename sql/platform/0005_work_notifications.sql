-- migrate:up
-- Work queues announce new rows on the `carebase_work` channel (the payload names the queue's
-- table), so a worker that LISTENs starts at once instead of at its next poll. Statement-level
-- and sent at commit: one notification per inserting transaction, never for a rolled-back one.
CREATE FUNCTION platform.announce_work() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('carebase_work', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME);
    RETURN NULL;
END
$$;

-- migrate:down
DROP FUNCTION platform.announce_work();
