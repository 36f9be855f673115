//! Integration tests of the per-call proof of possession (docs/architecture.md, "The AAT on
//! the wire") and of `CallVerifier`, which checks an AAT (cached once verified) and its proof on
//! every tool call.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Seeds;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use aip_aat::aid::AgentStatus;
use aip_aat::clock::FixedClock;
use aip_aat::ids::{AgentId, Jti, KeyId};
use aip_aat::jsonrpc::{CallError, error_response, jsonrpc_error};
use aip_aat::jws;
use aip_aat::keys::{Algorithm, JwkSet, Jwks, KeyPair, KeyResolver, PublicKey, Signer};
use aip_aat::proof::{
    Call, PROOF_TYP, ProofClaims, ProofError, ProofMismatch, ProofValidation, create_proof, create_proof_with_jti,
    verify_proof,
};
use aip_aat::replay::{InMemoryReplayCache, ReplayCache, ReplayError, ReplayScope};
use aip_aat::token::{
    AAT_VERSION, AatClaims, AatError, AgentClaims, Audience, AuthMethod, Capabilities, Confirmation, ContextClaims,
    RevokedBy, UnverifiedAat, UserBinding, Validation, VerifiedAat, encode_aat,
};
use aip_aat::validate::{AgentRecord, AgentRecords, RevocationView};
use aip_aat::verifier::CallVerifier;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

/// 2026-02-02T02:40:00Z.
const NOW: i64 = 1_770_000_000;
const ISSUER: &str = "https://issuer.aip.example";
const AUDIENCE: &str = "files-proxy";
const SESSION: &str = "sess-1";
const USER: &str = "alice@example.com";
const TOOL: &str = "read_file";

const SEEDS: Seeds = Seeds("aip-aat proof tests");

fn ed25519(label: &str) -> KeyPair {
    SEEDS.ed25519(label)
}

fn p256(label: &str) -> KeyPair {
    SEEDS.p256(label)
}

