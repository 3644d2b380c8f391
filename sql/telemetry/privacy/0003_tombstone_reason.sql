-- migrate:up
-- Why a subject's events are dropped at ingest: erased (GDPR Art. 17), or restricted (Art.
-- 18: kept, but no longer taken in). Either way ingest drops them.
ALTER TABLE privacy.erasure_tombstones ADD COLUMN reason text NOT NULL DEFAULT 'erase';
ALTER TABLE privacy.erasure_tombstones
    ADD CONSTRAINT erasure_tombstones_reason CHECK (reason IN ('erase', 'restrict'));

-- migrate:down
ALTER TABLE privacy.erasure_tombstones DROP COLUMN reason;
