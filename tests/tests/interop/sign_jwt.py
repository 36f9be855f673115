#!/usr/bin/env python3
"""Signs one JWT with joserfc, as an independent identity provider would.

Usage: sign_jwt.py KEY_PEM HEADER_JSON CLAIMS_JSON

KEY_PEM is a PKCS#8 PEM private key (P-256); HEADER_JSON must name `alg` (ES256). Prints the
compact JWS and exits 0; exits 2 on bad usage.
"""
import json
import sys

from joserfc import jwt
from joserfc.jwk import ECKey


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1], "rb") as f:
        key = ECKey.import_key(f.read())
    header = json.loads(sys.argv[2])
    claims = json.loads(sys.argv[3])
    print(jwt.encode(header, claims, key, algorithms=[header["alg"]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
