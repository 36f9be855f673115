-- Issuing CA renewal: which issuing CA signed a certificate, and which one signed a stored CRL,
-- by the RFC 7638 thumbprint of the CA's key. NULL on certificates issued before the first
-- renewal: they belong to the issuing CA that was current then (a renewal labels them).
-- NULL on CRLs stored before this migration: never reused, made anew. Keep in step with ../postgres.
ALTER TABLE certificates ADD COLUMN issuer_key_id TEXT;
ALTER TABLE crls ADD COLUMN issuer_key_id TEXT;
