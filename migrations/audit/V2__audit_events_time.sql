-- The IT console reads the last day's sign-ins, launches and denials from every replica
-- (issue 16); `time` is RFC 3339 UTC text, so text order is time order and a range scan works.
CREATE INDEX IF NOT EXISTS audit_events_time ON audit_events (time);
