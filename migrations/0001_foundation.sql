-- The foundation: identity, tenancy, sessions, API keys, identity providers, audit events,
-- idempotency records and server-wide keys. Constraint names are mapped to 409 answers in code.

CREATE TABLE server_keys (
    name        text PRIMARY KEY,
    value       bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE organizations (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    description text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id              uuid PRIMARY KEY,
    email           text NOT NULL,
    name            text NOT NULL,
    password_hash   text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE memberships (
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role            text NOT NULL CHECK (role IN ('Viewer', 'Operator', 'Editor', 'Admin', 'Owner')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT memberships_pkey PRIMARY KEY (organization_id, user_id)
);
CREATE INDEX memberships_user_idx ON memberships (user_id);

-- A session is one sign-in: the family of every refresh token rotated from it.
CREATE TABLE sessions (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_used_at    timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    revoked_at      timestamptz,
    revoked_reason  text,
    client_ip       text,
    user_agent      text
);
CREATE INDEX sessions_user_live_idx ON sessions (user_id, created_at) WHERE revoked_at IS NULL;
CREATE INDEX sessions_revoked_idx ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;

CREATE TABLE refresh_tokens (
    token_hash  bytea PRIMARY KEY,
    session_id  uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    used_at     timestamptz
);
CREATE INDEX refresh_tokens_session_idx ON refresh_tokens (session_id);

CREATE TABLE api_keys (
    id              uuid PRIMARY KEY,
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name            text NOT NULL,
    prefix          text NOT NULL,
    key_hash        bytea NOT NULL,
    role            text NOT NULL CHECK (role IN ('Viewer', 'Operator', 'Editor', 'Admin', 'Owner')),
    created_by      uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz,
    last_used_at    timestamptz,
    revoked_at      timestamptz,
    CONSTRAINT api_keys_key_hash_key UNIQUE (key_hash),
    CONSTRAINT api_keys_org_name_key UNIQUE (organization_id, name)
);

CREATE TABLE identity_providers (
    id                      uuid PRIMARY KEY,
    organization_id         uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name                    text NOT NULL,
    issuer_url              text NOT NULL,
    client_id               text,
    client_secret_encrypted bytea,
    scopes                  text[] NOT NULL DEFAULT ARRAY['openid', 'email', 'profile'],
    enabled                 boolean NOT NULL DEFAULT true,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT identity_providers_org_name_key UNIQUE (organization_id, name)
);

-- What happened: audit rows for every API action, node and flow events. Read by the events issue.
CREATE TABLE events (
    id                  uuid PRIMARY KEY,
    organization_id     uuid REFERENCES organizations (id) ON DELETE CASCADE,
    occurred_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    level               text NOT NULL CHECK (level IN ('Info', 'Warning', 'Error')),
    source              text NOT NULL CHECK (source IN ('ControlCenter', 'Node', 'Flow')),
    action              text NOT NULL,
    subject             text NOT NULL,
    message             text NOT NULL,
    node_id             uuid,
    flow_definition_id  uuid,
    deployment_id       uuid,
    user_id             uuid,
    api_key_id          uuid,
    client_ip           text,
    data                jsonb
);
CREATE INDEX events_org_time_idx ON events (organization_id, occurred_at DESC, id DESC);

-- Idempotency-Key records: the first answer to a POST, replayed for 24 hours.
CREATE TABLE idempotency_keys (
    principal       text NOT NULL,
    key             text NOT NULL,
    request_hash    bytea NOT NULL,
    status          smallint,
    response_headers jsonb,
    response_body   bytea,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (principal, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
