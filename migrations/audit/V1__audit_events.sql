-- The central audit table (issue 13). One row per chained event, keyed by its writer's chain
-- position; `line` is the exact line the writer sealed, so `hash` can be recomputed from it.
CREATE TABLE IF NOT EXISTS audit_events (
    writer     text        NOT NULL,
    seq        bigint      NOT NULL,
    prev       text        NOT NULL,
    hash       text        NOT NULL,
    time       text        NOT NULL,
    event      text        NOT NULL,
    line       text        NOT NULL,
    stored_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (writer, seq)
);

-- Append-only whatever the grants say (an owner or superuser must drop this trigger first, which
-- is itself a DDL change a database audit log shows).
CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP;
END
$$;

CREATE TRIGGER audit_events_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();

CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();
