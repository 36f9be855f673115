-- The redirect URIs registered for an agent that sends people to GET /oauth/authorize: a JSON
-- array of absolute URIs (NULL: none). Keep in step with ../postgres.
ALTER TABLE agents ADD COLUMN redirect_uris TEXT;
