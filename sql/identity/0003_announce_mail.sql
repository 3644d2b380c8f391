-- migrate:up
CREATE TRIGGER email_outbox_announced AFTER INSERT ON identity.email_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION platform.announce_work();

-- migrate:down
DROP TRIGGER email_outbox_announced ON identity.email_outbox;
