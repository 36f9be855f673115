#!/usr/bin/env python3
"""A standard OAuth client, authlib, against the authority's OAuth face: the token endpoint
with `private_key_jwt` client authentication (authlib signs the assertions), introspection
(RFC 7662) and revocation (RFC 7009), and the refresh of a `/v1/token` session.

Usage: authlib_client.py ISSUER AGENT_ID KEY_PEM ALG RESOURCE SCOPE READER_TOKEN REFRESH_TOKEN

KEY_PEM is the agent's key as `aip-ca agents export-key` wrote it; ALG is EdDSA or ES256;
READER_TOKEN a reader access token (introspection); REFRESH_TOKEN a refresh token of a
`/v1/token` session of the same agent. Endpoints come from the authority's metadata
(RFC 8414). Every AAT is verified with joserfc against the published JWKS (`aat_verify.py`).

Steps, each recorded in the JSON object printed on stdout:
  default_lifetime  authlib's PrivateKeyJWT as it comes signs assertions valid for an hour;
                    the authority's refusal of them (its limit is 10 minutes).
  issued            client_credentials with `resource` and `scope`, assertions valid 5
                    minutes: the token response, the AAT's claims, its introspection.
  revoked           RFC 7009 revocation of that AAT by the agent itself (status and body),
                    and its introspection afterwards.
  refreshed         grant_type=refresh_token with REFRESH_TOKEN: the token response, the new
                    AAT's claims and its introspection.
Exits 1 with the error on stderr when an unexpected step fails.
"""

import base64
import json
import sys

from authlib.integrations.requests_client import OAuthError

from aat_verify import AatVerifier

# The snippets between the --8<-- markers are docs/issuer.md's example ("Standard OAuth
# clients"); a test keeps the two the same.
# --8<-- [start:imports]
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign
from joserfc.jwk import ECKey, OKPKey
# --8<-- [end:imports]


# --8<-- [start:auth]
class ShortLivedPrivateKeyJWT(PrivateKeyJWT):
    """authlib's private_key_jwt with assertions valid for 5 minutes: authlib's default is an
    hour, and the authority refuses assertions that expire more than 10 minutes ahead."""

    def sign(self, auth, token_endpoint):
        return private_key_jwt_sign(
            auth.client_secret,
            client_id=auth.client_id,
            token_endpoint=token_endpoint,
            alg=self.alg,
            claims=self.claims,
            header=self.headers,
            expires_in=300,
        )
# --8<-- [end:auth]


class Bearer(requests.auth.AuthBase):
    """`Authorization: Bearer <token>`: how introspection callers authenticate."""

    def __init__(self, token: str):
        self.token = token

    def __call__(self, request):
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


def payload(token: str) -> dict:
    segment = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def main() -> int:
    if len(sys.argv) != 9:
        print(__doc__, file=sys.stderr)
        return 2
    issuer, agent_id, key_pem, alg, resource, scope, reader, refresh_token = sys.argv[1:]
    # --8<-- [start:metadata]
    metadata = requests.get(f"{issuer}/.well-known/oauth-authorization-server", timeout=10).json()
    token_endpoint = metadata["token_endpoint"]
    # --8<-- [end:metadata]
    with open(key_pem, encoding="ascii") as f:
        pem = f.read()
    aats = AatVerifier(metadata["jwks_uri"], metadata["issuer"], resource)
    reader_auth = Bearer(reader)
    out = {}

    def introspect(session, token):
        response = session.introspect_token(metadata["introspection_endpoint"], token=token, auth=reader_auth)
        response.raise_for_status()
        return response.json()

    # --8<-- [start:session]
    key = OKPKey.import_key(pem) if alg == "EdDSA" else ECKey.import_key(pem)
    client_auth = ShortLivedPrivateKeyJWT(token_endpoint, alg=alg)
    session = OAuth2Session(
        client_id=agent_id,
        client_secret=key,
        token_endpoint_auth_method=client_auth,
        revocation_endpoint_auth_method=client_auth,
    )
    token = session.fetch_token(token_endpoint, grant_type="client_credentials", resource=resource, scope=scope)
    # --8<-- [end:session]

    # authlib as it comes: assertions valid for an hour, refused.
    plain = OAuth2Session(
        client_id=agent_id,
        client_secret=key,
        token_endpoint_auth_method=PrivateKeyJWT(token_endpoint, alg=alg),
    )
    try:
        plain.fetch_token(token_endpoint, grant_type="client_credentials", resource=resource, scope=scope)
        out["default_lifetime"] = {"refused": False}
    except OAuthError as e:
        out["default_lifetime"] = {"refused": True, "error": e.error, "error_description": e.description}

    claims = aats.verify(token["access_token"])
    out["issued"] = {
        "response": dict(token),
        "claims": claims,
        "introspection": introspect(session, token["access_token"]),
    }

    # --8<-- [start:revoke]
    revoked = session.revoke_token(
        metadata["revocation_endpoint"], token=token["access_token"], token_type_hint="access_token"
    )
    # --8<-- [end:revoke]
    out["revoked"] = {
        "status": revoked.status_code,
        "body": revoked.text,
        "introspection": introspect(session, token["access_token"]),
    }

    # --8<-- [start:refresh]
    refreshed = session.refresh_token(token_endpoint, refresh_token=refresh_token)
    # --8<-- [end:refresh]
    out["refreshed"] = {
        "response": dict(refreshed),
        "claims": aats.verify(refreshed["access_token"]),
        "introspection": introspect(session, refreshed["access_token"]),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # noqa: BLE001 - any failure is reported to the test
        detail = getattr(e, "description", None)
        print(f"failed: {e!r}" + (f": {detail}" if detail else ""), file=sys.stderr)
        sys.exit(1)
