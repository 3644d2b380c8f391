-- migrate:up
-- The W3C trace context of the request that wrote the event, so the relays' spans (a webhook
-- delivery, a telemetry forward) join that request's trace. Null outside a traced request.
ALTER TABLE audit.outbox ADD COLUMN traceparent text;
ALTER TABLE audit.outbox ADD CONSTRAINT outbox_traceparent_shape CHECK (
    traceparent IS NULL OR traceparent ~ '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$');
GRANT INSERT (traceparent) ON audit.outbox TO carebase_app_access;

-- migrate:down
ALTER TABLE audit.outbox DROP COLUMN traceparent;
