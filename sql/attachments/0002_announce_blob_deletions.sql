-- migrate:up
CREATE TRIGGER blob_deletions_announced AFTER INSERT ON attachments.blob_deletions
    FOR EACH STATEMENT EXECUTE FUNCTION platform.announce_work();

-- migrate:down
DROP TRIGGER blob_deletions_announced ON attachments.blob_deletions;
