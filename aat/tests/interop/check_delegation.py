"""Checks the delegable AAT vectors (delegation.json) with an independent biscuit
implementation: the biscuit-python bindings.

For every vector it parses the token with the issuer key its root key id names (and only that
key), and expects a refusal where the vector's signatures are invalid or its root unknown.
Where the signatures hold it checks each block's signer against the vector, reads the AAT's
claims from the authority block and each delegation from the facts its signer wrote (queries
trusting that key), runs the tokens' own checks at the vector's time, and, for valid chains,
compares the chain of agents, the last holder and the revocation ids with the vector.

usage: check_delegation.py VECTORS_DIR
"""

import base64
import datetime
import json
import sys
from pathlib import Path

import biscuit_auth as biscuit


def public_key(raw_hex):
    raw = bytes.fromhex(raw_hex)
    alg = biscuit.Algorithm.Ed25519 if len(raw) == 32 else biscuit.Algorithm.Secp256r1
    return biscuit.PublicKey.from_bytes(raw, alg)


def issuer_key(vector):
    jwk = vector["jwks"]["keys"][0]
    assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519", jwk
    raw = base64.urlsafe_b64decode(jwk["x"] + "=" * (-len(jwk["x"]) % 4))
    return biscuit.PublicKey.from_bytes(raw, biscuit.Algorithm.Ed25519)


def at(unix):
    return datetime.datetime.fromtimestamp(unix, datetime.timezone.utc)


def check(vector, problems):
    name = vector["name"]
    key = issuer_key(vector)

    def root(root_key_id):
        if root_key_id != vector["issuer_root_key_id"]:
            raise ValueError(f"root key id {root_key_id} names no issuer key")
        return key

    try:
        token = biscuit.Biscuit.from_base64(vector["token"], root)
    except Exception as refused:  # the bindings raise several error types
        if vector["signatures"] == "valid":
            problems.append(f"{name}: refused a token whose signatures hold: {refused}")
        return "refused"
    if vector["signatures"] != "valid":
        problems.append(f"{name}: accepted a token whose signatures are {vector['signatures']}")
        return "accepted"

    signers = vector["block_signers"]
    if token.block_count() != 1 + len(signers):
        problems.append(f"{name}: {token.block_count()} blocks, expected {1 + len(signers)}")
        return "parsed"
    if token.block_external_key(0) is not None:
        problems.append(f"{name}: the authority block has an external key")
    for index, signer in enumerate(signers, start=1):
        if str(token.block_external_key(index)) != str(public_key(signer)):
            problems.append(f"{name}: block {index} is signed by {token.block_external_key(index)}")

    authorizer = biscuit.AuthorizerBuilder("time({now}); allow if true;", {"now": at(vector["now"])}).build(token)
    claims = authorizer.query(biscuit.Rule("data($c) <- claims($c)"))
    if len(claims) != 1:
        problems.append(f"{name}: {len(claims)} claims facts in the authority block")
        return "parsed"
    claims = json.loads(claims[0].terms[0])
    holder, holder_key = claims["sub"], claims["cnf"]["jkt"]
    agents = [holder]
    for index, signer in enumerate(signers, start=1):
        rule = biscuit.Rule(
            "data($n, $from, $to, $key) <- delegation($n, $from, $to, $key, $exp) trusting {signer}",
            None,
            {"signer": public_key(signer)},
        )
        steps = [f.terms for f in authorizer.query(rule) if f.terms[0] == index]
        if len(steps) != 1:
            problems.append(f"{name}: block {index} carries {len(steps)} delegations")
            return "parsed"
        _, delegator, delegatee, delegatee_key = steps[0]
        if vector["expect"] == "valid" and delegator != holder:
            problems.append(f"{name}: block {index} is delegated by {delegator}, not the holder {holder}")
        holder, holder_key = delegatee, delegatee_key
        agents.append(delegatee)

    try:
        authorizer.authorize()
        checks_hold = True
    except Exception:
        checks_hold = False
    if vector["expect"] == "valid":
        if not checks_hold:
            problems.append(f"{name}: the token's checks fail at {vector['now']}")
        if agents != vector["agents"]:
            problems.append(f"{name}: agents {agents}, expected {vector['agents']}")
        expected = vector["holder"]
        if (holder, holder_key) != (expected["agent"], expected["key"]):
            problems.append(f"{name}: held by {holder} ({holder_key}), expected {expected}")
        if token.revocation_ids != vector["revocation_ids"]:
            problems.append(f"{name}: revocation ids {token.revocation_ids}")
    elif vector["expect"] == "aat_expired" and checks_hold:
        problems.append(f"{name}: expired, but the token's time checks hold")
    return "verified"


def main():
    vectors = json.loads(Path(sys.argv[1], "delegation.json").read_text())
    problems = []
    outcomes = [check(v, problems) for v in vectors]
    for problem in problems:
        print(problem)
    print(
        f"biscuit-python agrees on {outcomes.count('verified')} delegated tokens and "
        f"{outcomes.count('refused')} refused, {len(problems)} disagreements"
    )
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
