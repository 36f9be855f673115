-- Registry schema (PostgreSQL). Times are Unix seconds. Keep in step with ../sqlite.

-- One row: serializes writers (every write transaction updates it first) and holds the
-- counters replicas must agree on.
CREATE TABLE registry_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    audit_seq BIGINT NOT NULL,
    audit_head TEXT NOT NULL,
    revocation_version BIGINT NOT NULL,
    crl_number BIGINT NOT NULL
);
INSERT INTO registry_state (id, audit_seq, audit_head, revocation_version, crl_number)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000', 0, 0);

CREATE TABLE agents (
    agent_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT,
    owner TEXT,
    capabilities TEXT NOT NULL,
    autonomous BIGINT NOT NULL CHECK (autonomous IN (0, 1)),
    metadata TEXT,
    status TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'revoked')),
    status_reason TEXT,
    status_changed_at BIGINT,
    created_at BIGINT NOT NULL,
    key_thumbprint TEXT NOT NULL,
    public_key TEXT NOT NULL
);
CREATE INDEX agents_status ON agents (status);

-- Every key an agent ever had; a key is registered once, ever.
CREATE TABLE agent_keys (
    thumbprint TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL REFERENCES agents (agent_id),
    public_key TEXT NOT NULL,
    added_at BIGINT NOT NULL,
    valid_until BIGINT
);
CREATE INDEX agent_keys_agent ON agent_keys (agent_id);

-- An agent's first key is recorded with the agent (uniqueness across all keys ever).
CREATE FUNCTION agents_initial_key() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO agent_keys (thumbprint, agent_id, public_key, added_at, valid_until)
    VALUES (NEW.key_thumbprint, NEW.agent_id, NEW.public_key, NEW.created_at, NULL);
    RETURN NEW;
END
$$;
CREATE TRIGGER agents_initial_key AFTER INSERT ON agents FOR EACH ROW EXECUTE FUNCTION agents_initial_key();

CREATE TABLE certificates (
    serial TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL REFERENCES agents (agent_id),
    key_thumbprint TEXT NOT NULL,
    not_before BIGINT NOT NULL,
    not_after BIGINT NOT NULL,
    der BYTEA NOT NULL,
    revoked_at BIGINT,
    revocation_reason BIGINT,
    superseded_at BIGINT
);
CREATE INDEX certificates_agent ON certificates (agent_id);
CREATE INDEX certificates_revoked ON certificates (not_after) WHERE revoked_at IS NOT NULL OR superseded_at IS NOT NULL;

CREATE TABLE crls (
    crl_number BIGINT PRIMARY KEY,
    revocation_version BIGINT NOT NULL,
    this_update BIGINT NOT NULL,
    next_update BIGINT NOT NULL,
    refresh_at BIGINT NOT NULL,
    der BYTEA NOT NULL
);

-- Revocation events; version = the revocation list version they produced.
CREATE TABLE events (
    version BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    data TEXT NOT NULL
);

CREATE TABLE revoked_tokens (
    jti TEXT PRIMARY KEY,
    revoked_at BIGINT NOT NULL,
    reason TEXT,
    expires_at BIGINT
);
CREATE TABLE revoked_sessions (
    session_id TEXT PRIMARY KEY,
    revoked_at BIGINT NOT NULL,
    reason TEXT,
    expires_at BIGINT
);
CREATE TABLE revoked_users (
    user_id TEXT PRIMARY KEY,
    revoked_at BIGINT NOT NULL,
    reason TEXT
);

-- Bearer tokens for operators and proxies, stored as SHA-256 digests.
CREATE TABLE access_tokens (
    digest TEXT PRIMARY KEY,
    token_id TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('admin', 'reader')),
    label TEXT,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE TABLE registration_tokens (
    digest TEXT PRIMARY KEY,
    token_id TEXT NOT NULL UNIQUE,
    uses_remaining BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Used request-proof ids, until they could no longer be accepted.
CREATE TABLE request_nonces (
    jti TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX request_nonces_expiry ON request_nonces (expires_at);

CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);

-- The chain head in registry_state always names the newest record.
CREATE FUNCTION audit_log_head() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE registry_state SET audit_head = NEW.hash WHERE id = 1;
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_log_head AFTER INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_log_head();
