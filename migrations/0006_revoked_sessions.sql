-- Revocations outlive the sessions they end: deleting an organization deletes its sessions, but a
-- replica (re)loading the revocation list must still refuse their unexpired access tokens.
CREATE TABLE revoked_sessions (
    session_id  uuid PRIMARY KEY,
    revoked_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX revoked_sessions_time_idx ON revoked_sessions (revoked_at);
INSERT INTO revoked_sessions (session_id, revoked_at)
SELECT id, revoked_at FROM sessions WHERE revoked_at IS NOT NULL ON CONFLICT DO NOTHING;
