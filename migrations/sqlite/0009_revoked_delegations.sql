-- Blocks of delegable AATs revoked by their revocation id (lowercase hex): every token that
-- carries one is refused. Listed until expires_at, past which no token carrying the block can
-- be unexpired. Keep in step with ../postgres.
CREATE TABLE revoked_delegations (
    revocation_id TEXT PRIMARY KEY,
    revoked_at BIGINT NOT NULL,
    reason TEXT,
    expires_at BIGINT
);
