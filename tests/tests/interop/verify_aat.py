#!/usr/bin/env python3
"""Verifies one AAT the way an independent relying party would, with joserfc.

Usage: verify_aat.py JWKS_FILE TOKEN AUDIENCE

JWKS_FILE is a saved `GET /v1/jwks`. The AAT must be signed (EdDSA or ES256 only) by the
key its header `kid` names, which must be in JWKS_FILE; its header `typ` must be `aat+jwt`;
its claims must carry `iss`, an `aud` that contains AUDIENCE, and an `exp` in the future
(no leeway). On success prints `verified <jti>` and exits 0; otherwise prints the reason
and exits 1 (2 on bad usage).
"""
import base64
import json
import sys
import time
import warnings

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

# RFC 9864 deprecates the polymorphic "EdDSA" name in favour of "Ed25519"; AIP (spec 7.4)
# and this implementation use "EdDSA", so joserfc's warning about it is expected.
warnings.filterwarnings("ignore", message="EdDSA is deprecated")

ALGORITHMS = ["EdDSA", "ES256"]


def header_of(token: str) -> dict:
    segment = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def verify(jwks_file: str, token: str, audience: str) -> str:
    with open(jwks_file, encoding="utf-8") as f:
        keys = KeySet.import_key_set(json.load(f))
    kid = header_of(token).get("kid")
    if not isinstance(kid, str):
        raise ValueError("the header has no kid")
    # Only the key the header names; get_by_kid raises if the JWKS does not hold it.
    key = keys.get_by_kid(kid)
    decoded = jwt.decode(token, key, algorithms=ALGORITHMS)
    if decoded.header.get("typ") != "aat+jwt":
        raise ValueError(f"header typ is {decoded.header.get('typ')!r}, not 'aat+jwt'")
    JWTClaimsRegistry(
        now=int(time.time()),
        iss={"essential": True},
        aud={"essential": True, "value": audience},
        exp={"essential": True},
        jti={"essential": True},
    ).validate(decoded.claims)
    return decoded.claims["jti"]


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        jti = verify(*sys.argv[1:])
    except (JoseError, ValueError, KeyError, TypeError) as e:
        print(f"rejected: {e!r}")
        return 1
    print(f"verified {jti}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
