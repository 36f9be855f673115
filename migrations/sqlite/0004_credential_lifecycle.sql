-- Credential lifecycle. Keep in step with ../postgres.
-- Access tokens may expire (NULL: never). Both kinds of token record when they were last
-- used, at most once a minute per token, and registration tokens can be revoked and labelled.
ALTER TABLE access_tokens ADD COLUMN expires_at BIGINT;
ALTER TABLE access_tokens ADD COLUMN last_used_at BIGINT;
ALTER TABLE registration_tokens ADD COLUMN label TEXT;
ALTER TABLE registration_tokens ADD COLUMN last_used_at BIGINT;
ALTER TABLE registration_tokens ADD COLUMN revoked_at BIGINT;
