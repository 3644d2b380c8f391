-- migrate:up
-- What an action did beyond the fields it changed, when that is the record: an export's
-- filters, columns, rows and bytes; a data-subject request's counts per store. Never values
-- of health data. Kept small: it is read back page by page.
ALTER TABLE audit.events ADD COLUMN detail jsonb;
ALTER TABLE audit.events ADD CONSTRAINT events_detail_shape CHECK (
    detail IS NULL OR (jsonb_typeof(detail) = 'object' AND octet_length(detail::text) <= 8192));

-- migrate:down
ALTER TABLE audit.events DROP COLUMN detail;
