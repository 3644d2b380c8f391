-- migrate:up
-- A relay claims mail with a lease in a short transaction, sends it outside any transaction,
-- then marks it: a slow SMTP server holds no lock, competing relays never send one claimed
-- mail while its lease holds, and a relay that dies mid-send gives the mail back when the
-- lease runs out (sent again: at least once).
ALTER TABLE identity.email_outbox ADD COLUMN claimed_until timestamptz;

-- migrate:down
ALTER TABLE identity.email_outbox DROP COLUMN claimed_until;
