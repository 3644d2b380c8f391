-- migrate:up
-- Each organization has an IANA time zone (the default for its specialists' working hours,
-- checked by the service against the zone database) and how long before an appointment its
-- patients are reminded by mail.
ALTER TABLE platform.organizations
    ADD COLUMN time_zone text NOT NULL DEFAULT 'UTC',
    ADD COLUMN reminder_lead_minutes integer NOT NULL DEFAULT 1440,
    ADD CONSTRAINT organizations_time_zone_length CHECK (char_length(time_zone) BETWEEN 1 AND 64),
    ADD CONSTRAINT organizations_reminder_lead_range
        CHECK (reminder_lead_minutes BETWEEN 0 AND 10080);
GRANT UPDATE (time_zone, reminder_lead_minutes) ON platform.organizations TO carebase_app_access;

-- migrate:down
REVOKE UPDATE (time_zone, reminder_lead_minutes) ON platform.organizations FROM carebase_app_access;
ALTER TABLE platform.organizations
    DROP COLUMN reminder_lead_minutes,
    DROP COLUMN time_zone;
