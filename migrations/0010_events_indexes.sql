-- Events (DESIGN.md section 9): indexes for the common filters, and a NOTIFY per new event so
-- live streams on every replica hear of it (on commit).
--
-- Every list is scoped by organization and ordered by (occurred_at DESC, id DESC); the foundation
-- has events_org_time_idx for that. These serve the common filters in the same order, so the
-- first page (or the page after a cursor) is an index range read, not a sort.
CREATE INDEX events_org_level_time_idx ON events (organization_id, level, occurred_at DESC, id DESC);
CREATE INDEX events_org_node_time_idx ON events (organization_id, node_id, occurred_at DESC, id DESC)
    WHERE node_id IS NOT NULL;
CREATE INDEX events_org_subject_time_idx ON events (organization_id, subject, occurred_at DESC, id DESC);

-- `contains` on subject (Crosser's `Subject contains "Node: Production5"`) is an ILIKE '%...%':
-- a trigram index answers it when the match is rare. pg_trgm ships with PostgreSQL (contrib) and
-- is a trusted extension; where it cannot be installed the filter still works, by time order.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'pg_trgm is not available (%); subject contains-filters will scan by time', SQLERRM;
END
$$;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        CREATE INDEX events_subject_trgm_idx ON events USING gin (subject gin_trgm_ops);
    END IF;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'no trigram index on events.subject (%)', SQLERRM;
END
$$;

-- Payload `<organizationId>:<eventId>` (73 bytes). Events without an organization (failed
-- sign-ins of unknown emails) are never streamed to a tenant, so they are not announced.
CREATE FUNCTION events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('edgeflow_events', NEW.organization_id::text || ':' || NEW.id::text);
    RETURN NULL;
END
$$;
CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.organization_id IS NOT NULL) EXECUTE FUNCTION events_notify();
