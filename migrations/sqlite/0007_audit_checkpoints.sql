-- Signed checkpoints of the audit chain. Keep in step with ../postgres.
-- Each row is a compact JWS signed by the registry key stating that record `seq` of
-- audit_log has hash `head` (aip_aat::checkpoint); `at` and `kid` repeat what it signs,
-- for reading without parsing it. Written in the audited write that reaches the checkpoint
-- interval, and when the authority stops.
CREATE TABLE audit_checkpoints (
    seq BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    kid TEXT NOT NULL,
    jws TEXT NOT NULL
);
