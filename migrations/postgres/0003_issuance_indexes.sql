-- Token issuer: fewer indexes to update per issuance. Keep in step with ../sqlite.
-- Revoking a user or an agent finds its tokens through its sessions (sessions_user,
-- sessions_agent, then issued_tokens_session), so the issuance log needs no index of its own
-- by user or by agent: each issuance updated two more b-trees, at pages all over the index.
DROP INDEX issued_tokens_user;
DROP INDEX issued_tokens_agent;
-- Refresh tokens issued from now on carry a time-ordered id, and refresh_tokens.digest holds
-- that id, '.', and the token's digest, so new rows go to one end of its index; rows of
-- earlier tokens (the digest alone) are still found.
