#!/usr/bin/env python3
"""Checks the committed test vectors with an independent JOSE implementation (joserfc).

Usage: check_vectors.py VECTOR_DIR

* aat.json: every `valid` AAT verifies with its JWKS (signature, `typ`, time window with
  30 s of leeway at the vector's `now`, audience, issuer); every `signature_invalid` AAT is
  refused by joserfc as well; every JWKS `kid` is the key's RFC 7638 thumbprint.
* proof.json: every `valid` proof verifies under the JWK embedded in its header, that JWK's
  thumbprint is the AAT's `cnf.jkt`, and `ath` / `args_hash` are recomputed independently.
  Bad-signature proofs are refused.
* revocations.json: every signed revocation list that must verify does (its JWKS `kid` being
  the key's thumbprint, `typ` aip-revocations+jwt), and its payload carries `issued_at` and
  `expires_at` (RFC 3339): for `valid`, issued_at <= now < expires_at and the payload is the
  vector's `payload`; for `expired`, now >= expires_at; for `no_expiry`, the members are
  absent. A bad signature is refused.

Exit status 0 when everything agrees; otherwise each disagreement is printed.
"""
import base64
import datetime
import hashlib
import json
import pathlib
import sys
import warnings

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, OKPKey
from joserfc.jwt import JWTClaimsRegistry

# RFC 9864 deprecates the polymorphic "EdDSA" name in favour of "Ed25519"; AIP (spec 7.4)
# and this implementation use "EdDSA", so joserfc's warning about it is expected.
warnings.filterwarnings("ignore", message="EdDSA is deprecated")

ALGORITHMS = ["EdDSA", "ES256"]
LEEWAY = 30


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def canonical(value) -> bytes:
    # RFC 8785 for the values in proof.json (ASCII member names, integers and strings),
    # where sorted keys and compact separators are exactly the canonical form.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def import_jwk(jwk: dict):
    return OKPKey.import_key(jwk) if jwk["kty"] == "OKP" else ECKey.import_key(jwk)


def check_aats(vectors, failures):
    checked = 0
    for v in vectors:
        name, expect = v["name"], v["expect"]
        keys = KeySet.import_key_set(v["jwks"])
        for jwk in v["jwks"]["keys"]:
            if import_jwk(jwk).thumbprint() != jwk["kid"]:
                failures.append(f"aat/{name}: kid {jwk['kid']} is not the RFC 7638 thumbprint")
        if expect == "valid":
            try:
                token = jwt.decode(v["token"], keys, algorithms=ALGORITHMS)
                if token.header.get("typ", "").lower() != "aat+jwt":
                    raise ValueError(f"typ is {token.header.get('typ')!r}")
                options = {
                    "iss": {"essential": True, "values": v.get("trusted_issuers")} if v.get("trusted_issuers") else {"essential": True},
                    "aud": {"essential": True, "value": v["audience"]},
                    "exp": {"essential": True},
                    "iat": {"essential": True},
                    "jti": {"essential": True},
                }
                JWTClaimsRegistry(now=v["now"], leeway=LEEWAY, **options).validate(token.claims)
                if token.claims["exp"] - token.claims["iat"] > 86400:
                    raise ValueError("lifetime over 24 h")
                checked += 1
            except (JoseError, ValueError, KeyError) as e:
                failures.append(f"aat/{name}: joserfc refused a valid AAT: {e!r}")
        elif expect == "signature_invalid":
            try:
                jwt.decode(v["token"], keys, algorithms=ALGORITHMS)
                failures.append(f"aat/{name}: joserfc accepted a token whose signature must fail")
            except (JoseError, ValueError):
                checked += 1
    return checked


