-- Edge nodes, their enrolment keys, presence across replicas, durable per-node jobs and the
-- device shadow.

-- Every running replica, with a heartbeat: a node is online only while the replica holding its
-- socket is alive, so a replica that dies takes its nodes offline within the threshold.
CREATE TABLE replicas (
    id              uuid PRIMARY KEY,
    started_at      timestamptz NOT NULL DEFAULT now(),
    heartbeat_at    timestamptz NOT NULL DEFAULT now(),
    -- The replica promises another heartbeat before this; past it, its nodes count as offline.
    alive_until     timestamptz NOT NULL,
    address         text
);

CREATE TABLE registration_keys (
    id              uuid PRIMARY KEY,
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name            text NOT NULL,
    prefix          text NOT NULL,
    key_hash        bytea NOT NULL,
    node_type       text NOT NULL CHECK (node_type IN ('Production', 'DevAndTest')),
    labels          jsonb NOT NULL DEFAULT '{}',
    max_uses        integer CHECK (max_uses IS NULL OR max_uses > 0),
    uses            integer NOT NULL DEFAULT 0,
    expires_at      timestamptz,
    created_by      uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz,
    CONSTRAINT registration_keys_key_hash_key UNIQUE (key_hash),
    CONSTRAINT registration_keys_org_name_key UNIQUE (organization_id, name)
);

CREATE TABLE edge_nodes (
    id                  uuid PRIMARY KEY,
    organization_id     uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name                text NOT NULL,
    node_type           text NOT NULL CHECK (node_type IN ('Production', 'DevAndTest')),
    labels              jsonb NOT NULL DEFAULT '{}',
    description         text,
    access_key_hash     bytea NOT NULL,
    access_key_prefix   text NOT NULL,
    key_rotated_at      timestamptz,
    registration_key_id uuid REFERENCES registration_keys (id) ON DELETE SET NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    -- Presence, written by the replica holding the node's socket.
    replica_id          uuid,
    tunnel_session_id   uuid,
    connected_at        timestamptz,
    disconnected_at     timestamptz,
    last_seen_at        timestamptz,
    client_ip           text,
    agent_version       text,
    protocol_version    integer,
    -- What the node reports it runs: [{flowDefinitionId, flowId, state, error?}].
    reported_flows      jsonb NOT NULL DEFAULT '[]',
    reported_at         timestamptz,
    metrics             jsonb,
    metrics_at          timestamptz,
    -- The per-node job sequence.
    last_job_seq        bigint NOT NULL DEFAULT 0,
    -- Device shadow.
    shadow_desired      jsonb NOT NULL DEFAULT '{}',
    shadow_version      bigint NOT NULL DEFAULT 0,
    shadow_reported     jsonb NOT NULL DEFAULT '{}',
    shadow_reported_at  timestamptz,
    CONSTRAINT edge_nodes_org_name_key UNIQUE (organization_id, name)
);
CREATE INDEX edge_nodes_org_idx ON edge_nodes (organization_id, name);
CREATE INDEX edge_nodes_replica_idx ON edge_nodes (replica_id) WHERE replica_id IS NOT NULL;
CREATE INDEX edge_nodes_labels_idx ON edge_nodes USING gin (labels);

CREATE TABLE node_jobs (
    id                  uuid PRIMARY KEY,
    organization_id     uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    node_id             uuid NOT NULL REFERENCES edge_nodes (id) ON DELETE CASCADE,
    seq                 bigint NOT NULL,
    command             text NOT NULL CHECK (command IN ('deploy', 'start', 'stop', 'remove')),
    flow_definition_id  uuid,
    deployment_id       uuid,
    -- For deploy: the whole flow version as sent to the node.
    flow                jsonb,
    state               text NOT NULL DEFAULT 'Queued'
                        CHECK (state IN ('Queued', 'Sent', 'InProgress', 'Succeeded', 'Failed', 'TimedOut', 'Canceled', 'Expired')),
    error               text,
    attempts            integer NOT NULL DEFAULT 0,
    created_by          uuid,
    created_at          timestamptz NOT NULL DEFAULT now(),
    sent_at             timestamptz,
    received_at         timestamptz,
    started_at          timestamptz,
    finished_at         timestamptz,
    expires_at          timestamptz NOT NULL,
    CONSTRAINT node_jobs_node_seq_key UNIQUE (node_id, seq)
);
CREATE INDEX node_jobs_pending_idx ON node_jobs (node_id, seq) WHERE state IN ('Queued', 'Sent', 'InProgress');
CREATE INDEX node_jobs_expiry_idx ON node_jobs (expires_at) WHERE state IN ('Queued', 'Sent');
CREATE INDEX node_jobs_deployment_idx ON node_jobs (deployment_id) WHERE deployment_id IS NOT NULL;

-- Answers of synchronous node calls too large for a NOTIFY payload, handed between replicas.
CREATE UNLOGGED TABLE node_call_replies (
    id          uuid PRIMARY KEY,
    body        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX events_node_idx ON events (node_id, occurred_at DESC) WHERE node_id IS NOT NULL;
