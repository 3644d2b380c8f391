-- migrate:up
-- The trace context of the request whose event this delivery carries (audit.outbox's), so
-- each attempt's span is a child of that request. A redelivery asked for later keeps it.
ALTER TABLE webhooks.deliveries ADD COLUMN traceparent text;
ALTER TABLE webhooks.deliveries ADD CONSTRAINT deliveries_traceparent_shape CHECK (
    traceparent IS NULL OR traceparent ~ '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$');

-- migrate:down
ALTER TABLE webhooks.deliveries DROP COLUMN traceparent;