fn agent_id(label: &str) -> AgentId {
    SEEDS.agent_id(label)
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    B64.encode(bytes)
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Valid AAT claims binding `agent` (registered as `id`), issued at `iat`, for 15 minutes.
fn claims_for(agent: &KeyPair, id: &AgentId, iat: i64) -> AatClaims {
    AatClaims {
        aat_version: AAT_VERSION.into(),
        iss: ISSUER.into(),
        sub: id.clone(),
        aud: Audience::one(AUDIENCE),
        iat,
        exp: iat + 900,
        nbf: None,
        jti: Jti::random().unwrap(),
        agent: AgentClaims {
            id: id.clone(),
            name: Some("code reviewer".into()),
            public_key_thumbprint: agent.key_id().clone(),
            aid_hash: None,
        },
        user_binding: Some(UserBinding {
            user_id: USER.into(),
            auth_method: AuthMethod::Oidc,
            auth_time: iat,
            delegation_scope: None,
        }),
        capabilities: Capabilities {
            tools: vec![TOOL.into()],
            ..Default::default()
        },
        context: ContextClaims {
            session_id: SESSION.into(),
            policy_hash: None,
            registry_id: None,
        },
        cnf: Some(Confirmation {
            jkt: agent.key_id().clone(),
        }),
    }
}

/// An issuer, an agent, and an AAT the issuer gave the agent.
struct Fixture {
    issuer: KeyPair,
    agent: KeyPair,
    id: AgentId,
    claims: AatClaims,
    aat: String,
}

impl Fixture {
    fn new(issuer: KeyPair, agent: KeyPair) -> Self {
        let id = agent_id("agent");
        let claims = claims_for(&agent, &id, NOW);
        let aat = encode_aat(&claims, &issuer).unwrap();
        Self {
            issuer,
            agent,
            id,
            claims,
            aat,
        }
    }

    fn ed() -> Self {
        Self::new(ed25519("issuer"), ed25519("agent"))
    }

    fn keys(&self) -> JwkSet {
        JwkSet::from_keys([self.issuer.public_key()])
    }

    /// The AAT, verified at [`NOW`].
    fn verified(&self) -> VerifiedAat {
        UnverifiedAat::parse(&self.aat)
            .unwrap()
            .verify(&self.keys(), &FixedClock::new(NOW), &Validation::new(AUDIENCE))
            .unwrap()
    }

    /// A proof by the agent for `call` at `iat`.
    fn proof(&self, call: &Call<'_>, iat: i64) -> String {
        create_proof(&self.agent, &self.aat, call, AUDIENCE, iat).unwrap()
    }

    /// A verifier for this fixture's issuer on `clock`.
    fn verifier(&self, clock: &Arc<FixedClock>) -> CallVerifier {
        CallVerifier::new(
            Validation::new(AUDIENCE),
            Arc::new(self.keys()),
            Arc::new(InMemoryReplayCache::new(10_000)),
        )
        .with_clock(clock.clone())
    }
}

/// The claims `create_proof` would write, for manual tampering.
fn proof_claims(aat: &str, call: &Call<'_>, audience: &str, iat: i64) -> ProofClaims {
    ProofClaims {
        jti: Jti::random().unwrap(),
        iat,
        aud: audience.into(),
        ath: b64(Sha256::digest(aat.as_bytes())),
        method: call.method.into(),
        tool: call.tool.into(),
        args_hash: call.args_hash().unwrap(),
    }
}

/// The header `create_proof` writes: `{alg, typ, jwk}` with the jwk's `kid` removed.
fn proof_header(agent: &dyn Signer) -> Value {
    let mut jwk = serde_json::to_value(agent.public_key().to_jwk()).unwrap();
    jwk.as_object_mut().unwrap().remove("kid");
    json!({"alg": agent.algorithm().as_str(), "typ": PROOF_TYP, "jwk": jwk})
}

fn sign_raw(header: &Value, payload: &Value, signer: &dyn Signer) -> String {
    jws::sign_raw(
        &serde_json::to_vec(header).unwrap(),
        &serde_json::to_vec(payload).unwrap(),
        signer,
    )
    .unwrap()
}

fn decode_segment(token: &str, index: usize) -> Value {
    let segment = token.split('.').nth(index).unwrap();
    serde_json::from_slice(&B64.decode(segment.as_bytes()).unwrap()).unwrap()
}

/// `verify_proof` against a fresh replay cache, at `now`.
fn check(proof: &str, aat: &VerifiedAat, call: &Call<'_>, now: i64) -> Result<ProofClaims, ProofError> {
    verify_proof(
        proof,
        aat,
        call,
        &ProofValidation::new(AUDIENCE),
        &InMemoryReplayCache::new(1000),
        now,
    )
}

#[track_caller]
fn proof_refused(result: Result<ProofClaims, ProofError>) -> ProofError {
    match result {
        Ok(claims) => panic!("expected the proof to be refused, but it was accepted: {claims:?}"),
        Err(e) => e,
    }
}

#[track_caller]
fn assert_invalid(result: Result<ProofClaims, ProofError>, why: &'static str) {
    let e = proof_refused(result);
    assert_eq!(e, ProofError::Invalid(why));
    assert_eq!(e.aat_error(), "proof_invalid");
}

#[track_caller]
fn assert_mismatch(result: Result<ProofClaims, ProofError>, what: ProofMismatch) {
    let e = proof_refused(result);
    assert_eq!(e, ProofError::Mismatch(what));
    assert_eq!(e.aat_error(), "proof_mismatch");
}

#[track_caller]
fn call_refused<T: std::fmt::Debug>(result: Result<T, CallError>) -> CallError {
    match result {
        Ok(v) => panic!("expected the call to be refused, but it was accepted: {v:?}"),
        Err(e) => e,
    }
}

fn args_hosts() -> Value {
    json!({"path": "/etc/hosts"})
}

// Test doubles whose state changes while a verifier holds them.

#[derive(Default)]
struct Revocations {
    tokens: RwLock<HashSet<String>>,
    sessions: RwLock<HashSet<String>>,
    agents: RwLock<HashSet<String>>,
    users: RwLock<HashMap<String, i64>>,
}

impl RevocationView for Revocations {
    fn is_agent_revoked(&self, agent_id: &AgentId) -> bool {
        self.agents.read().unwrap().contains(agent_id.as_str())
    }
    fn is_token_revoked(&self, jti: &Jti) -> bool {
        self.tokens.read().unwrap().contains(jti.as_str())
    }
    fn is_session_revoked(&self, session_id: &str) -> bool {
        self.sessions.read().unwrap().contains(session_id)
    }
    fn user_revoked_at(&self, user_id: &str) -> Option<i64> {
        self.users.read().unwrap().get(user_id).copied()
    }
}

#[derive(Default)]
struct Agents(RwLock<HashMap<AgentId, AgentRecord>>);

impl Agents {
    fn set(&self, id: &AgentId, status: AgentStatus, key: &KeyId) {
        self.0.write().unwrap().insert(
            id.clone(),
            AgentRecord {
                status,
                public_key_thumbprint: key.clone(),
                previous_keys: Vec::new(),
            },
        );
    }
}

impl AgentRecords for Agents {
    fn agent(&self, agent_id: &AgentId) -> Option<AgentRecord> {
        self.0.read().unwrap().get(agent_id).cloned()
    }
}

/// Issuer keys that can be rotated while a verifier holds them.
struct Keys(RwLock<JwkSet>);

impl KeyResolver for Keys {
    fn resolve(&self, issuer: &str, kid: &KeyId) -> Option<PublicKey> {
        self.0.read().unwrap().resolve(issuer, kid)
    }
}

// ---------------------------------------------------------------------------------------------
// Valid proofs
// ---------------------------------------------------------------------------------------------

#[test]
fn valid_proof_from_an_eddsa_agent() {
    let f = Fixture::ed();
    let aat = f.verified();
    let args = args_hosts();
    let call = Call::tools_call(TOOL, Some(&args));
    let proof = f.proof(&call, NOW);

    let header = decode_segment(&proof, 0);
    assert_eq!(header["typ"], PROOF_TYP);
    assert_eq!(header["alg"], "EdDSA");
    assert!(header.get("kid").is_none());
    assert_eq!(header["jwk"]["kty"], "OKP");
    assert_eq!(header["jwk"]["x"].as_str(), f.agent.public_key().to_jwk().x.as_deref());
    assert!(header["jwk"].get("kid").is_none());
    assert!(header["jwk"].get("d").is_none());

    let claims = check(&proof, &aat, &call, NOW).unwrap();
    assert_eq!(claims.iat, NOW);
    assert_eq!(claims.aud, AUDIENCE);
    assert_eq!(claims.ath, aat.ath());
    assert_eq!(claims.ath, b64(Sha256::digest(f.aat.as_bytes())));
    assert_eq!(claims.method, "tools/call");
    assert_eq!(claims.tool, TOOL);
    assert_eq!(claims.args_hash, hex_sha256(br#"{"path":"/etc/hosts"}"#));
    assert_eq!(claims.jti.as_str().len(), 36);
    assert_eq!(serde_json::to_value(&claims).unwrap(), decode_segment(&proof, 1));
}

#[test]
fn valid_proof_from_an_es256_agent() {
    for issuer in [ed25519("issuer"), p256("issuer")] {
        let f = Fixture::new(issuer, p256("agent"));
        let aat = f.verified();
        let args = args_hosts();
        let call = Call::tools_call(TOOL, Some(&args));
        let jti: Jti = "proof-0001".parse().unwrap();
        let proof = create_proof_with_jti(&f.agent, &f.aat, &call, AUDIENCE, NOW - 10, jti.clone()).unwrap();
        let header = decode_segment(&proof, 0);
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["jwk"]["crv"], "P-256");
        let claims = check(&proof, &aat, &call, NOW).unwrap();
        assert_eq!(claims.jti, jti);
        assert_eq!(claims.iat, NOW - 10);
        assert_eq!(claims.ath, aat.ath());
        assert_eq!(claims.tool, TOOL);
    }
}

#[test]
fn valid_call_through_the_call_verifier() {
    let f = Fixture::ed();
    let clock = Arc::new(FixedClock::new(NOW));
    let verifier = f.verifier(&clock);
    let args = args_hosts();
    let call = Call::tools_call(TOOL, Some(&args));
    let verified = verifier
        .verify(Some(&f.aat), Some(&f.proof(&call, NOW)), &call)
        .unwrap();
    assert_eq!(verified.claims(), &f.claims);
    assert_eq!(verified.check_tool(TOOL), Ok(()));
    assert_eq!(verifier.validation().audience(), AUDIENCE);
}

// ---------------------------------------------------------------------------------------------
// proof_missing / proof_invalid
// ---------------------------------------------------------------------------------------------

#[test]
fn proof_missing() {
    let f = Fixture::ed();
    let clock = Arc::new(FixedClock::new(NOW));
    let verifier = f.verifier(&clock);
    let call = Call::tools_call(TOOL, None);
    let e = call_refused(verifier.verify(Some(&f.aat), None, &call));
    assert_eq!(e, CallError::Proof(ProofError::Missing));
    assert_eq!(ProofError::Missing.aat_error(), "proof_missing");
    let rpc = jsonrpc_error(&e, Some(TOOL));
    assert_eq!(rpc.code.code(), -32016);
    assert_eq!(rpc.code.message(), "AAT invalid");
    assert_eq!(rpc.data["aat_error"], "proof_missing");
    assert_eq!(rpc.data["tool"], TOOL);
}

#[test]
fn proof_invalid_shape() {
    let f = Fixture::ed();
    let aat = f.verified();
    let call = Call::tools_call(TOOL, None);
    let proof = f.proof(&call, NOW);
    let parts: Vec<&str> = proof.split('.').collect();
    for bad in [
        String::new(),
        format!("{}.{}", parts[0], parts[1]),
        format!("{proof}.x"),
    ] {
        assert_invalid(
            check(&bad, &aat, &call, NOW),
            "not a compact JWS (three base64url segments)",
        );
    }
    assert_invalid(
        check(&format!("{}=.{}.{}", parts[0], parts[1], parts[2]), &aat, &call, NOW),
        "a segment is not unpadded base64url",
    );
    assert_invalid(
        check(&format!("{}.{}.{}", b64("[]"), parts[1], parts[2]), &aat, &call, NOW),
        "header or payload is not a JSON object",
    );
    // Longer than 4096 bytes.
    let args = json!({"blob": "x".repeat(5000)});
    let big_call = Call::tools_call(TOOL, Some(&args));
    let mut header = proof_header(&f.agent);
    header["x-pad"] = json!("p".repeat(4000));
    let big = sign_raw(
        &header,
        &serde_json::to_value(proof_claims(&f.aat, &big_call, AUDIENCE, NOW)).unwrap(),
        &f.agent,
    );
    assert!(big.len() > 4096);
    assert_invalid(check(&big, &aat, &big_call, NOW), "token is too long");
}

#[test]
fn proof_invalid_wrong_or_missing_typ() {
    let f = Fixture::ed();
    let aat = f.verified();
    let call = Call::tools_call(TOOL, None);
    let payload = serde_json::to_value(proof_claims(&f.aat, &call, AUDIENCE, NOW)).unwrap();
    for typ in [
        json!("JWT"),
        json!("aat+jwt"),
        json!("dpop+jwt"),
        json!("aip-pop+jwt "),
        json!(null),
    ] {
        let mut header = proof_header(&f.agent);
        header["typ"] = typ;
        assert_invalid(
            check(&sign_raw(&header, &payload, &f.agent), &aat, &call, NOW),
            "`typ` is not aip-pop+jwt",
        );
    }
    let mut header = proof_header(&f.agent);
    header.as_object_mut().unwrap().remove("typ");
    assert_invalid(
        check(&sign_raw(&header, &payload, &f.agent), &aat, &call, NOW),
        "`typ` is not aip-pop+jwt",
    );
    // The AAT itself presented as a proof.
    assert_invalid(check(&f.aat, &aat, &call, NOW), "`typ` is not aip-pop+jwt");
}

#[test]
fn proof_invalid_missing_jwk() {
    let f = Fixture::ed();
    let aat = f.verified();
    let call = Call::tools_call(TOOL, None);
    let payload = serde_json::to_vec(&proof_claims(&f.aat, &call, AUDIENCE, NOW)).unwrap();
    // Identified by kid instead of by value.
    let proof = jws::sign(PROOF_TYP, &payload, &f.agent, false).unwrap();
    assert_invalid(check(&proof, &aat, &call, NOW), "header has no `jwk`");
}

#[test]
fn proof_invalid_jwk_with_private_part() {
    for agent in [ed25519("agent"), p256("agent")] {
        let f = Fixture::new(ed25519("issuer"), agent);
        let aat = f.verified();
        let call = Call::tools_call(TOOL, None);
        let payload = serde_json::to_value(proof_claims(&f.aat, &call, AUDIENCE, NOW)).unwrap();
        let mut header = proof_header(&f.agent);
        header["jwk"]["d"] = json!(b64(SEEDS.bytes("agent")));
        let proof = sign_raw(&header, &payload, &f.agent);
        assert_invalid(check(&proof, &aat, &call, NOW), "`jwk` contains a private key");
    }
}

#[test]
fn proof_invalid_jwk_that_is_not_a_valid_public_key() {
    let f = Fixture::ed();
    let aat = f.verified();
    let call = Call::tools_call(TOOL, None);
    let payload = serde_json::to_value(proof_claims(&f.aat, &call, AUDIENCE, NOW)).unwrap();
    let mut identity = [0u8; 32];
    identity[0] = 1;
    for jwk in [
        json!({"kty": "OKP", "crv": "Ed25519", "x": b64(identity)}),
        json!({"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}),
        json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"}),
        json!({"kty": "oct", "k": "c2VjcmV0"}),
    ] {
        let mut header = proof_header(&f.agent);
        header["jwk"] = jwk;
        let proof = sign_raw(&header, &payload, &f.agent);
        assert_invalid(check(&proof, &aat, &call, NOW), "`jwk` is not a valid public key");
    }
    // The agent's own key, but declared for encryption or for another algorithm.
    for (member, value) in [("use", "enc"), ("alg", "ES256")] {
        let mut header = proof_header(&f.agent);
        header["jwk"][member] = json!(value);
        let proof = sign_raw(&header, &payload, &f.agent);
        assert_invalid(check(&proof, &aat, &call, NOW), "`jwk` is not a valid public key");
    }
}

#[test]
fn proof_invalid_algorithm_not_allowed() {
    let f = Fixture::ed();
    let aat = f.verified();
    let call = Call::tools_call(TOOL, None);
    let payload = serde_json::to_value(proof_claims(&f.aat, &call, AUDIENCE, NOW)).unwrap();
    for alg in ["none", "HS256", "RS256", "ES384", "eddsa", "EDDSA", ""] {
        let mut header = proof_header(&f.agent);
        header["alg"] = json!(alg);
        let proof = sign_raw(&header, &payload, &f.agent);
        assert_invalid(check(&proof, &aat, &call, NOW), "algorithm is not allowed");
    }
    // `alg: none` with an empty signature.
    let mut header = proof_header(&f.agent);
    header["alg"] = json!("none");
    let unsigned = format!(
        "{}.{}.",
        b64(serde_json::to_vec(&header).unwrap()),
        b64(serde_json::to_vec(&payload).unwrap())
    );
    assert_invalid(check(&unsigned, &aat, &call, NOW), "algorithm is not allowed");

    // A genuine EdDSA proof where only ES256 is allowed.
    let proof = f.proof(&call, NOW);
    let es256_only = ProofValidation::new(AUDIENCE).with_algorithms(&[Algorithm::ES256]);
    let e = proof_refused(verify_proof(
        &proof,
        &aat,
        &call,
        &es256_only,
        &InMemoryReplayCache::new(10),
        NOW,
    ));
    assert_eq!(e, ProofError::Invalid("algorithm is not allowed"));
    assert_eq!(e.aat_error(), "proof_invalid");
}

#[test]
fn proof_invalid_algorithm_not_matching_the_jwk() {
    // Header ES256 with the (Ed25519) agent key.
    let f = Fixture::ed();
    let aat = f.verified();
    let call = Call::tools_call(TOOL, None);
    let payload = serde_json::to_value(proof_claims(&f.aat, &call, AUDIENCE, NOW)).unwrap();
    let mut header = proof_header(&f.agent);
    header["alg"] = json!("ES256");
    header["jwk"].as_object_mut().unwrap().remove("alg");
    let proof = sign_raw(&header, &payload, &f.agent);
    assert_invalid(check(&proof, &aat, &call, NOW), "algorithm does not match the key");

    // Header EdDSA with a (P-256) agent key.
    let f = Fixture::new(ed25519("issuer"), p256("agent"));
    let aat = f.verified();
    let payload = serde_json::to_value(proof_claims(&f.aat, &call, AUDIENCE, NOW)).unwrap();
    let mut header = proof_header(&f.agent);
    header["alg"] = json!("EdDSA");
    header["jwk"].as_object_mut().unwrap().remove("alg");
    for signer in [&f.agent, &ed25519("attacker")] {
        let proof = sign_raw(&header, &payload, signer);
        assert_invalid(check(&proof, &aat, &call, NOW), "algorithm does not match the key");
    }
}

#[test]
fn proof_invalid_bad_signature() {
    for agent in [ed25519("agent"), p256("agent")] {
        let f = Fixture::new(ed25519("issuer"), agent);
        let aat = f.verified();
        let call = Call::tools_call(TOOL, None);
        let proof = f.proof(&call, NOW);
        let [h, p, _]: [&str; 3] = proof.split('.').collect::<Vec<_>>().try_into().unwrap();

        // Another proof's signature.
        let other = f.proof(&call, NOW);
        let other_sig = other.split('.').nth(2).unwrap();
        assert_invalid(
            check(&format!("{h}.{p}.{other_sig}"), &aat, &call, NOW),
            "signature does not verify",
        );
        // Empty, truncated and zero signatures.
        for sig in [String::new(), b64([0u8; 64]), b64([1u8; 63])] {
            assert_invalid(
                check(&format!("{h}.{p}.{sig}"), &aat, &call, NOW),
                "signature does not verify",
            );
        }
        // The agent's public jwk in the header, but signed by someone else.
        let stranger: KeyPair = match f.agent.algorithm() {
            Algorithm::EdDSA => ed25519("stranger"),
            Algorithm::ES256 => p256("stranger"),
        };
        let forged = sign_raw(
            &proof_header(&f.agent),
            &serde_json::to_value(proof_claims(&f.aat, &call, AUDIENCE, NOW)).unwrap(),
            &stranger,
        );
        assert_invalid(check(&forged, &aat, &call, NOW), "signature does not verify");
        // A payload changed after signing.
        let mut claims = decode_segment(&proof, 1);
        claims["iat"] = json!(NOW - 1);
        let tampered = format!(
            "{h}.{}.{}",
            b64(serde_json::to_vec(&claims).unwrap()),
            proof.split('.').nth(2).unwrap()
        );
        assert_invalid(check(&tampered, &aat, &call, NOW), "signature does not verify");
    }
}

#[test]
fn proof_invalid_too_old_or_from_the_future() {
    let f = Fixture::ed();
    let aat = f.verified();
    let call = Call::tools_call(TOOL, None);
    for iat in [NOW - 301, NOW - 3600, 0, i64::MIN] {
        let proof = f.proof(&call, iat);
        assert_invalid(check(&proof, &aat, &call, NOW), "proof is too old");
    }
    for iat in [NOW + 31, NOW + 3600, i64::MAX] {
        let proof = f.proof(&call, iat);
        assert_invalid(check(&proof, &aat, &call, NOW), "`iat` is in the future");
    }
}

#[test]
fn proof_iat_boundaries() {
    let f = Fixture::ed();
    let aat = f.verified();
    let call = Call::tools_call(TOOL, None);
    assert!(
        check(&f.proof(&call, NOW - 300), &aat, &call, NOW).is_ok(),
        "now - 300 is accepted"
    );
    assert_invalid(check(&f.proof(&call, NOW - 301), &aat, &call, NOW), "proof is too old");
    assert!(
        check(&f.proof(&call, NOW + 30), &aat, &call, NOW).is_ok(),
        "now + 30 is accepted"
    );
    assert_invalid(
        check(&f.proof(&call, NOW + 31), &aat, &call, NOW),
        "`iat` is in the future",
    );
}

#[test]
fn proof_invalid_missing_or_mistyped_claims() {
    let f = Fixture::ed();
    let aat = f.verified();
    let call = Call::tools_call(TOOL, None);
    let good = serde_json::to_value(proof_claims(&f.aat, &call, AUDIENCE, NOW)).unwrap();
    for claim in ["jti", "iat", "aud", "ath", "method", "tool", "args_hash"] {
        let mut payload = good.clone();
        payload.as_object_mut().unwrap().remove(claim);
        let proof = sign_raw(&proof_header(&f.agent), &payload, &f.agent);
        assert_invalid(
            check(&proof, &aat, &call, NOW),
            "claims are missing or have the wrong type",
        );
    }
    for (claim, value) in [
        ("iat", json!("1770000000")),
        ("iat", json!(1_770_000_000.5)),
        ("jti", json!("")),
        ("aud", json!([AUDIENCE])),
        ("tool", json!(null)),
    ] {
        let mut payload = good.clone();
        payload[claim] = value;
        let proof = sign_raw(&proof_header(&f.agent), &payload, &f.agent);
        assert_invalid(
            check(&proof, &aat, &call, NOW),
            "claims are missing or have the wrong type",
        );
    }
    for payload in [json!("claims"), json!(null), json!([])] {
        let proof = sign_raw(&proof_header(&f.agent), &payload, &f.agent);
        assert_invalid(
            check(&proof, &aat, &call, NOW),
            "claims are missing or have the wrong type",
        );
    }
}

#[test]
fn proof_invalid_payload_that_is_an_array() {
    let f = Fixture::ed();
    let aat = f.verified();
    let call = Call::tools_call(TOOL, None);
    let c = proof_claims(&f.aat, &call, AUDIENCE, NOW);
    let payload = json!([c.jti, c.iat, c.aud, c.ath, c.method, c.tool, c.args_hash]);
    let proof = sign_raw(&proof_header(&f.agent), &payload, &f.agent);
    assert_invalid(
        check(&proof, &aat, &call, NOW),
        "claims are missing or have the wrong type",
    );
}

// ---------------------------------------------------------------------------------------------
// proof_mismatch
// ---------------------------------------------------------------------------------------------

#[test]
fn stolen_aat_without_the_agent_key_is_useless() {
    let f = Fixture::ed();
    let aat = f.verified();
    let args = args_hosts();
    let call = Call::tools_call(TOOL, Some(&args));
    for attacker in [ed25519("attacker"), p256("attacker")] {
        // The attacker signs with their own key, which the AAT is not bound to.
        let proof = create_proof(&attacker, &f.aat, &call, AUDIENCE, NOW).unwrap();
        assert_mismatch(check(&proof, &aat, &call, NOW), ProofMismatch::Key);
    }
    // Through the call verifier, with the JSON-RPC error a client would see.
    let clock = Arc::new(FixedClock::new(NOW));
    let verifier = f.verifier(&clock);
    let proof = create_proof(&ed25519("attacker"), &f.aat, &call, AUDIENCE, NOW).unwrap();
    let e = call_refused(verifier.verify(Some(&f.aat), Some(&proof), &call));
    assert_eq!(e, CallError::Proof(ProofError::Mismatch(ProofMismatch::Key)));
    let rpc = jsonrpc_error(&e, Some(TOOL));
    assert_eq!(rpc.code.code(), -32016);
    assert_eq!(rpc.data["aat_error"], "proof_mismatch");
    // Copying the agent's public jwk into the header does not help either.
    let forged = sign_raw(
        &proof_header(&f.agent),
        &serde_json::to_value(proof_claims(&f.aat, &call, AUDIENCE, NOW)).unwrap(),
        &ed25519("attacker"),
    );
    let e = call_refused(verifier.verify(Some(&f.aat), Some(&forged), &call));
    assert_eq!(e, CallError::Proof(ProofError::Invalid("signature does not verify")));
    // And the genuine agent still gets through.
    assert!(verifier.verify(Some(&f.aat), Some(&f.proof(&call, NOW)), &call).is_ok());
}

#[test]
fn proof_mismatch_token() {
    let f = Fixture::ed();
    let aat = f.verified();
    let call = Call::tools_call(TOOL, None);
    // Another AAT of the same agent (same key).
    let other = encode_aat(&claims_for(&f.agent, &f.id, NOW), &f.issuer).unwrap();
    let proof = create_proof(&f.agent, &other, &call, AUDIENCE, NOW).unwrap();
    assert_mismatch(check(&proof, &aat, &call, NOW), ProofMismatch::Token);
}

#[test]
fn proof_mismatch_audience() {
    let f = Fixture::ed();
    let aat = f.verified();
    let call = Call::tools_call(TOOL, None);
    for aud in ["git-proxy", "FILES-PROXY", ""] {
        let proof = create_proof(&f.agent, &f.aat, &call, aud, NOW).unwrap();
        assert_mismatch(check(&proof, &aat, &call, NOW), ProofMismatch::Audience);
    }
}

#[test]
fn proof_mismatch_method_and_tool() {
    let f = Fixture::ed();
    let aat = f.verified();
    let call = Call::tools_call(TOOL, None);
    let other_method = Call {
        method: "resources/read",
        tool: TOOL,
        arguments: None,
    };
    let proof = create_proof(&f.agent, &f.aat, &other_method, AUDIENCE, NOW).unwrap();
    assert_mismatch(check(&proof, &aat, &call, NOW), ProofMismatch::Method);

    let proof = create_proof(&f.agent, &f.aat, &Call::tools_call("write_file", None), AUDIENCE, NOW).unwrap();
    assert_mismatch(check(&proof, &aat, &call, NOW), ProofMismatch::Tool);
}

#[test]
fn proof_mismatch_arguments() {
    let f = Fixture::ed();
    let aat = f.verified();
    let hosts = args_hosts();
    let shadow = json!({"path": "/etc/shadow"});
    let proof = f.proof(&Call::tools_call(TOOL, Some(&hosts)), NOW);
    assert_mismatch(
        check(&proof, &aat, &Call::tools_call(TOOL, Some(&shadow)), NOW),
        ProofMismatch::Arguments,
    );
    // Extra members, different types, absent arguments.
    for args in [
        json!({"path": "/etc/hosts", "follow": true}),
        json!({"path": ["/etc/hosts"]}),
        json!({"Path": "/etc/hosts"}),
        json!({}),
    ] {
        assert_mismatch(
            check(&proof, &aat, &Call::tools_call(TOOL, Some(&args)), NOW),
            ProofMismatch::Arguments,
        );
    }
    assert_mismatch(
        check(&proof, &aat, &Call::tools_call(TOOL, None), NOW),
        ProofMismatch::Arguments,
    );
}

#[test]
fn mismatch_order_key_then_token_then_audience_then_method_then_tool_then_arguments() {
    let f = Fixture::ed();
    let aat = f.verified();
    let a = json!({"a": 1});
    let call = Call::tools_call(TOOL, Some(&a));
    // Everything wrong: the key is reported first.
    let other_aat = encode_aat(&claims_for(&f.agent, &f.id, NOW), &f.issuer).unwrap();
    let all_wrong = Call {
        method: "x",
        tool: "y",
        arguments: None,
    };
    let proof = create_proof(&ed25519("attacker"), &other_aat, &all_wrong, "other", NOW).unwrap();
    assert_mismatch(check(&proof, &aat, &call, NOW), ProofMismatch::Key);
    let proof = create_proof(&f.agent, &other_aat, &all_wrong, "other", NOW).unwrap();
    assert_mismatch(check(&proof, &aat, &call, NOW), ProofMismatch::Token);
    let proof = create_proof(&f.agent, &f.aat, &all_wrong, "other", NOW).unwrap();
    assert_mismatch(check(&proof, &aat, &call, NOW), ProofMismatch::Audience);
    let proof = create_proof(&f.agent, &f.aat, &all_wrong, AUDIENCE, NOW).unwrap();
    assert_mismatch(check(&proof, &aat, &call, NOW), ProofMismatch::Method);
    let proof = create_proof(&f.agent, &f.aat, &Call::tools_call("y", None), AUDIENCE, NOW).unwrap();
    assert_mismatch(check(&proof, &aat, &call, NOW), ProofMismatch::Tool);
    // The key mismatch is also reported before a stale iat.
    let proof = create_proof(&ed25519("attacker"), &f.aat, &call, AUDIENCE, NOW - 10_000).unwrap();
    assert_mismatch(check(&proof, &aat, &call, NOW), ProofMismatch::Key);
}

// ---------------------------------------------------------------------------------------------
// proof_replayed
// ---------------------------------------------------------------------------------------------

#[test]
fn proof_replayed() {
    let f = Fixture::ed();
    let aat = f.verified();
    let call = Call::tools_call(TOOL, None);
    let replay = InMemoryReplayCache::new(1000);
    let validation = ProofValidation::new(AUDIENCE);
    let proof = f.proof(&call, NOW);
    assert!(verify_proof(&proof, &aat, &call, &validation, &replay, NOW).is_ok());
    for now in [NOW, NOW + 1, NOW + 299] {
        let e = proof_refused(verify_proof(&proof, &aat, &call, &validation, &replay, now));
        assert_eq!(e, ProofError::Replayed);
        assert_eq!(e.aat_error(), "proof_replayed");
    }
    // A different proof for the same call is fine.
    assert!(verify_proof(&f.proof(&call, NOW), &aat, &call, &validation, &replay, NOW).is_ok());

    // Through the call verifier.
    let clock = Arc::new(FixedClock::new(NOW));
    let verifier = f.verifier(&clock);
    let proof = f.proof(&call, NOW);
    assert!(verifier.verify(Some(&f.aat), Some(&proof), &call).is_ok());
    let e = call_refused(verifier.verify(Some(&f.aat), Some(&proof), &call));
    assert_eq!(e, CallError::Proof(ProofError::Replayed));
    let rpc = jsonrpc_error(&e, Some(TOOL));
    assert_eq!(rpc.code.code(), -32016);
    assert_eq!(rpc.data["aat_error"], "proof_replayed");
}

#[test]
fn proof_replayed_when_the_same_jti_is_reused_in_a_new_proof() {
    let f = Fixture::ed();
    let aat = f.verified();
    let hosts = args_hosts();
    let replay = InMemoryReplayCache::new(1000);
    let validation = ProofValidation::new(AUDIENCE);
    let jti: Jti = "fixed-jti".parse().unwrap();
    let call = Call::tools_call(TOOL, None);
    let call2 = Call::tools_call(TOOL, Some(&hosts));
    let first = create_proof_with_jti(&f.agent, &f.aat, &call, AUDIENCE, NOW, jti.clone()).unwrap();
    let second = create_proof_with_jti(&f.agent, &f.aat, &call2, AUDIENCE, NOW + 5, jti).unwrap();
    assert!(verify_proof(&first, &aat, &call, &validation, &replay, NOW).is_ok());
    assert_eq!(
        verify_proof(&second, &aat, &call2, &validation, &replay, NOW + 5),
        Err(ProofError::Replayed)
    );
}

#[test]
fn full_replay_cache_refuses_with_proof_replayed() {
    let f = Fixture::ed();
    let aat = f.verified();
    let call = Call::tools_call(TOOL, None);
    // 16 shards of one slot each, filled with live entries.
    let replay = InMemoryReplayCache::with_min_retention(16, 0);
    let mut stored = 0;
    for i in 0..10_000 {
        match replay.check_and_record(ReplayScope::Proof, &format!("filler-{i}"), NOW + 10_000, NOW) {
            Ok(()) => stored += 1,
            Err(ReplayError::Full) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(stored, 16);
    assert_eq!(replay.len(), 16);
    let proof = f.proof(&call, NOW);
    let e = proof_refused(verify_proof(
        &proof,
        &aat,
        &call,
        &ProofValidation::new(AUDIENCE),
        &replay,
        NOW,
    ));
    assert_eq!(e, ProofError::ReplayCacheFull);
    assert_eq!(e.aat_error(), "proof_replayed");
    let rpc = jsonrpc_error(&CallError::Proof(e), Some(TOOL));
    assert_eq!(rpc.code.code(), -32016);
    assert_eq!(rpc.data["aat_error"], "proof_replayed");

    // Through the call verifier sharing that cache.
    let clock = Arc::new(FixedClock::new(NOW));
    let verifier =
        CallVerifier::new(Validation::new(AUDIENCE), Arc::new(f.keys()), Arc::new(replay)).with_clock(clock.clone());
    let e = call_refused(verifier.verify(Some(&f.aat), Some(&f.proof(&call, NOW)), &call));
    assert_eq!(e, CallError::Proof(ProofError::ReplayCacheFull));
}

#[test]
fn rejected_proof_does_not_consume_its_jti() {
    let f = Fixture::ed();
    let aat = f.verified();
    let hosts = args_hosts();
    let call = Call::tools_call(TOOL, Some(&hosts));
    let replay = InMemoryReplayCache::new(1000);
    let validation = ProofValidation::new(AUDIENCE);
    let proof = f.proof(&call, NOW);
    // Presented for the wrong tool, the wrong arguments, the wrong audience, too late.
    assert_eq!(
        verify_proof(
            &proof,
            &aat,
            &Call::tools_call("write_file", Some(&hosts)),
            &validation,
            &replay,
            NOW
        ),
        Err(ProofError::Mismatch(ProofMismatch::Tool))
    );
    assert_eq!(
        verify_proof(&proof, &aat, &Call::tools_call(TOOL, None), &validation, &replay, NOW),
        Err(ProofError::Mismatch(ProofMismatch::Arguments))
    );
    assert_eq!(
        verify_proof(&proof, &aat, &call, &ProofValidation::new("other"), &replay, NOW),
        Err(ProofError::Mismatch(ProofMismatch::Audience))
    );
    assert_eq!(
        verify_proof(&proof, &aat, &call, &validation, &replay, NOW + 301),
        Err(ProofError::Invalid("proof is too old"))
    );
    assert!(replay.is_empty());
    // The correct call with the same proof still succeeds, once.
    assert!(verify_proof(&proof, &aat, &call, &validation, &replay, NOW).is_ok());
    assert_eq!(
        verify_proof(&proof, &aat, &call, &validation, &replay, NOW),
        Err(ProofError::Replayed)
    );
}

#[test]
fn proof_cannot_be_replayed_at_the_last_accepted_second() {
    let f = Fixture::ed();
    let aat = f.verified();
    let call = Call::tools_call(TOOL, None);
    let replay = InMemoryReplayCache::with_min_retention(1000, 0);
    let validation = ProofValidation::new(AUDIENCE);
    let proof = f.proof(&call, NOW);
    assert!(verify_proof(&proof, &aat, &call, &validation, &replay, NOW).is_ok());
    assert_eq!(
        verify_proof(&proof, &aat, &call, &validation, &replay, NOW + 299),
        Err(ProofError::Replayed)
    );
    // Still inside the acceptance window (iat >= now - 300): must still be a replay.
    assert_eq!(
        verify_proof(&proof, &aat, &call, &validation, &replay, NOW + 300),
        Err(ProofError::Replayed)
    );
}

// ---------------------------------------------------------------------------------------------
// Argument canonicalization
// ---------------------------------------------------------------------------------------------

#[test]
fn arguments_are_compared_in_canonical_form() {
    let f = Fixture::ed();
    let aat = f.verified();
    let signed_args: Value = serde_json::from_str(r#"{"b":1,"a":2}"#).unwrap();
    let call_args: Value = serde_json::from_str(r#"{"a":2,"b":1}"#).unwrap();
    let proof = f.proof(&Call::tools_call(TOOL, Some(&signed_args)), NOW);
    let claims = check(&proof, &aat, &Call::tools_call(TOOL, Some(&call_args)), NOW).unwrap();
    assert_eq!(claims.args_hash, hex_sha256(br#"{"a":2,"b":1}"#));

    // Nested objects, whitespace and number spelling do not matter either (RFC 8785).
    let signed: Value =
        serde_json::from_str(r#"{ "z": {"y": [1, 2.0, {"b": true, "a": null}], "x": "é"}, "n": 1e2 }"#).unwrap();
    let presented: Value =
        serde_json::from_str(r#"{"n":100,"z":{"x":"\u00e9","y":[1,2,{"a":null,"b":true}]}}"#).unwrap();
    let proof = f.proof(&Call::tools_call(TOOL, Some(&signed)), NOW);
    let claims = check(&proof, &aat, &Call::tools_call(TOOL, Some(&presented)), NOW).unwrap();
    assert_eq!(
        claims.args_hash,
        hex_sha256(r#"{"n":100,"z":{"x":"é","y":[1,2,{"a":null,"b":true}]}}"#.as_bytes())
    );
}

#[test]
fn absent_arguments_hash_like_an_empty_object() {
    let f = Fixture::ed();
    let aat = f.verified();
    let empty = json!({});
    let absent = Call::tools_call(TOOL, None);
    let explicit = Call::tools_call(TOOL, Some(&empty));
    assert_eq!(absent.args_hash().unwrap(), hex_sha256(b"{}"));
    assert_eq!(absent.args_hash().unwrap(), explicit.args_hash().unwrap());
    assert_eq!(
        absent.args_hash().unwrap(),
        "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    );
    // A proof made without arguments verifies for `{}` and vice versa.
    assert!(check(&f.proof(&absent, NOW), &aat, &explicit, NOW).is_ok());
    assert!(check(&f.proof(&explicit, NOW), &aat, &absent, NOW).is_ok());
}

// ---------------------------------------------------------------------------------------------
// CallVerifier
// ---------------------------------------------------------------------------------------------

#[test]
fn call_verifier_requires_an_aat() {
    let f = Fixture::ed();
    let clock = Arc::new(FixedClock::new(NOW));
    let verifier = f.verifier(&clock);
    let call = Call::tools_call(TOOL, None);
    let proof = f.proof(&call, NOW);
    for proof in [None, Some(proof.as_str())] {
        let e = call_refused(verifier.verify(None, proof, &call));
        assert_eq!(e, CallError::AatRequired);
        let rpc = jsonrpc_error(&e, Some("write_file"));
        assert_eq!(rpc.code.code(), -32015);
        assert_eq!(rpc.code.message(), "AAT required");
        assert_eq!(rpc.data["tool"], "write_file");
        assert_eq!(rpc.data["reason"], "Agent Authentication Token required for this proxy");
        assert!(rpc.data.get("aat_error").is_none());
    }
}

#[test]
fn call_verifier_reuses_the_cached_aat_with_a_new_proof() {
    let f = Fixture::ed();
    let clock = Arc::new(FixedClock::new(NOW));
    let verifier = f.verifier(&clock);
    let hosts = args_hosts();
    let call = Call::tools_call(TOOL, Some(&hosts));
    let first = verifier
        .verify(Some(&f.aat), Some(&f.proof(&call, NOW)), &call)
        .unwrap();
    clock.advance(60);
    let second = verifier
        .verify(Some(&f.aat), Some(&f.proof(&call, NOW + 60)), &call)
        .unwrap();
    assert!(Arc::ptr_eq(&first, &second), "the second call is served from the cache");
    // Another tool call, another proof.
    let other = Call::tools_call("list_dir", None);
    let third = verifier
        .verify(Some(&f.aat), Some(&f.proof(&other, NOW + 60)), &other)
        .unwrap();
    assert!(Arc::ptr_eq(&first, &third));
    assert!(third.check_tool("list_dir").is_err());

    // After clear_cache the token is verified again (a new VerifiedAat).
    verifier.clear_cache();
    let fourth = verifier
        .verify(Some(&f.aat), Some(&f.proof(&call, NOW + 60)), &call)
        .unwrap();
    assert!(!Arc::ptr_eq(&first, &fourth));
    assert_eq!(fourth.claims(), first.claims());
}

#[test]
fn call_verifier_checks_revocation_on_every_call() {
    let f = Fixture::ed();
    let clock = Arc::new(FixedClock::new(NOW));
    let revocations = Arc::new(Revocations::default());
    let verifier = f.verifier(&clock).with_revocation(revocations.clone());
    let call = Call::tools_call(TOOL, None);
    assert!(verifier.verify(Some(&f.aat), Some(&f.proof(&call, NOW)), &call).is_ok());

    // Revoked after the AAT was cached.
    revocations.tokens.write().unwrap().insert(f.claims.jti.to_string());
    let e = call_refused(verifier.verify(Some(&f.aat), Some(&f.proof(&call, NOW)), &call));
    assert_eq!(e, CallError::Aat(AatError::Revoked(RevokedBy::Token)));
    let rpc = jsonrpc_error(&e, Some(TOOL));
    assert_eq!(rpc.code.code(), -32016);
    assert_eq!(rpc.data["aat_error"], "aat_revoked");

    revocations.tokens.write().unwrap().clear();
    revocations.sessions.write().unwrap().insert(SESSION.into());
    let e = call_refused(verifier.verify(Some(&f.aat), Some(&f.proof(&call, NOW)), &call));
    assert_eq!(e, CallError::Aat(AatError::Revoked(RevokedBy::Session)));

    revocations.sessions.write().unwrap().clear();
    revocations.agents.write().unwrap().insert(f.id.to_string());
    let e = call_refused(verifier.verify(Some(&f.aat), Some(&f.proof(&call, NOW)), &call));
    assert_eq!(e, CallError::Aat(AatError::Revoked(RevokedBy::Agent)));

    revocations.agents.write().unwrap().clear();
    revocations.users.write().unwrap().insert(USER.into(), NOW);
    let e = call_refused(verifier.verify(Some(&f.aat), Some(&f.proof(&call, NOW)), &call));
    assert_eq!(e, CallError::Aat(AatError::Revoked(RevokedBy::User)));
    let rpc = jsonrpc_error(&e, Some(TOOL));
    assert_eq!(rpc.code.code(), -32019);
    assert_eq!(rpc.data["aat_error"], "aat_revoked");

    // Lifted again: accepted.
    revocations.users.write().unwrap().clear();
    assert!(verifier.verify(Some(&f.aat), Some(&f.proof(&call, NOW)), &call).is_ok());
}

#[test]
fn call_verifier_checks_the_agent_record_on_every_call() {
    let f = Fixture::ed();
    let clock = Arc::new(FixedClock::new(NOW));
    let agents = Arc::new(Agents::default());
    agents.set(&f.id, AgentStatus::Active, f.agent.key_id());
    let verifier = f.verifier(&clock).with_agent_records(agents.clone());
    let call = Call::tools_call(TOOL, None);
    assert!(verifier.verify(Some(&f.aat), Some(&f.proof(&call, NOW)), &call).is_ok());

    agents.set(&f.id, AgentStatus::Suspended, f.agent.key_id());
    let e = call_refused(verifier.verify(Some(&f.aat), Some(&f.proof(&call, NOW)), &call));
    assert_eq!(e, CallError::Aat(AatError::AgentInactive(AgentStatus::Suspended)));
    let rpc = jsonrpc_error(&e, Some(TOOL));
    assert_eq!(rpc.code.code(), -32016);
    assert_eq!(rpc.data["aat_error"], "agent_inactive");

    agents.set(&f.id, AgentStatus::Revoked, f.agent.key_id());
    let e = call_refused(verifier.verify(Some(&f.aat), Some(&f.proof(&call, NOW)), &call));
    assert_eq!(e, CallError::Aat(AatError::AgentInactive(AgentStatus::Revoked)));

    agents.set(&f.id, AgentStatus::Active, ed25519("agent-rotated").key_id());
    let e = call_refused(verifier.verify(Some(&f.aat), Some(&f.proof(&call, NOW)), &call));
    assert_eq!(e, CallError::Aat(AatError::AgentKeyMismatch));
    assert_eq!(jsonrpc_error(&e, None).data["aat_error"], "agent_key_mismatch");

    agents.0.write().unwrap().clear();
    let e = call_refused(verifier.verify(Some(&f.aat), Some(&f.proof(&call, NOW)), &call));
    assert_eq!(
        e,
        CallError::Aat(AatError::UnknownAgent {
            agent_id: f.id.to_string()
        })
    );
    let rpc = jsonrpc_error(&e, Some(TOOL));
    assert_eq!(rpc.code.code(), -32018);
    assert_eq!(rpc.code.message(), "Agent not registered");
    assert_eq!(rpc.data["aat_error"], "unknown_agent");
    assert_eq!(rpc.data["agent_id"], f.id.as_str());
}

#[test]
fn call_verifier_rechecks_time_on_cached_aats() {
    let f = Fixture::ed();
    let clock = Arc::new(FixedClock::new(NOW));
    let verifier = f.verifier(&clock);
    let call = Call::tools_call(TOOL, None);
    assert!(verifier.verify(Some(&f.aat), Some(&f.proof(&call, NOW)), &call).is_ok());

    // exp + leeway is still accepted from the cache.
    let last = f.claims.exp + 30;
    clock.set(last);
    assert!(
        verifier
            .verify(Some(&f.aat), Some(&f.proof(&call, last)), &call)
            .is_ok()
    );

    clock.set(last + 1);
    let e = call_refused(verifier.verify(Some(&f.aat), Some(&f.proof(&call, last + 1)), &call));
    assert_eq!(e, CallError::Aat(AatError::Expired));
    let rpc = jsonrpc_error(&e, Some(TOOL));
    assert_eq!(rpc.code.code(), -32016);
    assert_eq!(rpc.data["aat_error"], "aat_expired");

    // Moving the clock back does not resurrect it wrongly: it is simply valid again.
    clock.set(NOW + 10);
    assert!(
        verifier
            .verify(Some(&f.aat), Some(&f.proof(&call, NOW + 10)), &call)
            .is_ok()
    );
}

#[test]
fn call_verifier_notices_a_removed_issuer_key() {
    let f = Fixture::ed();
    let clock = Arc::new(FixedClock::new(NOW));
    let keys = Arc::new(Keys(RwLock::new(f.keys())));
    let verifier = CallVerifier::new(
        Validation::new(AUDIENCE),
        keys.clone(),
        Arc::new(InMemoryReplayCache::new(1000)),
    )
    .with_clock(clock.clone());
    let call = Call::tools_call(TOOL, None);
    assert!(verifier.verify(Some(&f.aat), Some(&f.proof(&call, NOW)), &call).is_ok());

    // The issuer stops publishing the key: the cached token is no longer accepted.
    *keys.0.write().unwrap() = JwkSet::from_keys([ed25519("issuer-next").public_key()]);
    let e = call_refused(verifier.verify(Some(&f.aat), Some(&f.proof(&call, NOW)), &call));
    assert_eq!(e, CallError::Aat(AatError::UnknownSigningKey));
    assert_eq!(jsonrpc_error(&e, None).data["aat_error"], "unknown_signing_key");

    // Published again: accepted again.
    *keys.0.write().unwrap() = f.keys();
    assert!(verifier.verify(Some(&f.aat), Some(&f.proof(&call, NOW)), &call).is_ok());
}

#[test]
fn call_verifier_notices_a_different_key_under_the_same_kid() {
    let issuer = ed25519("issuer");
    let agent = ed25519("agent");
    let id = agent_id("agent");
    let claims = claims_for(&agent, &id, NOW);
    let header = json!({"alg": "EdDSA", "typ": "aat+jwt", "kid": "issuer-2026"});
    let aat = sign_raw(&header, &serde_json::to_value(&claims).unwrap(), &issuer);
    let jwks_with = |key: &KeyPair| -> JwkSet {
        let mut jwk = serde_json::to_value(key.public_key().to_jwk()).unwrap();
        jwk["kid"] = json!("issuer-2026");
        JwkSet::from_jwks(&serde_json::from_value::<Jwks>(json!({"keys": [jwk]})).unwrap()).unwrap()
    };
    let keys = Arc::new(Keys(RwLock::new(jwks_with(&issuer))));
    let clock = Arc::new(FixedClock::new(NOW));
    let verifier = CallVerifier::new(
        Validation::new(AUDIENCE),
        keys.clone(),
        Arc::new(InMemoryReplayCache::new(1000)),
    )
    .with_clock(clock);
    let call = Call::tools_call(TOOL, None);
    let proof = |iat| create_proof(&agent, &aat, &call, AUDIENCE, iat).unwrap();
    assert!(verifier.verify(Some(&aat), Some(&proof(NOW)), &call).is_ok());

    *keys.0.write().unwrap() = jwks_with(&ed25519("impostor"));
    let e = call_refused(verifier.verify(Some(&aat), Some(&proof(NOW)), &call));
    assert_eq!(
        e,
        CallError::Aat(AatError::SignatureInvalid("signature does not verify"))
    );
}

#[test]
fn call_verifier_single_use_refuses_a_second_call_with_the_same_aat() {
    let f = Fixture::ed();
    let clock = Arc::new(FixedClock::new(NOW));
    let verifier = f.verifier(&clock).single_use(true);
    let call = Call::tools_call(TOOL, None);
    assert!(verifier.verify(Some(&f.aat), Some(&f.proof(&call, NOW)), &call).is_ok());
    let e = call_refused(verifier.verify(Some(&f.aat), Some(&f.proof(&call, NOW)), &call));
    assert_eq!(e, CallError::Aat(AatError::ReplayDetected));
    let rpc = jsonrpc_error(&e, Some(TOOL));
    assert_eq!(rpc.code.code(), -32016);
    assert_eq!(rpc.data["aat_error"], "replay_detected");
    // A new AAT for the same agent is accepted.
    let fresh = encode_aat(&claims_for(&f.agent, &f.id, NOW), &f.issuer).unwrap();
    let proof = create_proof(&f.agent, &fresh, &call, AUDIENCE, NOW).unwrap();
    assert!(verifier.verify(Some(&fresh), Some(&proof), &call).is_ok());
}

#[test]
fn another_agents_proof_jti_cannot_burn_a_single_use_aat() {
    let victim = Fixture::ed();
    let clock = Arc::new(FixedClock::new(NOW));
    let verifier = victim.verifier(&clock).single_use(true);
    let call = Call::tools_call(TOOL, None);

    // A different, legitimately registered agent with its own AAT from the same issuer.
    let mallory = ed25519("mallory");
    let mallory_id = agent_id("mallory");
    let mallory_aat = encode_aat(&claims_for(&mallory, &mallory_id, NOW), &victim.issuer).unwrap();
    let jti = victim.claims.jti.clone(); // jtis are logged, so assume it is known
    let proof = create_proof_with_jti(&mallory, &mallory_aat, &call, AUDIENCE, NOW, jti).unwrap();
    assert!(verifier.verify(Some(&mallory_aat), Some(&proof), &call).is_ok());

    // The victim's first use of its single-use AAT must succeed.
    let result = verifier.verify(Some(&victim.aat), Some(&victim.proof(&call, NOW)), &call);
    assert!(result.is_ok(), "{:?}", result.err());
}

#[test]
fn call_verifier_without_required_proof_still_checks_a_present_one() {
    let f = Fixture::ed();
    let clock = Arc::new(FixedClock::new(NOW));
    let verifier = f.verifier(&clock).require_proof(false);
    let hosts = args_hosts();
    let shadow = json!({"path": "/etc/shadow"});
    let call = Call::tools_call(TOOL, Some(&hosts));
    assert!(verifier.verify(Some(&f.aat), None, &call).is_ok());
    assert!(verifier.verify(Some(&f.aat), None, &call).is_ok());

    let proof = f.proof(&Call::tools_call(TOOL, Some(&hosts)), NOW);
    let e = call_refused(verifier.verify(Some(&f.aat), Some(&proof), &Call::tools_call(TOOL, Some(&shadow))));
    assert_eq!(e, CallError::Proof(ProofError::Mismatch(ProofMismatch::Arguments)));
    let stolen = create_proof(&ed25519("attacker"), &f.aat, &call, AUDIENCE, NOW).unwrap();
    let e = call_refused(verifier.verify(Some(&f.aat), Some(&stolen), &call));
    assert_eq!(e, CallError::Proof(ProofError::Mismatch(ProofMismatch::Key)));
    // The good proof, once; then it is a replay.
    assert!(verifier.verify(Some(&f.aat), Some(&proof), &call).is_ok());
    let e = call_refused(verifier.verify(Some(&f.aat), Some(&proof), &call));
    assert_eq!(e, CallError::Proof(ProofError::Replayed));
    // The AAT itself is still verified without a proof.
    let e = call_refused(verifier.verify(Some("not.an.aat"), None, &call));
    assert_eq!(e.to_string(), "malformed AAT: a segment is not unpadded base64url");
    assert!(matches!(e, CallError::Aat(AatError::Malformed(_))));
}

#[test]
fn call_verifier_refuses_bad_aats_with_their_aat_error() {
    let f = Fixture::ed();
    let clock = Arc::new(FixedClock::new(NOW));
    let call = Call::tools_call(TOOL, None);

    // Untrusted issuer → -32020.
    let verifier = CallVerifier::new(
        Validation::new(AUDIENCE).with_trusted_issuers(["https://other.example"]),
        Arc::new(f.keys()),
        Arc::new(InMemoryReplayCache::new(1000)),
    )
    .with_clock(clock.clone());
    let e = call_refused(verifier.verify(Some(&f.aat), Some(&f.proof(&call, NOW)), &call));
    assert_eq!(e, CallError::Aat(AatError::UntrustedIssuer { issuer: ISSUER.into() }));
    let rpc = jsonrpc_error(&e, Some(TOOL));
    assert_eq!(rpc.code.code(), -32020);
    assert_eq!(rpc.code.message(), "Issuer untrusted");
    assert_eq!(rpc.data["aat_error"], "untrusted_issuer");
    assert_eq!(rpc.data["issuer"], ISSUER);

    // Wrong audience: the AAT is checked before the proof.
    let verifier = CallVerifier::new(
        Validation::new("git-proxy"),
        Arc::new(f.keys()),
        Arc::new(InMemoryReplayCache::new(1000)),
    )
    .with_clock(clock.clone());
    let e = call_refused(verifier.verify(Some(&f.aat), Some(&f.proof(&call, NOW)), &call));
    assert_eq!(e, CallError::Aat(AatError::AudienceMismatch));
    assert_eq!(jsonrpc_error(&e, None).data["aat_error"], "audience_mismatch");

    // A tampered AAT with a proof made for it.
    let verifier = f.verifier(&clock);
    let mut chars: Vec<char> = f.aat.chars().collect();
    let last = chars.len() - 5;
    chars[last] = if chars[last] == 'A' { 'B' } else { 'A' };
    let tampered: String = chars.into_iter().collect();
    let proof = create_proof(&f.agent, &tampered, &call, AUDIENCE, NOW).unwrap();
    let e = call_refused(verifier.verify(Some(&tampered), Some(&proof), &call));
    assert_eq!(
        e,
        CallError::Aat(AatError::SignatureInvalid("signature does not verify"))
    );
    let rpc = jsonrpc_error(&e, Some(TOOL));
    assert_eq!(rpc.code.code(), -32016);
    assert_eq!(rpc.data["aat_error"], "signature_invalid");
}

#[test]
fn proof_audience_follows_the_validation_audience() {
    // CallVerifier::new requires proofs to name the AAT audience.
    let f = Fixture::ed();
    let clock = Arc::new(FixedClock::new(NOW));
    let verifier = f.verifier(&clock);
    let call = Call::tools_call(TOOL, None);
    let proof = create_proof(&f.agent, &f.aat, &call, "git-proxy", NOW).unwrap();
    let e = call_refused(verifier.verify(Some(&f.aat), Some(&proof), &call));
    assert_eq!(e, CallError::Proof(ProofError::Mismatch(ProofMismatch::Audience)));
}

#[test]
fn proof_checks_do_not_depend_on_verifier_cache_state() {
    // After a first good call binds the agent key to the cached AAT, later proofs must be
    // judged exactly as on a fresh verifier: a stolen AAT is still useless.
    let f = Fixture::ed();
    let clock = Arc::new(FixedClock::new(NOW));
    let verifier = f.verifier(&clock);
    let call = Call::tools_call(TOOL, None);
    assert!(verifier.verify(Some(&f.aat), Some(&f.proof(&call, NOW)), &call).is_ok());
    for attacker in [ed25519("attacker"), p256("attacker")] {
        let proof = create_proof(&attacker, &f.aat, &call, AUDIENCE, NOW).unwrap();
        let e = call_refused(verifier.verify(Some(&f.aat), Some(&proof), &call));
        assert_eq!(e, CallError::Proof(ProofError::Mismatch(ProofMismatch::Key)));
    }
    // An EC jwk carrying the Ed25519 agent's x coordinate is not the agent key.
    let mut header = proof_header(&f.agent);
    header["jwk"] = json!({"kty": "EC", "crv": "P-256", "x": header["jwk"]["x"].clone()});
    let payload = serde_json::to_value(proof_claims(&f.aat, &call, AUDIENCE, NOW)).unwrap();
    let proof = sign_raw(&header, &payload, &f.agent);
    let e = call_refused(verifier.verify(Some(&f.aat), Some(&proof), &call));
    assert_eq!(
        e,
        CallError::Proof(ProofError::Invalid("`jwk` is not a valid public key"))
    );
}

#[test]
fn jwk_use_and_alg_are_checked_even_after_the_key_was_bound() {
    let f = Fixture::ed();
    let aat = f.verified();
    let call = Call::tools_call(TOOL, None);
    let replay = InMemoryReplayCache::new(1000);
    let validation = ProofValidation::new(AUDIENCE);
    let bad_proof = |member: &str, value: &str| {
        let mut header = proof_header(&f.agent);
        header["jwk"][member] = json!(value);
        let payload = serde_json::to_value(proof_claims(&f.aat, &call, AUDIENCE, NOW)).unwrap();
        sign_raw(&header, &payload, &f.agent)
    };
    // Before any good proof: refused.
    assert_eq!(
        verify_proof(&bad_proof("use", "enc"), &aat, &call, &validation, &replay, NOW),
        Err(ProofError::Invalid("`jwk` is not a valid public key"))
    );
    // A good proof binds the key to this VerifiedAat ...
    assert!(verify_proof(&f.proof(&call, NOW), &aat, &call, &validation, &replay, NOW).is_ok());
    // ... which must not change the verdict on the same kind of bad proof.
    for (member, value) in [("use", "enc"), ("alg", "ES256")] {
        assert_eq!(
            verify_proof(&bad_proof(member, value), &aat, &call, &validation, &replay, NOW),
            Err(ProofError::Invalid("`jwk` is not a valid public key")),
            "{member}: {value}"
        );
    }
}

#[test]
fn jsonrpc_mapping_spot_checks() {
    let cases: Vec<(CallError, i32, &str)> = vec![
        (ProofError::Missing.into(), -32016, "proof_missing"),
        (ProofError::Invalid("x").into(), -32016, "proof_invalid"),
        (
            ProofError::Mismatch(ProofMismatch::Arguments).into(),
            -32016,
            "proof_mismatch",
        ),
        (ProofError::Replayed.into(), -32016, "proof_replayed"),
        (ProofError::ReplayCacheFull.into(), -32016, "proof_replayed"),
        (ProofError::ReplayStoreUnavailable.into(), -32016, "proof_replayed"),
        (
            AatError::UntrustedIssuer {
                issuer: "https://evil".into(),
            }
            .into(),
            -32020,
            "untrusted_issuer",
        ),
        (
            AatError::UnknownAgent {
                agent_id: "ag_x".into(),
            }
            .into(),
            -32018,
            "unknown_agent",
        ),
        (AatError::Expired.into(), -32016, "aat_expired"),
        (AatError::ReplayDetected.into(), -32016, "replay_detected"),
    ];
    for (error, code, aat_error) in cases {
        let rpc = jsonrpc_error(&error, Some(TOOL));
        assert_eq!(rpc.code.code(), code, "{error:?}");
        assert_eq!(rpc.data["aat_error"], aat_error, "{error:?}");
        assert_eq!(rpc.data["tool"], TOOL);
        assert!(rpc.data["reason"].as_str().is_some_and(|r| !r.is_empty()));
        let line = error_response(None, rpc.code, Some(rpc.data));
        let wire = &serde_json::from_str::<Value>(&line).unwrap()["error"];
        assert_eq!(wire["code"], code);
        assert_eq!(wire["data"]["aat_error"], aat_error);
    }
}
