-- Flow definitions, their editable drafts and their immutable versions (DESIGN.md section 7).
-- A definition is the container Crosser calls a "flowdefinition"; a version is what Crosser calls
-- a "flow". Constraint names are mapped to 409 answers in code.

CREATE TABLE flow_definitions (
    id              uuid PRIMARY KEY,
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name            text NOT NULL,
    description     text,
    -- The number of the newest version (0 before the first publish). Publishing locks this row
    -- and takes latest_version + 1, so concurrent publishes get distinct numbers.
    latest_version  integer NOT NULL DEFAULT 0 CHECK (latest_version >= 0),
    created_by      uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT flow_definitions_org_name_key UNIQUE (organization_id, name)
);

CREATE TABLE flow_versions (
    id                  uuid PRIMARY KEY,
    organization_id     uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    flow_definition_id  uuid NOT NULL REFERENCES flow_definitions (id) ON DELETE CASCADE,
    version             integer NOT NULL CHECK (version > 0),
    -- The name of the draft it was published from.
    name                text NOT NULL,
    description         text,
    content             jsonb NOT NULL,
    -- Hex sha256 of the canonical JSON of content (keys sorted, no spaces).
    content_hash        text NOT NULL,
    -- The draft it was published from (which may since have been deleted).
    published_from_draft_id uuid,
    created_by          uuid,
    created_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT flow_versions_definition_version_key UNIQUE (flow_definition_id, version)
);
CREATE INDEX flow_versions_org_idx ON flow_versions (organization_id);

-- Versions never change: the API has no route that writes one, and the database refuses too.
CREATE FUNCTION flow_versions_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'flow versions are immutable' USING ERRCODE = 'restrict_violation';
END
$$;
CREATE TRIGGER flow_versions_no_update BEFORE UPDATE ON flow_versions
    FOR EACH ROW EXECUTE FUNCTION flow_versions_immutable();

CREATE TABLE flow_drafts (
    id                  uuid PRIMARY KEY,
    organization_id     uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    flow_definition_id  uuid NOT NULL REFERENCES flow_definitions (id) ON DELETE CASCADE,
    name                text NOT NULL,
    content             jsonb NOT NULL,
    content_hash        text NOT NULL,
    -- Bumped by every change; also the ETag (If-Match with a stale value is a 412).
    revision            bigint NOT NULL DEFAULT 1 CHECK (revision > 0),
    -- The version it was copied from, if any.
    based_on_flow_id    uuid REFERENCES flow_versions (id) ON DELETE SET NULL,
    created_by          uuid,
    updated_by          uuid,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX flow_drafts_definition_idx ON flow_drafts (flow_definition_id, created_at);
CREATE INDEX flow_drafts_org_idx ON flow_drafts (organization_id);

-- flow_version_resources (made with the resources, 0020) names flow versions: tie it to them, so
-- deleting a definition (and its versions) removes their rows.
ALTER TABLE flow_version_resources
    ADD CONSTRAINT flow_version_resources_flow_version_fkey
        FOREIGN KEY (flow_version_id) REFERENCES flow_versions (id) ON DELETE CASCADE,
    ADD CONSTRAINT flow_version_resources_flow_definition_fkey
        FOREIGN KEY (flow_definition_id) REFERENCES flow_definitions (id) ON DELETE CASCADE;
CREATE INDEX flow_version_resources_flow_definition_idx ON flow_version_resources (flow_definition_id);
