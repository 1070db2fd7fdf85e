-- Deployments: a flow version (or, for DevAndTest nodes, a draft snapshot) rolled out to nodes,
-- with per-target state, and what each node is intended to run (node_flows).

CREATE TABLE deployments (
    id                  uuid PRIMARY KEY,
    organization_id     uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    flow_definition_id  uuid NOT NULL,
    flow_version_id     uuid,
    flow_draft_id       uuid,
    flow_name           text NOT NULL,
    version             integer,
    -- The flow exactly as deployed (protocol DeployFlow): later edits of a draft do not change it.
    flow_payload        jsonb NOT NULL,
    strategy            text NOT NULL CHECK (strategy IN ('allAtOnce', 'rolling')),
    batch_size          integer NOT NULL CHECK (batch_size > 0),
    max_failures        integer NOT NULL CHECK (max_failures >= 0),
    auto_rollback       boolean NOT NULL DEFAULT false,
    target_timeout_seconds integer NOT NULL CHECK (target_timeout_seconds > 0),
    state               text NOT NULL CHECK (state IN ('Scheduled', 'Running', 'Paused', 'Succeeded', 'Failed',
                                                       'Canceled', 'RollingBack', 'RolledBack')),
    current_batch       integer NOT NULL DEFAULT 0,
    error               text,
    scheduled_at        timestamptz,
    started_at          timestamptz,
    finished_at         timestamptz,
    created_by          uuid,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deployments_org_idx ON deployments (organization_id, created_at DESC);
CREATE INDEX deployments_active_idx ON deployments (state, scheduled_at) WHERE state IN ('Scheduled', 'Running', 'RollingBack');
CREATE INDEX deployments_flow_idx ON deployments (flow_definition_id);

CREATE TABLE deployment_targets (
    deployment_id       uuid NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    node_id             uuid NOT NULL REFERENCES edge_nodes (id) ON DELETE CASCADE,
    organization_id     uuid NOT NULL,
    batch               integer NOT NULL,
    state               text NOT NULL CHECK (state IN ('Pending', 'InProgress', 'Succeeded', 'Failed', 'TimedOut',
                                                       'Canceled', 'RollingBack', 'RolledBack', 'RollbackFailed')),
    job_id              uuid,
    rollback_job_id     uuid,
    -- What the node was intended to run before (a node_flows payload), null when nothing: the
    -- rollback restores it, or removes the flow.
    previous_payload    jsonb,
    previous_version_id uuid,
    previous_draft_id   uuid,
    error               text,
    started_at          timestamptz,
    finished_at         timestamptz,
    CONSTRAINT deployment_targets_pkey PRIMARY KEY (deployment_id, node_id)
);
CREATE INDEX deployment_targets_node_idx ON deployment_targets (node_id);
CREATE INDEX deployment_targets_job_idx ON deployment_targets (job_id) WHERE job_id IS NOT NULL;

-- What each node should run, per flow definition (at most one version per definition).
CREATE TABLE node_flows (
    node_id             uuid NOT NULL REFERENCES edge_nodes (id) ON DELETE CASCADE,
    flow_definition_id  uuid NOT NULL,
    organization_id     uuid NOT NULL,
    flow_version_id     uuid,
    flow_draft_id       uuid,
    version             integer,
    payload             jsonb NOT NULL,
    desired_state       text NOT NULL CHECK (desired_state IN ('running', 'stopped')),
    deployment_id       uuid,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT node_flows_pkey PRIMARY KEY (node_id, flow_definition_id)
);
CREATE INDEX node_flows_flow_idx ON node_flows (flow_definition_id);
