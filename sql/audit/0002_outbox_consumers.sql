-- migrate:up
-- The outbox has two consumers, each with its own progress on the row:
-- * the webhook dispatcher turns an event into one delivery per matching endpoint, in the
--   transaction that claims it (`dispatched_at`): no I/O, so no lease;
-- * the telemetry forwarder posts events to telemetry's audit ingest, claiming rows with a
--   lease (`forward_claimed_until`) and marking them once the ingest accepted them.
-- Each keeps its own backlog; neither is a "highest id sent" watermark (ids commit out of order).
ALTER TABLE audit.outbox RENAME COLUMN attempts TO forward_attempts;
ALTER TABLE audit.outbox RENAME COLUMN next_attempt_at TO forward_next_at;
ALTER TABLE audit.outbox RENAME COLUMN delivered_at TO forwarded_at;
ALTER TABLE audit.outbox ADD COLUMN forward_claimed_until timestamptz;
ALTER TABLE audit.outbox ADD COLUMN dispatched_at timestamptz;
ALTER INDEX audit.outbox_pending_idx RENAME TO outbox_forward_pending_idx;
CREATE INDEX outbox_dispatch_pending_idx ON audit.outbox (id) WHERE dispatched_at IS NULL;

CREATE TRIGGER outbox_announced AFTER INSERT ON audit.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION platform.announce_work();

-- Actions may name a sub-entity: `webhook.delivery.exhausted`.
ALTER TABLE audit.events DROP CONSTRAINT events_action_format;
ALTER TABLE audit.events ADD CONSTRAINT events_action_format
    CHECK (action ~ '^[a-z_]+(\.[a-z_]+)+$');

-- migrate:down
ALTER TABLE audit.events DROP CONSTRAINT events_action_format;
ALTER TABLE audit.events ADD CONSTRAINT events_action_format CHECK (action ~ '^[a-z_]+\.[a-z_]+$');
DROP TRIGGER outbox_announced ON audit.outbox;
DROP INDEX audit.outbox_dispatch_pending_idx;
ALTER INDEX audit.outbox_forward_pending_idx RENAME TO outbox_pending_idx;
ALTER TABLE audit.outbox DROP COLUMN dispatched_at;
ALTER TABLE audit.outbox DROP COLUMN forward_claimed_until;
ALTER TABLE audit.outbox RENAME COLUMN forwarded_at TO delivered_at;
ALTER TABLE audit.outbox RENAME COLUMN forward_next_at TO next_attempt_at;
ALTER TABLE audit.outbox RENAME COLUMN forward_attempts TO attempts;