def check_proofs(vectors, failures):
    checked = 0
    for v in vectors:
        name, expect = v["name"], v["expect"]
        header = json.loads(base64.urlsafe_b64decode(v["proof"].split(".")[0] + "=="))
        if expect == "valid":
            try:
                key = import_jwk(header["jwk"])
                proof = jws.deserialize_compact(v["proof"], key, algorithms=ALGORITHMS)
                claims = json.loads(proof.payload)
                aat_claims = jwt.decode(v["aat"], KeySet.import_key_set(v["jwks"]), algorithms=ALGORITHMS).claims
                call = v["call"]
                expected = {
                    "typ": header.get("typ") == "aip-pop+jwt",
                    "cnf.jkt": key.thumbprint() == aat_claims["cnf"]["jkt"],
                    "ath": claims["ath"] == b64url(hashlib.sha256(v["aat"].encode()).digest()),
                    "args_hash": claims["args_hash"] == hashlib.sha256(canonical(call.get("arguments", {}))).hexdigest(),
                    "tool": claims["tool"] == call["tool"],
                    "method": claims["method"] == call["method"],
                    "aud": claims["aud"] == v["audience"],
                    "iat window": v["now"] - 300 <= claims["iat"] <= v["now"] + 30,
                }
                wrong = [k for k, ok in expected.items() if not ok]
                if wrong:
                    failures.append(f"proof/{name}: independent check disagrees on {', '.join(wrong)}")
                else:
                    checked += 1
            except (JoseError, ValueError, KeyError) as e:
                failures.append(f"proof/{name}: joserfc refused a valid proof: {e!r}")
        elif name == "invalid-signature":
            try:
                jws.deserialize_compact(v["proof"], import_jwk(header["jwk"]), algorithms=ALGORITHMS)
                failures.append(f"proof/{name}: joserfc accepted a proof whose signature must fail")
            except (JoseError, ValueError):
                checked += 1
    return checked


def rfc3339(text: str) -> int:
    return int(datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def check_revocation_lists(vectors, failures):
    checked = 0
    for v in vectors:
        name, expect, now = v["name"], v["expect"], v["now"]
        keys = KeySet.import_key_set(v["jwks"])
        for jwk in v["jwks"]["keys"]:
            if import_jwk(jwk).thumbprint() != jwk["kid"]:
                failures.append(f"revocations/{name}: kid {jwk['kid']} is not the RFC 7638 thumbprint")
        header = json.loads(base64.urlsafe_b64decode(v["signed"].split(".")[0] + "=="))
        key = keys.get_by_kid(header["kid"])
        try:
            verified = jws.deserialize_compact(v["signed"], key, algorithms=ALGORITHMS)
        except (JoseError, ValueError) as e:
            if expect == "signature_invalid":
                checked += 1
            else:
                failures.append(f"revocations/{name}: joserfc refused a list that verifies: {e!r}")
            continue
        if expect == "signature_invalid":
            failures.append(f"revocations/{name}: joserfc accepted a list whose signature must fail")
            continue
        payload = json.loads(verified.payload)
        wrong = []
        if header.get("typ") != "aip-revocations+jwt":
            wrong.append("typ")
        if expect == "no_expiry":
            if "issued_at" in payload or "expires_at" in payload:
                wrong.append("members present")
        else:
            issued, expires = rfc3339(payload["issued_at"]), rfc3339(payload["expires_at"])
            if expect == "valid":
                if not issued <= now < expires:
                    wrong.append("validity window")
                if payload != v["payload"]:
                    wrong.append("payload")
            elif expect == "expired" and not now >= expires:
                wrong.append("not expired")
        if wrong:
            failures.append(f"revocations/{name}: independent check disagrees on {', '.join(wrong)}")
        else:
            checked += 1
    return checked


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    directory = pathlib.Path(sys.argv[1])
    failures = []
    aats = check_aats(json.loads((directory / "aat.json").read_text()), failures)
    proofs = check_proofs(json.loads((directory / "proof.json").read_text()), failures)
    lists = check_revocation_lists(json.loads((directory / "revocations.json").read_text()), failures)
    for failure in failures:
        print(failure)
    print(
        f"joserfc agrees on {aats} AAT vectors and {proofs} proof vectors and {lists} revocation list vectors; "
        f"{len(failures)} disagreements"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
