-- migrate:up
-- Holds are few and short-lived: the scheduling worker finds the expired ones here and
-- deletes them, so an abandoned checkout stops blocking the specialist's calendar.
CREATE INDEX appointments_holds_idx
    ON scheduling.appointments (hold_expires_at) WHERE status = 'held';

-- migrate:down
DROP INDEX scheduling.appointments_holds_idx;
