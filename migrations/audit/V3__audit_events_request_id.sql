-- Correlation (issue 13): an auditor joins a launch, the customer change it made and the
-- webhook echoing that change by `request_id` (docs/audit.md, "The join"). Without an index every
-- join probe reads the whole table. The expression is exactly the one the documented query uses;
-- every sealed line is a JSON object (the writer makes them), so the cast cannot fail an insert.
CREATE INDEX IF NOT EXISTS audit_events_request_id ON audit_events (((line::jsonb) ->> 'request_id'));
