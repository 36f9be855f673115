"""Verifies AATs as an independent relying party would: with joserfc, against the authority's
published keys (`GET /v1/jwks`), never with the authority's own code.

An AAT passes when its header `typ` is `aat+jwt`, its `alg` EdDSA or ES256 (taken from the
allowlist, never from the token), its `kid` names a key of the JWKS, the signature verifies
with that key, `iss` is the expected issuer, `aud` contains the expected audience, `exp` lies
in the future (no leeway) and it carries a `jti`. An unknown `kid` refetches the JWKS once.
"""

import base64
import json
import threading
import time
import urllib.request
import warnings

from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

# RFC 9864 deprecates the polymorphic "EdDSA" name in favour of "Ed25519"; AIP (spec 7.4)
# uses "EdDSA", so joserfc's warning about it is expected.
warnings.filterwarnings("ignore", message="EdDSA is deprecated")

ALGORITHMS = ["EdDSA", "ES256"]


class AatRefused(Exception):
    """The token is not a valid AAT for this relying party; the message says why."""


def _header(token: str) -> dict:
    segment = token.split(".")[0]
    try:
        return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except ValueError as e:
        raise AatRefused(f"unreadable header: {e}") from e


def fetch_jwks(url: str) -> KeySet:
    """The key set published at `url`."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return KeySet.import_key_set(json.load(response))


class AatVerifier:
    """Checks AATs of `issuer` for `audience`, with the keys published at `jwks_url`."""

    def __init__(self, jwks_url: str, issuer: str, audience: str):
        self.jwks_url = jwks_url
        self.issuer = issuer
        self.audience = audience
        self._keys: KeySet | None = None
        self._lock = threading.Lock()

    def _key(self, kid: str):
        with self._lock:
            for attempt in range(2):
                if self._keys is None or attempt == 1:
                    self._keys = fetch_jwks(self.jwks_url)
                try:
                    return self._keys.get_by_kid(kid)
                except InvalidKeyIdError:
                    continue
        raise AatRefused(f"no key {kid!r} in {self.jwks_url}")

    def verify(self, token: str) -> dict:
        """The claims of `token`, or `AatRefused`."""
        header = _header(token)
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise AatRefused("the header has no kid")
        if header.get("typ") != "aat+jwt":
            raise AatRefused(f"header typ is {header.get('typ')!r}, not 'aat+jwt'")
        try:
            decoded = jwt.decode(token, self._key(kid), algorithms=ALGORITHMS)
            JWTClaimsRegistry(
                now=int(time.time()),
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": self.audience},
                exp={"essential": True},
                jti={"essential": True},
            ).validate(decoded.claims)
        except (JoseError, ValueError, TypeError) as e:
            raise AatRefused(repr(e)) from e
        return decoded.claims
