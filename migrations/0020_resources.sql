-- Resources: versioned files and connection settings used by flows (DESIGN.md section 8).
-- Content lives in the object store; these rows hold its metadata and point at the blob. A blob
-- whose row goes away (delete, replaced draft content, expired upload part, deleted organization)
-- is queued in `resource_blobs_pending` by a trigger, so no deletion path can leave one behind.

CREATE TABLE resources (
    id              uuid PRIMARY KEY,
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name            text NOT NULL,
    resource_type   text NOT NULL CHECK (resource_type IN ('File', 'PythonScript', 'CSharpScript', 'Modbus', 'OPC',
                                                           'SiemensS7', 'Rockwell', 'PiWebApi', 'DataTriggerDefinitions')),
    category        text NOT NULL,
    path            text,
    description     text,
    created_by      uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT resources_org_category_name_key UNIQUE (organization_id, category, name)
);
CREATE INDEX resources_org_name_idx ON resources (organization_id, name);

CREATE TABLE resource_versions (
    id              uuid PRIMARY KEY,
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    resource_id     uuid NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    -- 1, 2, 3 ... within the resource, in creation order.
    version         integer NOT NULL,
    description     text,
    state           text NOT NULL DEFAULT 'Draft' CHECK (state IN ('Draft', 'Completed')),
    -- Declared by the client; the upload must have exactly this many bytes.
    size_in_bytes   bigint NOT NULL CHECK (size_in_bytes >= 0),
    -- The stored content (all NULL / 0 until a successful upload).
    uploaded_bytes  bigint NOT NULL DEFAULT 0,
    sha256          text,
    md5             text,
    content_type    text,
    blob_key        text,
    uploaded_at     timestamptz,
    created_by      uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    CONSTRAINT resource_versions_resource_version_key UNIQUE (resource_id, version),
    CONSTRAINT resource_versions_completed_has_content CHECK (state = 'Draft' OR (blob_key IS NOT NULL AND sha256 IS NOT NULL))
);
CREATE INDEX resource_versions_org_idx ON resource_versions (organization_id);

-- Resumable upload sessions of a draft, and their parts (each part its own blob until the
-- session completes into the version's content).
CREATE TABLE resource_uploads (
    id              uuid PRIMARY KEY,
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    resource_id     uuid NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    version_id      uuid NOT NULL REFERENCES resource_versions (id) ON DELETE CASCADE,
    -- The version's declared size when the session began: reserved against the quota.
    size_in_bytes   bigint NOT NULL,
    part_size       bigint NOT NULL,
    state           text NOT NULL DEFAULT 'Open' CHECK (state IN ('Open', 'Completing')),
    created_by      uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL
);
CREATE INDEX resource_uploads_version_idx ON resource_uploads (version_id);
CREATE INDEX resource_uploads_expiry_idx ON resource_uploads (expires_at);
CREATE INDEX resource_uploads_org_idx ON resource_uploads (organization_id);

CREATE TABLE resource_upload_parts (
    upload_id       uuid NOT NULL REFERENCES resource_uploads (id) ON DELETE CASCADE,
    part_number     integer NOT NULL CHECK (part_number BETWEEN 1 AND 10000),
    size_in_bytes   bigint NOT NULL,
    -- Hex md5 of the part (its ETag, as S3 does it).
    md5             text NOT NULL,
    blob_key        text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT resource_upload_parts_pkey PRIMARY KEY (upload_id, part_number)
);

-- Blobs that may exist in the object store without a row pointing at them:
-- * replica_id set: an upload writing it right now on that replica (reserved_bytes counts
--   against the organization's quota); the row goes in the transaction that makes the blob
--   live. If the replica dies, the blob is an orphan and housekeeping deletes it.
-- * replica_id NULL: garbage (its row was deleted or replaced), deleted after commit or by
--   housekeeping.
CREATE TABLE resource_blobs_pending (
    blob_key        text PRIMARY KEY,
    organization_id uuid,
    replica_id      uuid,
    reserved_bytes  bigint NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX resource_blobs_pending_org_idx ON resource_blobs_pending (organization_id) WHERE replica_id IS NOT NULL;

CREATE FUNCTION resource_blob_released() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.blob_key IS NOT NULL AND (TG_OP = 'DELETE' OR NEW.blob_key IS DISTINCT FROM OLD.blob_key) THEN
        INSERT INTO resource_blobs_pending (blob_key, organization_id, replica_id)
        VALUES (OLD.blob_key, NULL, NULL)
        ON CONFLICT (blob_key) DO UPDATE SET replica_id = NULL, reserved_bytes = 0;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER resource_versions_blob_released AFTER UPDATE OF blob_key OR DELETE ON resource_versions
    FOR EACH ROW EXECUTE FUNCTION resource_blob_released();
CREATE TRIGGER resource_upload_parts_blob_released AFTER UPDATE OF blob_key OR DELETE ON resource_upload_parts
    FOR EACH ROW EXECUTE FUNCTION resource_blob_released();

-- Which flow versions use which resource versions. Filled by the flows issue when a flow
-- version is published (foreign keys to the flow tables come with it); read by
-- `resources::references`, the one place that answers "who uses this resource/version".
-- NO ACTION (checked at the end of the statement) lets an organization's deletion cascade
-- through both sides, while deleting a used resource or version alone fails.
CREATE TABLE flow_version_resources (
    flow_version_id     uuid NOT NULL,
    flow_definition_id  uuid NOT NULL,
    flow_name           text NOT NULL,
    version             integer NOT NULL,
    organization_id     uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    resource_id         uuid NOT NULL REFERENCES resources (id),
    resource_version_id uuid NOT NULL REFERENCES resource_versions (id),
    CONSTRAINT flow_version_resources_pkey PRIMARY KEY (flow_version_id, resource_version_id)
);
CREATE INDEX flow_version_resources_resource_idx ON flow_version_resources (resource_id);
CREATE INDEX flow_version_resources_version_idx ON flow_version_resources (resource_version_id);
