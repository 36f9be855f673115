-- Token issuer schema (sqlite). Times are Unix seconds. Keep in step with ../postgres.
-- The issuer shares the database with the registry: its audit records go into audit_log and
-- its writes take the registry_state lock like every other writer.

-- Secrets replicas must share (the challenge MAC key), created once.
CREATE TABLE issuer_secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- AAT signing keys. key_file is an encrypted key file (aip_aat::keyfile). The newest key signs;
-- a key stays in the JWKS while any token it signed may be live (last_expiry).
CREATE TABLE issuer_keys (
    kid TEXT PRIMARY KEY,
    algorithm TEXT NOT NULL,
    public_key TEXT NOT NULL,
    key_file TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    retired_at BIGINT,
    last_expiry BIGINT NOT NULL DEFAULT 0
);

-- Users who authorize agents with an API key (stored as a SHA-256 digest).
CREATE TABLE users (
    user_id TEXT PRIMARY KEY,
    key_digest TEXT NOT NULL UNIQUE,
    delegatable_tools TEXT NOT NULL,
    delegation_scope TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Revoked users, whatever their authorization method. Final.
CREATE TABLE user_revocations (
    user_id TEXT PRIMARY KEY,
    revoked_at BIGINT NOT NULL,
    reason TEXT
);

-- Challenges already answered, until they expire anyway.
CREATE TABLE used_challenges (
    challenge_id TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX used_challenges_expiry ON used_challenges (expires_at);

-- A session: the first AAT and every refresh of it.
CREATE TABLE sessions (
    session_id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    user_id TEXT,
    auth_method TEXT,
    auth_time BIGINT,
    delegation_scope TEXT,
    audience TEXT NOT NULL,
    capabilities TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT,
    revoked_reason TEXT
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_agent ON sessions (agent_id);

-- Every refresh token ever handed out; a used one presented again revokes its session.
CREATE TABLE refresh_tokens (
    digest TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

-- The issuance log: what revoking a user, agent or session must cover.
CREATE TABLE issued_tokens (
    jti TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    user_id TEXT,
    session_id TEXT NOT NULL,
    kid TEXT NOT NULL,
    issued_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX issued_tokens_user ON issued_tokens (user_id, expires_at);
CREATE INDEX issued_tokens_agent ON issued_tokens (agent_id, expires_at);
CREATE INDEX issued_tokens_session ON issued_tokens (session_id);
CREATE INDEX issued_tokens_expiry ON issued_tokens (expires_at);
