//! Integration tests of AAT verification (spec 7.5.3, error strings of spec 11.2), of issuing
//! (`encode_aat`), and of the key formats the verifier relies on (JWK, JWK sets, PEM/DER).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Seeds;
use std::collections::HashMap;

use aip_aat::aid::AgentStatus;
use aip_aat::clock::FixedClock;
use aip_aat::ids::{AgentId, Jti, KeyId};
use aip_aat::jws;
use aip_aat::keys::{
    Algorithm, IssuerKeys, Jwk, JwkSet, JwkSetError, Jwks, KeyError, KeyPair, KeyResolver, PublicKey, Signer,
};
use aip_aat::replay::InMemoryReplayCache;
use aip_aat::revocation::{RevocationIndex, RevocationList};
use aip_aat::token::{
    AAT_TYP, AAT_VERSION, AatClaims, AatError, AgentClaims, Audience, AuthMethod, Capabilities, Confirmation,
    ContextClaims, EncodeError, MAX_AAT_LEN, RevokedBy, UnverifiedAat, UserBinding, Validation, VerifiedAat,
    encode_aat,
};
use aip_aat::validate::{AgentRecord, AgentRecords, PreviousKey, RevocationView, ValidationContext, validate_aat};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

/// 2026-02-02T02:40:00Z.
const NOW: i64 = 1_770_000_000;
const NOW_RFC3339: &str = "2026-02-02T02:40:00Z";
const ISSUER: &str = "https://issuer.aip.example";
const AUDIENCE: &str = "files-proxy";
const SESSION: &str = "sess-1";
const USER: &str = "alice@example.com";
const LEEWAY: i64 = 30;
const DAY: i64 = 24 * 60 * 60;

const SEEDS: Seeds = Seeds("aip-aat validation tests");

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

/// Valid claims for `agent`, issued at `iat`, expiring at `exp`, for [`AUDIENCE`].
fn claims_for(agent: &KeyPair, iat: i64, exp: i64) -> AatClaims {
    let id = agent_id("agent");
    AatClaims {
        aat_version: AAT_VERSION.into(),
        iss: ISSUER.into(),
        sub: id.clone(),
        aud: Audience::one(AUDIENCE),
        iat,
        exp,
        nbf: None,
        jti: Jti::random().unwrap(),
        agent: AgentClaims {
            id,
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
            tools: vec!["read_file".into()],
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

/// Claims issued at [`NOW`], valid for 15 minutes.
fn claims(agent: &KeyPair) -> AatClaims {
    claims_for(agent, NOW, NOW + 900)
}

fn claims_json(claims: &AatClaims) -> Value {
    serde_json::to_value(claims).unwrap()
}

/// Signs any JSON payload as an AAT (header `{alg, typ: aat+jwt, kid}`), bypassing the checks
/// of `encode_aat`.
fn sign_payload(issuer: &dyn Signer, payload: &Value) -> String {
    jws::sign(AAT_TYP, &serde_json::to_vec(payload).unwrap(), issuer, false).unwrap()
}

/// Signs `payload` under an exact header.
fn sign_with_header(header: &Value, payload: &Value, signer: &dyn Signer) -> String {
    jws::sign_raw(
        &serde_json::to_vec(header).unwrap(),
        &serde_json::to_vec(payload).unwrap(),
        signer,
    )
    .unwrap()
}

fn aat_header(signer: &dyn Signer) -> Value {
    json!({"alg": signer.algorithm().as_str(), "typ": AAT_TYP, "kid": signer.key_id().as_str()})
}

fn keys_of(signers: &[&KeyPair]) -> JwkSet {
    JwkSet::from_keys(signers.iter().map(|k| k.public_key()))
}

/// `UnverifiedAat::parse(token)?.verify(..)` at `now` with the default validation.
fn verify_at(token: &str, keys: &dyn KeyResolver, now: i64) -> Result<VerifiedAat, AatError> {
    verify_with(token, keys, now, &Validation::new(AUDIENCE))
}

fn verify_with(
    token: &str,
    keys: &dyn KeyResolver,
    now: i64,
    validation: &Validation,
) -> Result<VerifiedAat, AatError> {
    UnverifiedAat::parse(token)?.verify(keys, &FixedClock::new(now), validation)
}

/// The error of a result that must have failed.
#[track_caller]
fn refused<T: std::fmt::Debug>(result: Result<T, AatError>) -> AatError {
    match result {
        Ok(v) => panic!("expected the token to be refused, but it was accepted: {v:?}"),
        Err(e) => e,
    }
}

#[track_caller]
fn assert_refused(result: Result<VerifiedAat, AatError>, expected: &AatError, aat_error: &str) {
    let e = refused(result);
    assert_eq!(&e, expected);
    assert_eq!(e.aat_error(), aat_error, "{e:?}");
}

#[track_caller]
fn assert_malformed(result: Result<VerifiedAat, AatError>, why: &'static str) {
    assert_refused(result, &AatError::Malformed(why), "malformed_aat");
}

const NOT_THREE: &str = "not a compact JWS (three base64url segments)";
const NOT_B64: &str = "a segment is not unpadded base64url";
const NOT_OBJECT: &str = "header or payload is not a JSON object";
const PAYLOAD_NOT_OBJECT: &str = "payload is not a JSON object";
const BAD_CLAIMS: &str = "required claims are missing or have the wrong type";
const BAD_TYP: &str = "`typ` is not `aat+jwt`";
const ALG_NOT_ALLOWED: &str = "algorithm is not allowed";
const ALG_NOT_KEY: &str = "algorithm does not match the issuer key";
const SIG_FAILS: &str = "signature does not verify";

/// Splits a compact token into its three segments.
fn segments(token: &str) -> [String; 3] {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    [parts[0].to_owned(), parts[1].to_owned(), parts[2].to_owned()]
}

fn join(h: &str, p: &str, s: &str) -> String {
    format!("{h}.{p}.{s}")
}

/// A registry directory test double.
#[derive(Default)]
struct Directory(HashMap<AgentId, AgentRecord>);

impl Directory {
    fn with(agent: &AgentId, record: AgentRecord) -> Self {
        let mut map = HashMap::new();
        map.insert(agent.clone(), record);
        Self(map)
    }
}

impl AgentRecords for Directory {
    fn agent(&self, agent_id: &AgentId) -> Option<AgentRecord> {
        self.0.get(agent_id).cloned()
    }
}

fn record(status: AgentStatus, key: &KeyId) -> AgentRecord {
    AgentRecord {
        status,
        public_key_thumbprint: key.clone(),
        previous_keys: Vec::new(),
    }
}

/// A revocation index built from the wire form of a list (`revoked_*` members of `extra`).
fn revocations(extra: Value) -> RevocationIndex {
    let mut list = json!({"version": 7, "updated_at": NOW_RFC3339});
    for (k, v) in extra.as_object().unwrap() {
        list[k] = v.clone();
    }
    let list: RevocationList = serde_json::from_value(list).unwrap();
    RevocationIndex::from(&list)
}

// ---------------------------------------------------------------------------------------------
// Valid tokens
// ---------------------------------------------------------------------------------------------

#[test]
fn valid_eddsa_token_verifies_and_exposes_claims() {
    let issuer = ed25519("issuer");
    let agent = ed25519("agent");
    let claims = claims(&agent);
    let token = encode_aat(&claims, &issuer).unwrap();

    let verified = verify_at(&token, &keys_of(&[&issuer]), NOW).unwrap();
    assert_eq!(verified.claims(), &claims);
    assert_eq!(verified.algorithm(), Algorithm::EdDSA);
    assert_eq!(verified.key_id(), issuer.key_id());
    assert_eq!(verified.issuer_key(), issuer.public_key());
    assert_eq!(verified.jti(), &claims.jti);
    assert_eq!(verified.agent_id(), &agent_id("agent"));
    assert_eq!(verified.confirmation_thumbprint(), agent.key_id());
    assert_eq!(verified.claims().capabilities.tools, ["read_file"]);

    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    assert_eq!(verified.token_hash(), &digest);
    assert_eq!(verified.ath(), b64(digest));
    assert_eq!(verified.ath().len(), 43);

    let raw: Value = serde_json::from_slice(verified.payload_json()).unwrap();
    assert_eq!(raw, claims_json(&claims));

    // The header is exactly {alg, typ, kid}.
    let header: Value = serde_json::from_slice(&B64.decode(segments(&token)[0].as_bytes()).unwrap()).unwrap();
    assert_eq!(
        header,
        json!({"alg": "EdDSA", "typ": "aat+jwt", "kid": issuer.key_id().as_str()})
    );
}

#[test]
fn valid_es256_token_verifies_and_exposes_claims() {
    let issuer = p256("issuer-p256");
    let agent = p256("agent-p256");
    let claims = claims(&agent);
    let token = encode_aat(&claims, &issuer).unwrap();

    let verified = verify_at(&token, &keys_of(&[&issuer]), NOW).unwrap();
    assert_eq!(verified.claims(), &claims);
    assert_eq!(verified.algorithm(), Algorithm::ES256);
    assert_eq!(verified.key_id(), issuer.key_id());
    assert_eq!(verified.ath(), b64(Sha256::digest(token.as_bytes())));
    assert_eq!(verified.confirmation_thumbprint(), agent.key_id());
    // A 64-byte r||s signature, not DER.
    assert_eq!(B64.decode(segments(&token)[2].as_bytes()).unwrap().len(), 64);
}

#[test]
fn a_single_public_key_resolves_its_own_thumbprint() {
    let issuer = ed25519("issuer");
    let token = encode_aat(&claims(&ed25519("agent")), &issuer).unwrap();
    assert!(verify_at(&token, issuer.public_key(), NOW).is_ok());
    assert_refused(
        verify_at(&token, ed25519("other").public_key(), NOW),
        &AatError::UnknownSigningKey,
        "unknown_signing_key",
    );
}

#[test]
fn validate_aat_runs_every_step_on_a_good_token() {
    let issuer = ed25519("issuer");
    let agent = ed25519("agent");
    let claims = claims(&agent);
    let token = encode_aat(&claims, &issuer).unwrap();
    let keys = keys_of(&[&issuer]);
    let clock = FixedClock::new(NOW);
    let view = revocations(json!({}));
    let directory = Directory::with(&claims.agent.id, record(AgentStatus::Active, agent.key_id()));
    let replay = InMemoryReplayCache::new(1000);
    let ctx = ValidationContext {
        revocation: Some(&view),
        agents: Some(&directory),
        replay: Some(&replay),
        ..ValidationContext::new(&keys, &clock)
    };
    let verified = validate_aat(&token, &Validation::new(AUDIENCE), &ctx).unwrap();
    assert_eq!(verified.claims(), &claims);
    assert_eq!(replay.len(), 1);
}

#[test]
fn typ_is_compared_as_a_media_type() {
    // RFC 7515 §4.1.9: case-insensitive, and the `application/` prefix may be present.
    let issuer = ed25519("issuer");
    let payload = claims_json(&claims(&ed25519("agent")));
    for typ in ["aat+jwt", "AAT+JWT", "application/aat+jwt", "Application/Aat+Jwt"] {
        let header = json!({"alg": "EdDSA", "typ": typ, "kid": issuer.key_id().as_str()});
        let token = sign_with_header(&header, &payload, &issuer);
        assert!(verify_at(&token, &keys_of(&[&issuer]), NOW).is_ok(), "typ {typ}");
    }
}

#[test]
fn unknown_claims_and_header_members_are_ignored() {
    let issuer = ed25519("issuer");
    let mut payload = claims_json(&claims(&ed25519("agent")));
    payload["x-extension"] = json!({"anything": [1, 2, 3]});
    let header = json!({"alg": "EdDSA", "typ": "aat+jwt", "kid": issuer.key_id().as_str(), "x5u": "https://x"});
    let token = sign_with_header(&header, &payload, &issuer);
    let verified = verify_at(&token, &keys_of(&[&issuer]), NOW).unwrap();
    let raw: Value = serde_json::from_slice(verified.payload_json()).unwrap();
    assert_eq!(raw["x-extension"]["anything"][2], 3);
}

// ---------------------------------------------------------------------------------------------
// malformed_aat
// ---------------------------------------------------------------------------------------------

#[test]
fn malformed_not_three_segments() {
    let issuer = ed25519("issuer");
    let keys = keys_of(&[&issuer]);
    let token = encode_aat(&claims(&ed25519("agent")), &issuer).unwrap();
    let [h, p, s] = segments(&token);
    for bad in [
        String::new(),
        "garbage".to_owned(),
        format!("{h}.{p}"),
        format!("{h}.{p}.{s}."),
        format!("{h}.{p}.{s}.{s}"),
        format!(".{h}.{p}.{s}"),
        format!("{h}..{p}.{s}"),
    ] {
        assert_malformed(verify_at(&bad, &keys, NOW), NOT_THREE);
        assert_eq!(
            UnverifiedAat::parse(&bad).unwrap_err(),
            AatError::Malformed(NOT_THREE),
            "{bad}"
        );
    }
}

#[test]
fn malformed_bad_base64() {
    let issuer = ed25519("issuer");
    let keys = keys_of(&[&issuer]);
    let token = encode_aat(&claims(&ed25519("agent")), &issuer).unwrap();
    let [h, p, s] = segments(&token);
    // Standard-alphabet characters, spaces, and non-base64 characters in each segment.
    let corrupt = |seg: &str, c: char| {
        let mut v: Vec<char> = seg.chars().collect();
        v[5] = c;
        v.into_iter().collect::<String>()
    };
    for c in ['+', '/', '*', ' ', '!', '\u{e9}'] {
        assert_malformed(verify_at(&join(&corrupt(&h, c), &p, &s), &keys, NOW), NOT_B64);
        assert_malformed(verify_at(&join(&h, &corrupt(&p, c), &s), &keys, NOW), NOT_B64);
        assert_malformed(verify_at(&join(&h, &p, &corrupt(&s, c)), &keys, NOW), NOT_B64);
    }
    // A segment whose length is impossible for base64 (4k + 1).
    let mut p1 = p.clone();
    while p1.len() % 4 != 1 {
        p1.push('A');
    }
    assert_malformed(verify_at(&join(&h, &p1, &s), &keys, NOW), NOT_B64);
}

#[test]
fn malformed_non_canonical_trailing_bits() {
    // The 64-byte signature encodes to 86 characters; the last one carries 2 unused bits,
    // which must be zero. Changing only those bits is a non-canonical encoding.
    let issuer = ed25519("issuer");
    let keys = keys_of(&[&issuer]);
    let token = encode_aat(&claims(&ed25519("agent")), &issuer).unwrap();
    let [h, p, s] = segments(&token);
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = s.chars().last().unwrap();
    let idx = alphabet.find(last).unwrap();
    let sibling = alphabet.chars().nth(idx ^ 1).unwrap();
    let s2 = format!("{}{}", &s[..s.len() - 1], sibling);
    assert_malformed(verify_at(&join(&h, &p, &s2), &keys, NOW), NOT_B64);
}

#[test]
fn malformed_padding_in_any_segment() {
    let issuer = ed25519("issuer");
    let keys = keys_of(&[&issuer]);
    let token = encode_aat(&claims(&ed25519("agent")), &issuer).unwrap();
    let [h, p, s] = segments(&token);
    let pad = |seg: &str| {
        let mut padded = seg.to_owned();
        padded.push('=');
        while !padded.len().is_multiple_of(4) {
            padded.push('=');
        }
        padded
    };
    assert_malformed(verify_at(&join(&pad(&h), &p, &s), &keys, NOW), NOT_B64);
    assert_malformed(verify_at(&join(&h, &pad(&p), &s), &keys, NOW), NOT_B64);
    assert_malformed(verify_at(&join(&h, &p, &pad(&s)), &keys, NOW), NOT_B64);
    // The signature segment (86 chars) with its standard padding "==".
    assert_malformed(verify_at(&join(&h, &p, &format!("{s}==")), &keys, NOW), NOT_B64);
}

#[test]
fn malformed_header_not_json() {
    let issuer = ed25519("issuer");
    let keys = keys_of(&[&issuer]);
    let token = encode_aat(&claims(&ed25519("agent")), &issuer).unwrap();
    let [_, p, s] = segments(&token);
    for header in [
        b"not json".as_slice(),
        b"{\"alg\":\"EdDSA\",\"typ\":\"aat+jwt\"".as_slice(),
        b"\"aat+jwt\"".as_slice(),
        b"null".as_slice(),
        b"42".as_slice(),
        b"".as_slice(),
        // `alg` is required, and must be a string.
        b"{\"typ\":\"aat+jwt\"}".as_slice(),
        b"{\"alg\":5,\"typ\":\"aat+jwt\"}".as_slice(),
        // `typ` of the wrong type.
        b"{\"alg\":\"EdDSA\",\"typ\":7}".as_slice(),
    ] {
        let bad = join(&b64(header), &p, &s);
        assert_malformed(verify_at(&bad, &keys, NOW), NOT_OBJECT);
    }
}

#[test]
fn malformed_header_with_duplicate_members() {
    // Parser differentials on duplicate members are a classic JOSE pitfall: refuse them.
    let issuer = ed25519("issuer");
    let keys = keys_of(&[&issuer]);
    let payload = serde_json::to_vec(&claims_json(&claims(&ed25519("agent")))).unwrap();
    let kid = issuer.key_id().as_str();
    let header = format!(r#"{{"alg":"EdDSA","alg":"none","typ":"aat+jwt","kid":"{kid}"}}"#);
    let token = jws::sign_raw(header.as_bytes(), &payload, &issuer).unwrap();
    assert_malformed(verify_at(&token, &keys, NOW), NOT_OBJECT);
}

#[test]
fn malformed_header_that_is_a_json_array() {
    // A header must be a JSON object (RFC 7515 §4); an array is not one, even if its elements
    // happen to line up with the fields the toolkit reads.
    let issuer = ed25519("issuer");
    let keys = keys_of(&[&issuer]);
    let payload = claims_json(&claims(&ed25519("agent")));
    let header = json!(["EdDSA", "aat+jwt", issuer.key_id().as_str()]);
    let token = sign_with_header(&header, &payload, &issuer);
    assert_malformed(verify_at(&token, &keys, NOW), NOT_OBJECT);
}

#[test]
fn malformed_payload_not_json_or_not_an_object() {
    let issuer = ed25519("issuer");
    let keys = keys_of(&[&issuer]);
    let header = serde_json::to_vec(&aat_header(&issuer)).unwrap();
    for payload in [
        b"not json".as_slice(),
        b"".as_slice(),
        b"\"aip/v1alpha3\"".as_slice(),
        b"42".as_slice(),
        b"null".as_slice(),
        b"true".as_slice(),
        b"[]".as_slice(),
        b"{\"aat_version\":\"aip/v1alpha3\"".as_slice(),
    ] {
        let token = jws::sign_raw(&header, payload, &issuer).unwrap();
        let e = refused(verify_at(&token, &keys, NOW));
        assert_eq!(
            e.aat_error(),
            "malformed_aat",
            "{:?}: {e:?}",
            String::from_utf8_lossy(payload)
        );
        assert_eq!(e, AatError::Malformed(PAYLOAD_NOT_OBJECT));
    }
}

#[test]
fn malformed_payload_that_is_a_short_json_array() {
    // Arrays are not JSON objects: a non-empty array payload is malformed_aat (step 1), not
    // an unsupported version (step 2).
    let issuer = ed25519("issuer");
    let keys = keys_of(&[&issuer]);
    let header = serde_json::to_vec(&aat_header(&issuer)).unwrap();
    for payload in [
        b"[1]".as_slice(),
        b"[\"aip/v1alpha3\"]".as_slice(),
        b"[null, 2]".as_slice(),
    ] {
        let token = jws::sign_raw(&header, payload, &issuer).unwrap();
        let e = refused(verify_at(&token, &keys, NOW));
        assert_eq!(
            e.aat_error(),
            "malformed_aat",
            "{:?}: {e:?}",
            String::from_utf8_lossy(payload)
        );
    }
}

#[test]
fn malformed_payload_that_is_an_array_of_valid_claims() {
    // The claims of a valid token, written as an array in field order, are not a JSON object
    // and must not be accepted as an AAT.
    let issuer = ed25519("issuer");
    let keys = keys_of(&[&issuer]);
    let header = serde_json::to_vec(&aat_header(&issuer)).unwrap();
    let c = claims(&ed25519("agent"));
    let as_array = json!([
        c.aat_version,
        c.iss,
        c.sub,
        c.aud,
        c.iat,
        c.exp,
        c.nbf,
        c.jti,
        c.agent,
        c.user_binding,
        c.capabilities,
        c.context,
        c.cnf
    ]);
    let token = jws::sign_raw(&header, &serde_json::to_vec(&as_array).unwrap(), &issuer).unwrap();
    let e = refused(verify_at(&token, &keys, NOW));
    assert_eq!(e, AatError::Malformed(PAYLOAD_NOT_OBJECT));
}

#[test]
fn malformed_wrong_or_missing_typ() {
    let issuer = ed25519("issuer");
    let keys = keys_of(&[&issuer]);
    let payload = claims_json(&claims(&ed25519("agent")));
    let kid = issuer.key_id().as_str();
    for typ in [
        "JWT",
        "jwt",
        "aip-pop+jwt",
        "aat+jwt ",
        " aat+jwt",
        "aat",
        "application/JWT",
        "",
        "aat+jwt+x",
    ] {
        let header = json!({"alg": "EdDSA", "typ": typ, "kid": kid});
        let token = sign_with_header(&header, &payload, &issuer);
        assert_malformed(verify_at(&token, &keys, NOW), BAD_TYP);
    }
    for header in [
        json!({"alg": "EdDSA", "kid": kid}),
        json!({"alg": "EdDSA", "typ": null, "kid": kid}),
    ] {
        let token = sign_with_header(&header, &payload, &issuer);
        assert_malformed(verify_at(&token, &keys, NOW), BAD_TYP);
    }
    // An AIP proof of possession is not an AAT.
    let token = jws::sign("aip-pop+jwt", &serde_json::to_vec(&payload).unwrap(), &issuer, false).unwrap();
    assert_malformed(verify_at(&token, &keys, NOW), BAD_TYP);
}

#[test]
fn malformed_crit_header() {
    let issuer = ed25519("issuer");
    let keys = keys_of(&[&issuer]);
    let payload = claims_json(&claims(&ed25519("agent")));
    let kid = issuer.key_id().as_str();
    for crit in [json!(["exp"]), json!(["b64"]), json!([]), json!("exp")] {
        let header = json!({"alg": "EdDSA", "typ": "aat+jwt", "kid": kid, "crit": crit, "exp": 1, "b64": false});
        let token = sign_with_header(&header, &payload, &issuer);
        assert_malformed(
            verify_at(&token, &keys, NOW),
            "header has `crit` extensions, none of which are supported",
        );
    }
}

#[test]
fn malformed_missing_or_mistyped_claims() {
    let issuer = ed25519("issuer");
    let keys = keys_of(&[&issuer]);
    let good = claims_json(&claims(&ed25519("agent")));
    for claim in ["jti", "iss", "sub", "aud", "iat", "exp", "agent", "context"] {
        let mut payload = good.clone();
        payload.as_object_mut().unwrap().remove(claim);
        let token = sign_payload(&issuer, &payload);
        assert_malformed(verify_at(&token, &keys, NOW), BAD_CLAIMS);
    }
    let mistyped: [(&str, Value); 12] = [
        ("iat", json!("1770000000")),
        ("exp", json!(1_770_000_900.5)),
        ("aud", json!([])),
        ("aud", json!(7)),
        ("jti", json!("")),
        ("jti", json!("has space")),
        ("sub", json!("not-an-agent-id")),
        ("iss", json!(null)),
        ("agent", json!({"id": good["sub"].clone()})),
        ("context", json!({})),
        ("cnf", json!({"jkt": ""})),
        ("nbf", json!("soon")),
    ];
    for (claim, value) in mistyped {
        let mut payload = good.clone();
        payload[claim] = value.clone();
        let token = sign_payload(&issuer, &payload);
        let e = refused(verify_at(&token, &keys, NOW));
        assert_eq!(e, AatError::Malformed(BAD_CLAIMS), "{claim} = {value}");
    }
}

#[test]
fn malformed_duplicate_claim() {
    let issuer = ed25519("issuer");
    let keys = keys_of(&[&issuer]);
    let good = serde_json::to_string(&claims_json(&claims(&ed25519("agent")))).unwrap();
    // A second `exp` member far in the future, appended after the real one.
    let payload = format!("{},\"exp\":99999999999}}", &good[..good.len() - 1]);
    let token = jws::sign_raw(
        &serde_json::to_vec(&aat_header(&issuer)).unwrap(),
        payload.as_bytes(),
        &issuer,
    )
    .unwrap();
    assert_malformed(verify_at(&token, &keys, NOW), BAD_CLAIMS);
}

#[test]
fn malformed_sub_differs_from_agent_id() {
    let issuer = ed25519("issuer");
    let mut c = claims(&ed25519("agent"));
    c.sub = agent_id("someone else");
    let token = sign_payload(&issuer, &claims_json(&c));
    assert_malformed(
        verify_at(&token, &keys_of(&[&issuer]), NOW),
        "`sub` differs from `agent.id`",
    );
}

#[test]
fn malformed_cnf_differs_from_agent_thumbprint() {
    let issuer = ed25519("issuer");
    let mut c = claims(&ed25519("agent"));
    c.cnf = Some(Confirmation {
        jkt: ed25519("attacker").key_id().clone(),
    });
    let token = sign_payload(&issuer, &claims_json(&c));
    assert_malformed(
        verify_at(&token, &keys_of(&[&issuer]), NOW),
        "`cnf.jkt` differs from `agent.public_key_thumbprint`",
    );
}

#[test]
fn malformed_exp_not_after_iat() {
    let issuer = ed25519("issuer");
    let keys = keys_of(&[&issuer]);
    for exp in [NOW, NOW - 1, NOW - 1000] {
        let token = sign_payload(&issuer, &claims_json(&claims_for(&ed25519("agent"), NOW, exp)));
        assert_malformed(verify_at(&token, &keys, NOW), "`exp` is not after `iat`");
    }
}

#[test]
fn malformed_nbf_after_exp() {
    let issuer = ed25519("issuer");
    let mut c = claims(&ed25519("agent"));
    c.nbf = Some(c.exp + 1);
    let token = sign_payload(&issuer, &claims_json(&c));
    assert_malformed(verify_at(&token, &keys_of(&[&issuer]), NOW), "`nbf` is after `exp`");
}

/// A token of exactly `len` bytes, padded through an unmodelled claim and header member.
fn token_of_len(issuer: &KeyPair, len: usize) -> String {
    let base = claims_json(&claims(&ed25519("agent")));
    let sig_len = 86; // 64 bytes, unpadded base64url
    for header_pad in 0..4 {
        let mut header = aat_header(issuer);
        header["x-pad"] = json!("h".repeat(header_pad));
        let h = b64(serde_json::to_vec(&header).unwrap());
        // Start a few characters short of the length base64 arithmetic predicts.
        let mut empty = base.clone();
        empty["x-pad"] = json!("");
        let json_budget = (len.saturating_sub(h.len() + 2 + sig_len)) * 3 / 4;
        let start = json_budget.saturating_sub(serde_json::to_vec(&empty).unwrap().len() + 8);
        for n in start..len {
            let mut payload = base.clone();
            payload["x-pad"] = json!("p".repeat(n));
            let p = b64(serde_json::to_vec(&payload).unwrap());
            let total = h.len() + 1 + p.len() + 1 + sig_len;
            if total == len {
                let token = sign_with_header(&header, &payload, issuer);
                assert_eq!(token.len(), len);
                return token;
            }
            if total > len {
                break;
            }
        }
    }
    panic!("no padding gives a token of {len} bytes");
}

#[test]
fn malformed_token_longer_than_16_kib() {
    let issuer = ed25519("issuer");
    let keys = keys_of(&[&issuer]);
    assert_eq!(MAX_AAT_LEN, 16 * 1024);
    let at_limit = token_of_len(&issuer, MAX_AAT_LEN);
    assert!(verify_at(&at_limit, &keys, NOW).is_ok(), "a 16 KiB token is accepted");
    let over = token_of_len(&issuer, MAX_AAT_LEN + 1);
    assert_malformed(verify_at(&over, &keys, NOW), "token is too long");
    assert_eq!(
        UnverifiedAat::parse(&"A".repeat(1 << 20)).unwrap_err(),
        AatError::Malformed("token is too long")
    );
}

// ---------------------------------------------------------------------------------------------
// unsupported_version
// ---------------------------------------------------------------------------------------------

#[test]
fn unsupported_version_wrong_or_missing() {
    let issuer = ed25519("issuer");
    let keys = keys_of(&[&issuer]);
    let good = claims_json(&claims(&ed25519("agent")));
    for version in [
        json!("aip/v1alpha2"),
        json!("aip/v1alpha4"),
        json!("AIP/V1ALPHA3"),
        json!("aip/v1alpha3 "),
        json!(""),
        json!(3),
        json!(null),
        json!(["aip/v1alpha3"]),
    ] {
        let mut payload = good.clone();
        payload["aat_version"] = version.clone();
        let token = sign_payload(&issuer, &payload);
        assert_refused(
            verify_at(&token, &keys, NOW),
            &AatError::UnsupportedVersion,
            "unsupported_version",
        );
    }
    let mut payload = good;
    payload.as_object_mut().unwrap().remove("aat_version");
    let token = sign_payload(&issuer, &payload);
    assert_refused(
        verify_at(&token, &keys, NOW),
        &AatError::UnsupportedVersion,
        "unsupported_version",
    );
}

#[test]
fn unsupported_version_is_reported_before_claim_errors() {
    let issuer = ed25519("issuer");
    let keys = keys_of(&[&issuer]);
    let good = claims_json(&claims(&ed25519("agent")));
    type Breaker = Box<dyn Fn(&mut Value)>;
    let broken: Vec<(&str, Breaker)> = vec![
        (
            "missing jti",
            Box::new(|p: &mut Value| {
                p.as_object_mut().unwrap().remove("jti");
            }),
        ),
        (
            "sub != agent.id",
            Box::new(|p: &mut Value| p["sub"] = json!(agent_id("x"))),
        ),
        ("exp <= iat", Box::new(|p: &mut Value| p["exp"] = json!(NOW - 5))),
        ("iat is a string", Box::new(|p: &mut Value| p["iat"] = json!("now"))),
        (
            "cnf mismatch",
            Box::new(|p: &mut Value| p["cnf"] = json!({"jkt": ed25519("x").key_id().as_str()})),
        ),
        ("expired", Box::new(|p: &mut Value| p["exp"] = json!(NOW - 3600))),
        (
            "wrong audience",
            Box::new(|p: &mut Value| p["aud"] = json!("elsewhere")),
        ),
    ];
    for (what, breaker) in &broken {
        for version in [Some(json!("aip/v0")), None] {
            let mut payload = good.clone();
            breaker(&mut payload);
            match &version {
                Some(v) => payload["aat_version"] = v.clone(),
                None => {
                    payload.as_object_mut().unwrap().remove("aat_version");
                }
            }
            let token = sign_payload(&issuer, &payload);
            let e = refused(verify_at(&token, &keys, NOW));
            assert_eq!(e, AatError::UnsupportedVersion, "{what}, version {version:?}");
        }
    }
    // Also before the issuer and the signature are looked at.
    let mut payload = good;
    payload["aat_version"] = json!("aip/v2");
    let stranger = ed25519("stranger");
    let token = sign_payload(&stranger, &payload);
    let validation = Validation::new(AUDIENCE).with_trusted_issuers(["https://other"]);
    assert_refused(
        verify_with(&token, &keys, NOW, &validation),
        &AatError::UnsupportedVersion,
        "unsupported_version",
    );
}

// ---------------------------------------------------------------------------------------------
// untrusted_issuer / unknown_signing_key / signature_invalid
// ---------------------------------------------------------------------------------------------

#[test]
fn untrusted_issuer() {
    let issuer = ed25519("issuer");
    let keys = keys_of(&[&issuer]);
    let token = encode_aat(&claims(&ed25519("agent")), &issuer).unwrap();
    let trusted = Validation::new(AUDIENCE).with_trusted_issuers([ISSUER, "https://other.example"]);
    assert!(verify_with(&token, &keys, NOW, &trusted).is_ok());

    for list in [
        vec!["https://other.example"],
        vec!["https://issuer.aip.example/"],
        vec!["HTTPS://ISSUER.AIP.EXAMPLE"],
        vec![],
    ] {
        let validation = Validation::new(AUDIENCE).with_trusted_issuers(list.clone());
        assert_refused(
            verify_with(&token, &keys, NOW, &validation),
            &AatError::UntrustedIssuer { issuer: ISSUER.into() },
            "untrusted_issuer",
        );
    }
}

#[test]
fn unknown_signing_key() {
    let issuer = ed25519("issuer");
    let keys = keys_of(&[&issuer]);
    let payload = claims_json(&claims(&ed25519("agent")));

    // Signed by a key the verifier does not know.
    let stranger = ed25519("stranger");
    let token = sign_payload(&stranger, &payload);
    assert_refused(
        verify_at(&token, &keys, NOW),
        &AatError::UnknownSigningKey,
        "unknown_signing_key",
    );

    // No kid, an unknown kid, a kid that is not a valid key id.
    for header in [
        json!({"alg": "EdDSA", "typ": "aat+jwt"}),
        json!({"alg": "EdDSA", "typ": "aat+jwt", "kid": null}),
        json!({"alg": "EdDSA", "typ": "aat+jwt", "kid": "issuer-key-2025"}),
        json!({"alg": "EdDSA", "typ": "aat+jwt", "kid": ""}),
        json!({"alg": "EdDSA", "typ": "aat+jwt", "kid": "has space"}),
    ] {
        let token = sign_with_header(&header, &payload, &issuer);
        assert_refused(
            verify_at(&token, &keys, NOW),
            &AatError::UnknownSigningKey,
            "unknown_signing_key",
        );
    }
    // A kid that is not a string cannot be parsed as a header at all.
    let header = json!({"alg": "EdDSA", "typ": "aat+jwt", "kid": 1});
    let token = sign_with_header(&header, &payload, &issuer);
    assert_malformed(verify_at(&token, &keys, NOW), NOT_OBJECT);
}

#[test]
fn signature_invalid_for_tampered_or_foreign_signatures() {
    let issuer = ed25519("issuer");
    let keys = keys_of(&[&issuer]);
    let token = encode_aat(&claims(&ed25519("agent")), &issuer).unwrap();
    let [h, p, s] = segments(&token);

    // A payload changed after signing.
    let mut changed = claims_json(&claims(&ed25519("agent")));
    changed["capabilities"]["tools"] = json!(["read_file", "delete_everything"]);
    let forged = join(&h, &b64(serde_json::to_vec(&changed).unwrap()), &s);
    assert_refused(
        verify_at(&forged, &keys, NOW),
        &AatError::SignatureInvalid(SIG_FAILS),
        "signature_invalid",
    );

    // The right kid but another key's signature.
    let stranger = ed25519("stranger");
    let header = aat_header(&issuer);
    let token2 = sign_with_header(&header, &claims_json(&claims(&ed25519("agent"))), &stranger);
    assert_refused(
        verify_at(&token2, &keys, NOW),
        &AatError::SignatureInvalid(SIG_FAILS),
        "signature_invalid",
    );

    // Empty, truncated, extended, all-zero signatures.
    let sig = B64.decode(s.as_bytes()).unwrap();
    for bad in [
        vec![],
        sig[..63].to_vec(),
        [sig.clone(), vec![0]].concat(),
        vec![0u8; 64],
    ] {
        let t = join(&h, &p, &b64(&bad));
        assert_refused(
            verify_at(&t, &keys, NOW),
            &AatError::SignatureInvalid(SIG_FAILS),
            "signature_invalid",
        );
    }
}

#[test]
fn signature_invalid_for_non_canonical_ed25519_signature() {
    // Ed25519 malleability: S + L verifies under lax implementations; it must be refused.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let issuer = ed25519("issuer");
    let keys = keys_of(&[&issuer]);
    // Find a token whose S + L still fits in 256 bits (S < 2^256 - L: nearly always).
    let token = encode_aat(&claims(&ed25519("agent")), &issuer).unwrap();
    let [h, p, s] = segments(&token);
    let mut sig = B64.decode(s.as_bytes()).unwrap();
    let mut carry = 0u16;
    for i in 0..32 {
        let sum = u16::from(sig[32 + i]) + u16::from(L[i]) + carry;
        sig[32 + i] = (sum & 0xff) as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0);
    assert_refused(
        verify_at(&join(&h, &p, &b64(&sig)), &keys, NOW),
        &AatError::SignatureInvalid(SIG_FAILS),
        "signature_invalid",
    );
}

// ---------------------------------------------------------------------------------------------
// Algorithm confusion
// ---------------------------------------------------------------------------------------------

#[test]
fn alg_none_with_empty_signature_is_refused() {
    let issuer = ed25519("issuer");
    let keys = keys_of(&[&issuer]);
    let payload = serde_json::to_vec(&claims_json(&claims(&ed25519("agent")))).unwrap();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = json!({"alg": alg, "typ": "aat+jwt", "kid": issuer.key_id().as_str()});
        let token = format!("{}.{}.", b64(serde_json::to_vec(&header).unwrap()), b64(&payload));
        assert_refused(
            verify_at(&token, &keys, NOW),
            &AatError::SignatureInvalid(ALG_NOT_ALLOWED),
            "signature_invalid",
        );
    }
}

fn hs256_token(claims: &AatClaims, kid: &KeyId, secret: &[u8]) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.typ = Some(AAT_TYP.into());
    header.kid = Some(kid.as_str().into());
    jsonwebtoken::encode(&header, claims, &jsonwebtoken::EncodingKey::from_secret(secret)).unwrap()
}

#[test]
fn hs256_with_the_issuer_public_key_as_hmac_secret_is_refused() {
    for issuer in [ed25519("issuer"), p256("issuer-p256")] {
        let keys = keys_of(&[&issuer]);
        let c = claims(&ed25519("agent"));
        let jwk = issuer.public_key().to_jwk();
        let raw_x = B64.decode(jwk.x.as_deref().unwrap().as_bytes()).unwrap();
        let pem = issuer.public_key().to_public_key_pem().unwrap();
        let der = issuer.public_key().to_public_key_der().unwrap();
        let jwk_json = serde_json::to_vec(&jwk).unwrap();
        for secret in [
            raw_x.as_slice(),
            pem.as_bytes(),
            pem.trim_end().as_bytes(),
            der.as_slice(),
            &jwk_json,
        ] {
            let token = hs256_token(&c, issuer.key_id(), secret);
            // Sanity: the token is what an attacker would send.
            let header: Value = serde_json::from_slice(&B64.decode(segments(&token)[0].as_bytes()).unwrap()).unwrap();
            assert_eq!(header["alg"], "HS256");
            assert_eq!(header["typ"], "aat+jwt");
            assert_refused(
                verify_at(&token, &keys, NOW),
                &AatError::SignatureInvalid(ALG_NOT_ALLOWED),
                "signature_invalid",
            );
        }
    }
}

#[test]
fn header_alg_es256_on_an_ed25519_signed_token_is_refused() {
    let issuer = ed25519("issuer");
    let keys = keys_of(&[&issuer]);
    let header = json!({"alg": "ES256", "typ": "aat+jwt", "kid": issuer.key_id().as_str()});
    let token = sign_with_header(&header, &claims_json(&claims(&ed25519("agent"))), &issuer);
    assert_refused(
        verify_at(&token, &keys, NOW),
        &AatError::SignatureInvalid(ALG_NOT_KEY),
        "signature_invalid",
    );
}

#[test]
fn header_alg_eddsa_with_the_kid_of_a_p256_key_is_refused() {
    let issuer = p256("issuer-p256");
    let keys = keys_of(&[&issuer, &ed25519("issuer")]);
    let header = json!({"alg": "EdDSA", "typ": "aat+jwt", "kid": issuer.key_id().as_str()});
    let payload = claims_json(&claims(&ed25519("agent")));
    // Signed by the P-256 key itself, and by an Ed25519 key (as an attacker would).
    for signer in [&issuer, &ed25519("attacker")] {
        let token = sign_with_header(&header, &payload, signer);
        assert_refused(
            verify_at(&token, &keys, NOW),
            &AatError::SignatureInvalid(ALG_NOT_KEY),
            "signature_invalid",
        );
    }
}

#[test]
fn other_and_miscased_algorithms_are_refused() {
    let issuer = ed25519("issuer");
    let keys = keys_of(&[&issuer]);
    let payload = claims_json(&claims(&ed25519("agent")));
    for alg in [
        "RS256", "PS256", "ES384", "ES512", "ES256K", "HS256", "HS512", "eddsa", "EDDSA", "Ed25519", "es256", "",
    ] {
        let header = json!({"alg": alg, "typ": "aat+jwt", "kid": issuer.key_id().as_str()});
        let token = sign_with_header(&header, &payload, &issuer);
        assert_refused(
            verify_at(&token, &keys, NOW),
            &AatError::SignatureInvalid(ALG_NOT_ALLOWED),
            "signature_invalid",
        );
    }
}

#[test]
fn algorithm_allowlist_comes_from_the_validation() {
    let ed = ed25519("issuer");
    let ec = p256("issuer-p256");
    let keys = keys_of(&[&ed, &ec]);
    let ed_token = encode_aat(&claims(&ed25519("agent")), &ed).unwrap();
    let ec_token = encode_aat(&claims(&ed25519("agent")), &ec).unwrap();

    let es256_only = Validation::new(AUDIENCE).with_algorithms(&[Algorithm::ES256]);
    assert_eq!(es256_only.algorithms(), [Algorithm::ES256]);
    assert_refused(
        verify_with(&ed_token, &keys, NOW, &es256_only),
        &AatError::SignatureInvalid(ALG_NOT_ALLOWED),
        "signature_invalid",
    );
    assert!(verify_with(&ec_token, &keys, NOW, &es256_only).is_ok());

    let eddsa_only = Validation::new(AUDIENCE).with_algorithms(&[Algorithm::EdDSA]);
    assert!(verify_with(&ed_token, &keys, NOW, &eddsa_only).is_ok());
    assert_refused(
        verify_with(&ec_token, &keys, NOW, &eddsa_only),
        &AatError::SignatureInvalid(ALG_NOT_ALLOWED),
        "signature_invalid",
    );

    let nothing = Validation::new(AUDIENCE).with_algorithms(&[]);
    for token in [&ed_token, &ec_token] {
        assert_refused(
            verify_with(token, &keys, NOW, &nothing),
            &AatError::SignatureInvalid(ALG_NOT_ALLOWED),
            "signature_invalid",
        );
    }
}

#[test]
fn signature_segment_transplanted_from_another_token_is_refused() {
    let issuer = ed25519("issuer");
    let keys = keys_of(&[&issuer]);
    let a = encode_aat(&claims(&ed25519("agent")), &issuer).unwrap();
    let b = encode_aat(&claims(&ed25519("agent")), &issuer).unwrap();
    let [ha, pa, _] = segments(&a);
    let [_, _, sb] = segments(&b);
    // The signature of `b`, decoded and re-encoded, on the header and payload of `a`.
    let resig = b64(B64.decode(sb.as_bytes()).unwrap());
    assert_eq!(resig, sb);
    assert_refused(
        verify_at(&join(&ha, &pa, &resig), &keys, NOW),
        &AatError::SignatureInvalid(SIG_FAILS),
        "signature_invalid",
    );
    // Same with ES256.
    let ec = p256("issuer-p256");
    let keys = keys_of(&[&ec]);
    let a = encode_aat(&claims(&ed25519("agent")), &ec).unwrap();
    let b = encode_aat(&claims(&ed25519("agent")), &ec).unwrap();
    let [ha, pa, _] = segments(&a);
    let [_, _, sb] = segments(&b);
    assert_refused(
        verify_at(&join(&ha, &pa, &sb), &keys, NOW),
        &AatError::SignatureInvalid(SIG_FAILS),
        "signature_invalid",
    );
}

#[test]
fn flipping_any_payload_character_is_refused() {
    let allowed = ["malformed_aat", "unsupported_version", "signature_invalid"];
    for issuer in [ed25519("issuer"), p256("issuer-p256")] {
        let keys = keys_of(&[&issuer]);
        let token = encode_aat(&claims(&ed25519("agent")), &issuer).unwrap();
        let [h, p, s] = segments(&token);
        let mut signature_failures = 0;
        for i in 0..p.len() {
            let mut chars: Vec<char> = p.chars().collect();
            chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
            let mutated: String = chars.into_iter().collect();
            let result = verify_at(&join(&h, &mutated, &s), &keys, NOW);
            let e = match result {
                Ok(_) => panic!("payload with character {i} flipped was accepted"),
                Err(e) => e,
            };
            assert!(allowed.contains(&e.aat_error()), "position {i}: {e:?}");
            if e == AatError::SignatureInvalid(SIG_FAILS) {
                signature_failures += 1;
            }
        }
        // Changes that keep the payload parseable are caught by the signature.
        assert!(signature_failures > 0);
    }
}

// ---------------------------------------------------------------------------------------------
// Time (not_yet_valid, aat_expired) and audience
// ---------------------------------------------------------------------------------------------

#[test]
fn not_yet_valid_nbf_or_iat_in_the_future() {
    let issuer = ed25519("issuer");
    let keys = keys_of(&[&issuer]);
    let mut c = claims(&ed25519("agent"));
    c.nbf = Some(NOW + 600);
    let token = encode_aat(&c, &issuer).unwrap();
    assert_refused(verify_at(&token, &keys, NOW), &AatError::NotYetValid, "not_yet_valid");
    assert!(verify_at(&token, &keys, NOW + 600).is_ok());

    // No nbf: iat is the start of validity.
    let token = encode_aat(&claims_for(&ed25519("agent"), NOW + 120, NOW + 900), &issuer).unwrap();
    assert_refused(verify_at(&token, &keys, NOW), &AatError::NotYetValid, "not_yet_valid");

    // An nbf before iat does not make a future iat acceptable.
    let mut c = claims_for(&ed25519("agent"), NOW + 120, NOW + 900);
    c.nbf = Some(NOW - 1000);
    let token = encode_aat(&c, &issuer).unwrap();
    assert_refused(verify_at(&token, &keys, NOW), &AatError::NotYetValid, "not_yet_valid");
}

#[test]
fn expired_beyond_leeway() {
    let issuer = ed25519("issuer");
    let keys = keys_of(&[&issuer]);
    let token = encode_aat(&claims_for(&ed25519("agent"), NOW - 1000, NOW - 100), &issuer).unwrap();
    assert_refused(verify_at(&token, &keys, NOW), &AatError::Expired, "aat_expired");
}

#[test]
fn lifetime_longer_than_24h_is_reported_as_expired() {
    let issuer = ed25519("issuer");
    let keys = keys_of(&[&issuer]);
    let c = claims_for(&ed25519("agent"), NOW - 100, NOW - 100 + DAY + 1);
    let token = sign_payload(&issuer, &claims_json(&c));
    let e = refused(verify_at(&token, &keys, NOW));
    assert_eq!(
        e,
        AatError::LifetimeTooLong {
            lifetime: DAY + 1,
            max: 86_400
        }
    );
    assert_eq!(e.aat_error(), "aat_expired");

    // Exactly 24 h is allowed.
    let c = claims_for(&ed25519("agent"), NOW - 100, NOW - 100 + DAY);
    assert!(verify_at(&encode_aat(&c, &issuer).unwrap(), &keys, NOW).is_ok());

    // A stricter maximum, and a configured maximum above 24 h is capped.
    let c = claims_for(&ed25519("agent"), NOW, NOW + 3601);
    let token = encode_aat(&c, &issuer).unwrap();
    assert_refused(
        verify_with(&token, &keys, NOW, &Validation::new(AUDIENCE).with_max_lifetime(3600)),
        &AatError::LifetimeTooLong {
            lifetime: 3601,
            max: 3600,
        },
        "aat_expired",
    );
    let c = claims_for(&ed25519("agent"), NOW - 100, NOW + 2 * DAY);
    let token = sign_payload(&issuer, &claims_json(&c));
    assert_refused(
        verify_with(
            &token,
            &keys,
            NOW,
            &Validation::new(AUDIENCE).with_max_lifetime(u64::MAX),
        ),
        &AatError::LifetimeTooLong {
            lifetime: 2 * DAY + 100,
            max: 86_400,
        },
        "aat_expired",
    );
}

#[test]
fn exp_leeway_boundary() {
    let issuer = ed25519("issuer");
    let keys = keys_of(&[&issuer]);
    let exp = NOW + 900;
    let token = encode_aat(&claims_for(&ed25519("agent"), NOW, exp), &issuer).unwrap();
    assert!(verify_at(&token, &keys, exp).is_ok());
    assert!(
        verify_at(&token, &keys, exp + LEEWAY).is_ok(),
        "exp + leeway is accepted"
    );
    assert_refused(
        verify_at(&token, &keys, exp + LEEWAY + 1),
        &AatError::Expired,
        "aat_expired",
    );

    // A custom leeway, and no leeway at all.
    let five = Validation::new(AUDIENCE).with_leeway(5);
    assert_eq!(five.leeway(), 5);
    assert!(verify_with(&token, &keys, exp + 5, &five).is_ok());
    assert_refused(
        verify_with(&token, &keys, exp + 6, &five),
        &AatError::Expired,
        "aat_expired",
    );
    let zero = Validation::new(AUDIENCE).with_leeway(0);
    assert!(verify_with(&token, &keys, exp, &zero).is_ok());
    assert_refused(
        verify_with(&token, &keys, exp + 1, &zero),
        &AatError::Expired,
        "aat_expired",
    );

    // The leeway is capped at 300 s.
    let huge = Validation::new(AUDIENCE).with_leeway(10_000);
    assert_eq!(huge.leeway(), 300);
    assert!(verify_with(&token, &keys, exp + 300, &huge).is_ok());
    assert_refused(
        verify_with(&token, &keys, exp + 301, &huge),
        &AatError::Expired,
        "aat_expired",
    );
}

#[test]
fn nbf_leeway_boundary() {
    let issuer = ed25519("issuer");
    let keys = keys_of(&[&issuer]);
    let nbf = NOW + 600;
    let mut c = claims(&ed25519("agent"));
    c.nbf = Some(nbf);
    let token = encode_aat(&c, &issuer).unwrap();
    assert!(
        verify_at(&token, &keys, nbf - LEEWAY).is_ok(),
        "nbf - leeway is accepted"
    );
    assert_refused(
        verify_at(&token, &keys, nbf - LEEWAY - 1),
        &AatError::NotYetValid,
        "not_yet_valid",
    );

    // The same boundary applies to iat when there is no nbf.
    let iat = NOW + 100;
    let token = encode_aat(&claims_for(&ed25519("agent"), iat, iat + 900), &issuer).unwrap();
    assert!(verify_at(&token, &keys, iat - LEEWAY).is_ok());
    assert_refused(
        verify_at(&token, &keys, iat - LEEWAY - 1),
        &AatError::NotYetValid,
        "not_yet_valid",
    );
}

#[test]
fn audience_mismatch_and_audience_arrays() {
    let issuer = ed25519("issuer");
    let keys = keys_of(&[&issuer]);
    let mut c = claims(&ed25519("agent"));
    c.aud = Audience::one("other-proxy");
    let token = encode_aat(&c, &issuer).unwrap();
    assert_refused(
        verify_at(&token, &keys, NOW),
        &AatError::AudienceMismatch,
        "audience_mismatch",
    );

    // Exact, case-sensitive match.
    for aud in ["FILES-PROXY", "files-proxy ", "files-proxy/", "files"] {
        c.aud = Audience::one(aud);
        let token = encode_aat(&c, &issuer).unwrap();
        assert_refused(
            verify_at(&token, &keys, NOW),
            &AatError::AudienceMismatch,
            "audience_mismatch",
        );
    }

    // An array containing the audience is accepted.
    c.aud = Audience::many(["git-proxy".to_owned(), AUDIENCE.to_owned(), "db-proxy".to_owned()]).unwrap();
    let token = encode_aat(&c, &issuer).unwrap();
    let payload: Value = serde_json::from_slice(&B64.decode(segments(&token)[1].as_bytes()).unwrap()).unwrap();
    assert_eq!(payload["aud"], json!(["git-proxy", AUDIENCE, "db-proxy"]));
    assert!(verify_at(&token, &keys, NOW).is_ok());

    // An array without it is not.
    c.aud = Audience::many(["git-proxy".to_owned(), "db-proxy".to_owned()]).unwrap();
    let token = encode_aat(&c, &issuer).unwrap();
    assert_refused(
        verify_at(&token, &keys, NOW),
        &AatError::AudienceMismatch,
        "audience_mismatch",
    );
}

// ---------------------------------------------------------------------------------------------
// Step order
// ---------------------------------------------------------------------------------------------

#[test]
fn step_order_expired_before_audience() {
    let issuer = ed25519("issuer");
    let mut c = claims_for(&ed25519("agent"), NOW - 2000, NOW - 1000);
    c.aud = Audience::one("elsewhere");
    let token = encode_aat(&c, &issuer).unwrap();
    assert_refused(
        verify_at(&token, &keys_of(&[&issuer]), NOW),
        &AatError::Expired,
        "aat_expired",
    );
}

#[test]
fn step_order_not_yet_valid_before_audience() {
    let issuer = ed25519("issuer");
    let mut c = claims_for(&ed25519("agent"), NOW + 1000, NOW + 2000);
    c.aud = Audience::one("elsewhere");
    let token = encode_aat(&c, &issuer).unwrap();
    assert_refused(
        verify_at(&token, &keys_of(&[&issuer]), NOW),
        &AatError::NotYetValid,
        "not_yet_valid",
    );
}

#[test]
fn step_order_untrusted_issuer_before_unknown_kid() {
    let stranger = ed25519("stranger");
    let keys = keys_of(&[&ed25519("issuer")]);
    let token = encode_aat(&claims(&ed25519("agent")), &stranger).unwrap();
    let validation = Validation::new(AUDIENCE).with_trusted_issuers(["https://other"]);
    assert_refused(
        verify_with(&token, &keys, NOW, &validation),
        &AatError::UntrustedIssuer { issuer: ISSUER.into() },
        "untrusted_issuer",
    );
    // Also before the algorithm check.
    let header = json!({"alg": "none", "typ": "aat+jwt"});
    let token = sign_with_header(&header, &claims_json(&claims(&ed25519("agent"))), &stranger);
    assert_refused(
        verify_with(&token, &keys, NOW, &validation),
        &AatError::UntrustedIssuer { issuer: ISSUER.into() },
        "untrusted_issuer",
    );
}

#[test]
fn step_order_bad_signature_before_expiry_and_audience() {
    let issuer = ed25519("issuer");
    let stranger = ed25519("stranger");
    let mut c = claims_for(&ed25519("agent"), NOW - 5000, NOW - 4000);
    c.aud = Audience::one("elsewhere");
    let header = aat_header(&issuer);
    let token = sign_with_header(&header, &claims_json(&c), &stranger);
    assert_refused(
        verify_at(&token, &keys_of(&[&issuer]), NOW),
        &AatError::SignatureInvalid(SIG_FAILS),
        "signature_invalid",
    );
}

#[test]
fn step_order_unknown_kid_before_expiry() {
    let issuer = ed25519("issuer");
    let token = encode_aat(
        &claims_for(&ed25519("agent"), NOW - 5000, NOW - 4000),
        &ed25519("stranger"),
    )
    .unwrap();
    assert_refused(
        verify_at(&token, &keys_of(&[&issuer]), NOW),
        &AatError::UnknownSigningKey,
        "unknown_signing_key",
    );
}

#[test]
fn step_order_malformed_header_before_version() {
    let issuer = ed25519("issuer");
    let mut payload = claims_json(&claims(&ed25519("agent")));
    payload["aat_version"] = json!("aip/v0");
    let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": issuer.key_id().as_str()});
    let token = sign_with_header(&header, &payload, &issuer);
    assert_malformed(verify_at(&token, &keys_of(&[&issuer]), NOW), BAD_TYP);
}

#[test]
fn step_order_in_validate_aat() {
    let issuer = ed25519("issuer");
    let agent = ed25519("agent");
    let keys = keys_of(&[&issuer]);
    let clock = FixedClock::new(NOW);
    let c = claims(&agent);
    let token = encode_aat(&c, &issuer).unwrap();
    // Revoked (step 7) and unknown agent (step 8): revocation wins.
    let view = revocations(json!({"revoked_aats": [{"jti": c.jti.as_str(), "revoked_at": NOW_RFC3339}]}));
    let empty = Directory::default();
    let replay = InMemoryReplayCache::new(100);
    let ctx = ValidationContext {
        revocation: Some(&view),
        agents: Some(&empty),
        replay: Some(&replay),
        ..ValidationContext::new(&keys, &clock)
    };
    assert_refused(
        validate_aat(&token, &Validation::new(AUDIENCE), &ctx),
        &AatError::Revoked(RevokedBy::Token),
        "aat_revoked",
    );
    // Audience (step 6) before revocation; a refused token does not consume its jti.
    assert_refused(
        validate_aat(&token, &Validation::new("other"), &ctx),
        &AatError::AudienceMismatch,
        "audience_mismatch",
    );
    assert!(replay.is_empty());
    // Unknown agent (step 8) before replay (step 9).
    let none = revocations(json!({}));
    let ctx = ValidationContext {
        revocation: Some(&none),
        ..ctx
    };
    assert_refused(
        validate_aat(&token, &Validation::new(AUDIENCE), &ctx),
        &AatError::UnknownAgent {
            agent_id: c.agent.id.to_string(),
        },
        "unknown_agent",
    );
    assert!(replay.is_empty(), "a token refused at step 8 does not consume its jti");
}

// ---------------------------------------------------------------------------------------------
// aat_revoked
// ---------------------------------------------------------------------------------------------

fn validate_with_revocations(token: &str, keys: &JwkSet, view: &dyn RevocationView) -> Result<VerifiedAat, AatError> {
    let clock = FixedClock::new(NOW);
    let ctx = ValidationContext {
        revocation: Some(view),
        ..ValidationContext::new(keys, &clock)
    };
    validate_aat(token, &Validation::new(AUDIENCE), &ctx)
}

#[test]
fn revoked_by_jti_session_agent() {
    let issuer = ed25519("issuer");
    let keys = keys_of(&[&issuer]);
    let c = claims(&ed25519("agent"));
    let token = encode_aat(&c, &issuer).unwrap();

    let by_jti = revocations(json!({"revoked_aats": [{"jti": c.jti.as_str(), "revoked_at": NOW_RFC3339}]}));
    assert_refused(
        validate_with_revocations(&token, &keys, &by_jti),
        &AatError::Revoked(RevokedBy::Token),
        "aat_revoked",
    );
    let by_session = revocations(json!({"revoked_sessions": [{"session_id": SESSION, "revoked_at": NOW_RFC3339}]}));
    assert_refused(
        validate_with_revocations(&token, &keys, &by_session),
        &AatError::Revoked(RevokedBy::Session),
        "aat_revoked",
    );
    let by_agent = revocations(json!({"revoked_agents": [{
        "agent_id": c.agent.id.as_str(), "revoked_at": NOW_RFC3339, "reason": "Security incident"
    }]}));
    assert_refused(
        validate_with_revocations(&token, &keys, &by_agent),
        &AatError::Revoked(RevokedBy::Agent),
        "aat_revoked",
    );

    // Entries for other tokens, sessions, agents do not affect this one.
    let others = revocations(json!({
        "revoked_aats": [{"jti": Jti::random().unwrap().as_str(), "revoked_at": NOW_RFC3339}],
        "revoked_sessions": [{"session_id": "sess-2", "revoked_at": NOW_RFC3339}],
        "revoked_agents": [{"agent_id": agent_id("other").as_str(), "revoked_at": NOW_RFC3339}],
        "revoked_users": [{"user_id": "bob@example.com", "revoked_at": NOW_RFC3339}],
    }));
    assert!(validate_with_revocations(&token, &keys, &others).is_ok());
}

#[test]
fn revoked_by_user_only_for_tokens_issued_at_or_before_the_revocation() {
    let issuer = ed25519("issuer");
    let keys = keys_of(&[&issuer]);
    let view = revocations(json!({"revoked_users": [{"user_id": USER, "revoked_at": NOW_RFC3339}]}));
    assert_eq!(view.user_revoked_at(USER), Some(NOW));
    assert_eq!(view.version(), 7);

    for iat in [NOW - 600, NOW] {
        let token = encode_aat(&claims_for(&ed25519("agent"), iat, iat + 900), &issuer).unwrap();
        assert_refused(
            validate_with_revocations(&token, &keys, &view),
            &AatError::Revoked(RevokedBy::User),
            "aat_revoked",
        );
    }
    // Issued one second after the revocation: a fresh delegation, not revoked.
    let token = encode_aat(&claims_for(&ed25519("agent"), NOW + 1, NOW + 901), &issuer).unwrap();
    assert!(validate_with_revocations(&token, &keys, &view).is_ok());

    // Tokens without a user binding (autonomous agents) are not affected.
    let mut c = claims_for(&ed25519("agent"), NOW - 600, NOW + 300);
    c.user_binding = None;
    let token = encode_aat(&c, &issuer).unwrap();
    assert!(validate_with_revocations(&token, &keys, &view).is_ok());
}

// ---------------------------------------------------------------------------------------------
// Agent identity (step 8)
// ---------------------------------------------------------------------------------------------

fn validate_with_directory(
    token: &str,
    keys: &JwkSet,
    now: i64,
    dir: &dyn AgentRecords,
) -> Result<VerifiedAat, AatError> {
    let clock = FixedClock::new(now);
    let ctx = ValidationContext {
        agents: Some(dir),
        ..ValidationContext::new(keys, &clock)
    };
    validate_aat(token, &Validation::new(AUDIENCE), &ctx)
}

#[test]
fn unknown_agent_key_mismatch_and_inactive() {
    let issuer = ed25519("issuer");
    let agent = ed25519("agent");
    let keys = keys_of(&[&issuer]);
    let c = claims(&agent);
    let token = encode_aat(&c, &issuer).unwrap();
    let id = c.agent.id.clone();

    let active = Directory::with(&id, record(AgentStatus::Active, agent.key_id()));
    assert!(validate_with_directory(&token, &keys, NOW, &active).is_ok());

    assert_refused(
        validate_with_directory(&token, &keys, NOW, &Directory::default()),
        &AatError::UnknownAgent {
            agent_id: id.to_string(),
        },
        "unknown_agent",
    );
    let other_agent = Directory::with(&agent_id("other"), record(AgentStatus::Active, agent.key_id()));
    assert_refused(
        validate_with_directory(&token, &keys, NOW, &other_agent),
        &AatError::UnknownAgent {
            agent_id: id.to_string(),
        },
        "unknown_agent",
    );

    let new_key = Directory::with(&id, record(AgentStatus::Active, ed25519("agent-2").key_id()));
    assert_refused(
        validate_with_directory(&token, &keys, NOW, &new_key),
        &AatError::AgentKeyMismatch,
        "agent_key_mismatch",
    );

    for status in [AgentStatus::Suspended, AgentStatus::Revoked] {
        let dir = Directory::with(&id, record(status, agent.key_id()));
        assert_refused(
            validate_with_directory(&token, &keys, NOW, &dir),
            &AatError::AgentInactive(status),
            "agent_inactive",
        );
    }
    // Key mismatch is reported before the status (spec 7.5.3 step 8 order).
    let dir = Directory::with(&id, record(AgentStatus::Suspended, ed25519("agent-2").key_id()));
    assert_refused(
        validate_with_directory(&token, &keys, NOW, &dir),
        &AatError::AgentKeyMismatch,
        "agent_key_mismatch",
    );
}

#[test]
fn rotated_agent_key_is_accepted_within_its_grace_period_only() {
    let issuer = ed25519("issuer");
    let old = ed25519("agent");
    let new = ed25519("agent-rotated");
    let keys = keys_of(&[&issuer]);
    let c = claims(&old);
    let token = encode_aat(&c, &issuer).unwrap();
    let valid_until = NOW + 60;
    let dir = Directory::with(
        &c.agent.id,
        AgentRecord {
            status: AgentStatus::Active,
            public_key_thumbprint: new.key_id().clone(),
            previous_keys: vec![
                PreviousKey {
                    thumbprint: ed25519("agent-older").key_id().clone(),
                    valid_until: NOW + 10_000,
                },
                PreviousKey {
                    thumbprint: old.key_id().clone(),
                    valid_until,
                },
            ],
        },
    );
    assert!(validate_with_directory(&token, &keys, NOW, &dir).is_ok());
    assert!(validate_with_directory(&token, &keys, valid_until, &dir).is_ok());
    assert_refused(
        validate_with_directory(&token, &keys, valid_until + 1, &dir),
        &AatError::AgentKeyMismatch,
        "agent_key_mismatch",
    );
    // The current key is always accepted.
    let token = encode_aat(&claims(&new), &issuer).unwrap();
    assert!(validate_with_directory(&token, &keys, valid_until + 1, &dir).is_ok());
}

// ---------------------------------------------------------------------------------------------
// replay_detected (step 9)
// ---------------------------------------------------------------------------------------------

#[test]
fn replay_detected_on_second_use_of_a_single_use_aat() {
    let issuer = ed25519("issuer");
    let keys = keys_of(&[&issuer]);
    let token = encode_aat(&claims(&ed25519("agent")), &issuer).unwrap();
    let clock = FixedClock::new(NOW);
    let replay = InMemoryReplayCache::new(1000);
    let ctx = ValidationContext {
        replay: Some(&replay),
        ..ValidationContext::new(&keys, &clock)
    };
    let validation = Validation::new(AUDIENCE);
    assert!(validate_aat(&token, &validation, &ctx).is_ok());
    assert_refused(
        validate_aat(&token, &validation, &ctx),
        &AatError::ReplayDetected,
        "replay_detected",
    );
    clock.advance(500);
    assert_refused(
        validate_aat(&token, &validation, &ctx),
        &AatError::ReplayDetected,
        "replay_detected",
    );
    // Another token is unaffected.
    let other = encode_aat(&claims(&ed25519("agent")), &issuer).unwrap();
    assert!(validate_aat(&other, &validation, &ctx).is_ok());
}

#[test]
fn single_use_aat_cannot_be_replayed_at_the_last_accepted_second() {
    let issuer = ed25519("issuer");
    let keys = keys_of(&[&issuer]);
    // A one-hour token, first used as soon as it is issued: exp + leeway is beyond the
    // cache's 600 s minimum retention.
    let exp = NOW + 3600;
    let token = encode_aat(&claims_for(&ed25519("agent"), NOW, exp), &issuer).unwrap();
    let clock = FixedClock::new(NOW);
    let replay = InMemoryReplayCache::new(1000);
    let ctx = ValidationContext {
        replay: Some(&replay),
        ..ValidationContext::new(&keys, &clock)
    };
    let validation = Validation::new(AUDIENCE);
    assert!(validate_aat(&token, &validation, &ctx).is_ok());
    // The token is still time-valid at exp + leeway ...
    clock.set(exp + LEEWAY);
    assert!(verify_at(&token, &keys, exp + LEEWAY).is_ok());
    // ... so its jti must still be remembered.
    assert_refused(
        validate_aat(&token, &validation, &ctx),
        &AatError::ReplayDetected,
        "replay_detected",
    );
}

// ---------------------------------------------------------------------------------------------
// encode_aat
// ---------------------------------------------------------------------------------------------

#[track_caller]
fn assert_encode_refused(claims: &AatClaims, why: &str) {
    match encode_aat(claims, &ed25519("issuer")) {
        Err(EncodeError::InvalidClaims(msg)) => assert_eq!(msg, why),
        other => panic!("expected InvalidClaims({why:?}), got {other:?}"),
    }
}

#[test]
fn encode_aat_refuses_invalid_claims() {
    let agent = ed25519("agent");
    let mut c = claims(&agent);
    c.aat_version = "aip/v1alpha2".into();
    assert_encode_refused(&c, "`aat_version` must be aip/v1alpha3");

    let mut c = claims(&agent);
    c.sub = agent_id("someone else");
    assert_encode_refused(&c, "`sub` differs from `agent.id`");

    let mut c = claims(&agent);
    c.cnf = Some(Confirmation {
        jkt: ed25519("x").key_id().clone(),
    });
    assert_encode_refused(&c, "`cnf.jkt` differs from `agent.public_key_thumbprint`");

    assert_encode_refused(&claims_for(&agent, NOW, NOW), "`exp` is not after `iat`");
    assert_encode_refused(&claims_for(&agent, NOW, NOW - 1), "`exp` is not after `iat`");
    assert_encode_refused(&claims_for(&agent, NOW, NOW + DAY + 1), "lifetime exceeds 24 hours");
    assert!(encode_aat(&claims_for(&agent, NOW, NOW + DAY), &ed25519("issuer")).is_ok());
}

#[test]
fn encode_aat_refuses_extreme_lifetimes_without_overflowing() {
    let agent = ed25519("agent");
    let c = claims_for(&agent, -10, i64::MAX);
    let result = std::panic::catch_unwind(|| encode_aat(&c, &ed25519("issuer")).map_err(|e| e.to_string()));
    match result {
        Ok(Err(msg)) => assert_eq!(msg, "invalid AAT claims: lifetime exceeds 24 hours"),
        Ok(Ok(_)) => panic!("a token with a lifetime of ~2^63 s was issued"),
        Err(_) => panic!("encode_aat panicked (integer overflow in exp - iat)"),
    }
}

// ---------------------------------------------------------------------------------------------
// JWK edge cases
// ---------------------------------------------------------------------------------------------

fn jwk(v: Value) -> Jwk {
    serde_json::from_value(v).unwrap()
}

/// RFC 8037 appendix A.
const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
const RFC8037_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
const RFC8037_THUMBPRINT: &str = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";

#[test]
fn jwk_with_private_part_is_refused() {
    let private = jwk(json!({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X, "d": RFC8037_D}));
    assert!(private.has_private_part());
    assert_eq!(PublicKey::from_jwk(&private).unwrap_err(), KeyError::PrivateKeyInJwk);
    // `d` is never serialized back.
    assert!(serde_json::to_value(&private).unwrap().get("d").is_none());
    // Whatever `d` holds.
    let weird = jwk(json!({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X, "d": null}));
    assert_eq!(PublicKey::from_jwk(&weird).unwrap_err(), KeyError::PrivateKeyInJwk);
    let ec = p256("k").public_key().to_jwk();
    let mut ec_private = serde_json::to_value(&ec).unwrap();
    ec_private["d"] = json!(b64(SEEDS.bytes("k")));
    assert_eq!(
        PublicKey::from_jwk(&jwk(ec_private.clone())).unwrap_err(),
        KeyError::PrivateKeyInJwk
    );
    // In a JWK set, too.
    let set: Jwks = serde_json::from_value(json!({"keys": [ec_private]})).unwrap();
    assert_eq!(
        JwkSet::from_jwks(&set).unwrap_err(),
        JwkSetError::Key {
            index: 0,
            error: KeyError::PrivateKeyInJwk
        }
    );
}

#[test]
fn jwk_use_and_alg_are_checked() {
    let enc = jwk(json!({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X, "use": "enc"}));
    assert_eq!(
        PublicKey::from_jwk(&enc).unwrap_err(),
        KeyError::InvalidJwk("`use` must be `sig`")
    );
    let sig = jwk(json!({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X, "use": "sig", "alg": "EdDSA"}));
    assert_eq!(
        PublicKey::from_jwk(&sig).unwrap().thumbprint().as_str(),
        RFC8037_THUMBPRINT
    );

    for alg in ["ES256", "HS256", "RS256", "none", "eddsa"] {
        let bad = jwk(json!({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X, "alg": alg}));
        assert_eq!(
            PublicKey::from_jwk(&bad).unwrap_err(),
            KeyError::InvalidJwk("`alg` does not match the key type"),
            "{alg}"
        );
    }
    let mut ec = serde_json::to_value(p256("k").public_key().to_jwk()).unwrap();
    ec["alg"] = json!("EdDSA");
    assert_eq!(
        PublicKey::from_jwk(&jwk(ec)).unwrap_err(),
        KeyError::InvalidJwk("`alg` does not match the key type")
    );
}

#[test]
fn jwk_unsupported_or_malformed_keys() {
    for (v, expected) in [
        (
            json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"}),
            KeyError::UnsupportedKeyType,
        ),
        (json!({"kty": "oct", "k": "c2VjcmV0"}), KeyError::UnsupportedKeyType),
        (
            json!({"kty": "OKP", "crv": "X25519", "x": RFC8037_X}),
            KeyError::UnsupportedKeyType,
        ),
        (
            json!({"kty": "OKP", "crv": "Ed448", "x": RFC8037_X}),
            KeyError::UnsupportedKeyType,
        ),
        (
            json!({"kty": "EC", "crv": "P-384", "x": RFC8037_X, "y": RFC8037_X}),
            KeyError::UnsupportedKeyType,
        ),
        (json!({"kty": "OKP", "x": RFC8037_X}), KeyError::UnsupportedKeyType),
        (
            json!({"kty": "OKP", "crv": "Ed25519"}),
            KeyError::InvalidJwk("`x` must be 32 bytes of unpadded base64url"),
        ),
        (
            json!({"kty": "OKP", "crv": "Ed25519", "x": format!("{RFC8037_X}=")}),
            KeyError::InvalidJwk("`x` must be 32 bytes of unpadded base64url"),
        ),
        (
            json!({"kty": "OKP", "crv": "Ed25519", "x": &RFC8037_X[..42]}),
            KeyError::InvalidJwk("`x` must be 32 bytes of unpadded base64url"),
        ),
        (
            json!({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X, "y": RFC8037_X}),
            KeyError::InvalidJwk("OKP key must not have `y`"),
        ),
        (
            json!({"kty": "EC", "crv": "P-256", "x": RFC8037_X}),
            KeyError::InvalidJwk("`x` and `y` must be 32 bytes of unpadded base64url"),
        ),
    ] {
        assert_eq!(PublicKey::from_jwk(&jwk(v.clone())).unwrap_err(), expected, "{v}");
    }
    // A P-256 "point" that is not on the curve.
    let mut ec = serde_json::to_value(p256("k").public_key().to_jwk()).unwrap();
    ec["y"] = ec["x"].clone();
    assert_eq!(
        PublicKey::from_jwk(&jwk(ec)).unwrap_err(),
        KeyError::InvalidKey("`x`,`y` is not a P-256 point")
    );
}

#[test]
fn jwk_small_order_ed25519_points_are_refused() {
    let mut identity = [0u8; 32];
    identity[0] = 1;
    // The identity, the point of order 2 (y = -1) and a point of order 4 (y = 0).
    let mut order2 = [0xffu8; 32];
    order2[0] = 0xec;
    order2[31] = 0x7f;
    for point in [identity, order2, [0u8; 32]] {
        let v = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(point)});
        assert_eq!(
            PublicKey::from_jwk(&jwk(v.clone())).unwrap_err(),
            KeyError::InvalidKey("Ed25519 key is of small order"),
            "{v}"
        );
    }
    // Same through a JWK set, and through SPKI DER.
    let set: Jwks = serde_json::from_value(json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X},
        {"kty": "OKP", "crv": "Ed25519", "x": b64(identity)},
    ]}))
    .unwrap();
    assert_eq!(
        JwkSet::from_jwks(&set).unwrap_err(),
        JwkSetError::Key {
            index: 1,
            error: KeyError::InvalidKey("Ed25519 key is of small order")
        }
    );
    // DER SPKI of Ed25519: a fixed 12-byte prefix, then the 32-byte key.
    let good_der = ed25519("k").public_key().to_public_key_der().unwrap();
    assert_eq!(good_der.len(), 44);
    let weak_der = [&good_der[..12], identity.as_slice()].concat();
    assert_eq!(
        PublicKey::from_public_key_der(&weak_der).unwrap_err(),
        KeyError::InvalidKey("Ed25519 key is of small order")
    );
}

#[test]
fn jwk_set_skips_foreign_keys_and_refuses_duplicate_kids() {
    let ed = ed25519("k1");
    let ec = p256("k2");
    let mut ed_jwk = serde_json::to_value(ed.public_key().to_jwk()).unwrap();
    ed_jwk["kid"] = json!("issuer-2026-01");
    let ec_jwk = serde_json::to_value(ec.public_key().to_jwk()).unwrap();
    let set: Jwks = serde_json::from_value(json!({"keys": [
        {"kty": "RSA", "kid": "rsa-1", "n": "0vx7agoebGcQSuu", "e": "AQAB", "alg": "RS256"},
        ed_jwk,
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        ec_jwk,
        {"kty": "OKP", "crv": "X25519", "kid": "ecdh", "x": RFC8037_X},
        {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X, "use": "enc"},
        // No kid: indexed by thumbprint.
        {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X},
    ]}))
    .unwrap();
    let keys = JwkSet::from_jwks(&set).unwrap();
    assert_eq!(keys.len(), 3);
    assert_eq!(keys.skipped(), 4);
    assert!(!keys.is_empty());
    assert_eq!(keys.get(&"issuer-2026-01".parse().unwrap()), Some(ed.public_key()));
    assert_eq!(keys.get(ec.key_id()), Some(ec.public_key()));
    assert!(keys.get(&RFC8037_THUMBPRINT.parse().unwrap()).is_some());
    assert!(keys.get(&"rsa-1".parse().unwrap()).is_none());
    assert!(keys.get(&"hmac".parse().unwrap()).is_none());
    // The key is found by the custom kid, not by its thumbprint.
    assert!(keys.get(ed.key_id()).is_none());

    // A token signed with a custom-kid key verifies through the set.
    let header = json!({"alg": "EdDSA", "typ": "aat+jwt", "kid": "issuer-2026-01"});
    let token = sign_with_header(&header, &claims_json(&claims(&ed25519("agent"))), &ed);
    assert!(verify_at(&token, &keys, NOW).is_ok());

    // Duplicate kids, explicit or through the thumbprint.
    let dup: Jwks = serde_json::from_value(json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X, "kid": "a"},
        {"kty": "EC", "crv": "P-256", "kid": "a",
         "x": ec.public_key().to_jwk().x.unwrap(), "y": ec.public_key().to_jwk().y.unwrap()},
    ]}))
    .unwrap();
    assert_eq!(
        JwkSet::from_jwks(&dup).unwrap_err(),
        JwkSetError::DuplicateKid {
            index: 1,
            kid: "a".into()
        }
    );
    let dup: Jwks = serde_json::from_value(json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X},
        {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X, "kid": RFC8037_THUMBPRINT},
    ]}))
    .unwrap();
    assert_eq!(
        JwkSet::from_jwks(&dup).unwrap_err(),
        JwkSetError::DuplicateKid {
            index: 1,
            kid: RFC8037_THUMBPRINT.into()
        }
    );
    // An invalid kid string.
    let bad_kid: Jwks =
        serde_json::from_value(json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X, "kid": "a b"}]}))
            .unwrap();
    assert_eq!(
        JwkSet::from_jwks(&bad_kid).unwrap_err(),
        JwkSetError::Key {
            index: 0,
            error: KeyError::InvalidJwk("`kid` must be 1-256 visible ASCII characters")
        }
    );
}

#[test]
fn jwks_round_trip() {
    let keys = [ed25519("a"), p256("b")];
    let doc = Jwks::from_keys(keys.iter().map(|k| k.public_key()));
    let text = serde_json::to_string(&doc).unwrap();
    let back: Jwks = serde_json::from_str(&text).unwrap();
    assert_eq!(back, doc);
    let set = JwkSet::from_jwks(&back).unwrap();
    assert_eq!(set.len(), 2);
    assert_eq!(set.skipped(), 0);
    for k in &keys {
        assert_eq!(set.get(k.key_id()), Some(k.public_key()));
    }
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["keys"][0]["use"], "sig");
    assert_eq!(v["keys"][0]["alg"], "EdDSA");
    assert_eq!(v["keys"][1]["alg"], "ES256");
    assert_eq!(v["keys"][1]["crv"], "P-256");
}

// ---------------------------------------------------------------------------------------------
// RFC 8037 and key encodings
// ---------------------------------------------------------------------------------------------

#[test]
fn rfc8037_thumbprint() {
    let key = PublicKey::from_jwk(&jwk(json!({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X}))).unwrap();
    assert_eq!(key.thumbprint().as_str(), RFC8037_THUMBPRINT);
    assert_eq!(key.algorithm(), Algorithm::EdDSA);
    let out = key.to_jwk();
    assert_eq!(out.x.as_deref(), Some(RFC8037_X));
    assert_eq!(out.kid.as_deref(), Some(RFC8037_THUMBPRINT));
    // Member order and extra members do not change the thumbprint.
    let reordered = jwk(json!({"x": RFC8037_X, "use": "sig", "crv": "Ed25519", "kid": "k", "kty": "OKP"}));
    assert_eq!(
        PublicKey::from_jwk(&reordered).unwrap().thumbprint().as_str(),
        RFC8037_THUMBPRINT
    );
}

#[test]
fn rfc8037_signing_vector() {
    let d: [u8; 32] = B64.decode(RFC8037_D.as_bytes()).unwrap().try_into().unwrap();
    let key = KeyPair::ed25519_from_seed(&d);
    assert_eq!(key.public_key().to_jwk().x.as_deref(), Some(RFC8037_X));
    assert_eq!(key.key_id().as_str(), RFC8037_THUMBPRINT);
    let signing_input = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
    let signature = Signer::sign(&key, signing_input.as_bytes()).unwrap();
    assert_eq!(
        b64(&signature),
        "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
    );
    let public = PublicKey::from_jwk(&jwk(json!({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X}))).unwrap();
    assert_eq!(
        public.verify(Algorithm::EdDSA, signing_input.as_bytes(), &signature),
        Ok(())
    );
    assert!(
        public
            .verify(Algorithm::ES256, signing_input.as_bytes(), &signature)
            .is_err()
    );
    assert!(public.verify(Algorithm::EdDSA, b"other", &signature).is_err());
}

#[test]
fn pkcs8_and_spki_round_trips() {
    for key in [ed25519("round-trip"), p256("round-trip")] {
        let pem = key.to_pkcs8_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{}", key.algorithm());
        let back = KeyPair::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(back.key_id(), key.key_id());
        assert_eq!(back.algorithm(), key.algorithm());
        let sig = Signer::sign(&back, b"message").unwrap();
        assert_eq!(key.public_key().verify(key.algorithm(), b"message", &sig), Ok(()));

        let der = key.to_pkcs8_der().unwrap();
        assert_eq!(KeyPair::from_pkcs8_der(&der).unwrap().key_id(), key.key_id());

        let public_pem = key.public_key().to_public_key_pem().unwrap();
        assert!(public_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        let public = PublicKey::from_public_key_pem(&public_pem).unwrap();
        assert_eq!(&public, key.public_key());
        assert_eq!(public.thumbprint(), key.key_id());
        let public_der = key.public_key().to_public_key_der().unwrap();
        assert_eq!(&PublicKey::from_public_key_der(&public_der).unwrap(), key.public_key());

        // Each PEM reader refuses the other kind of block.
        assert_eq!(
            PublicKey::from_public_key_pem(&pem).unwrap_err(),
            KeyError::Encoding("PEM: expected a PUBLIC KEY block")
        );
        assert_eq!(
            KeyPair::from_pkcs8_pem(&public_pem).unwrap_err(),
            KeyError::Encoding("PEM: expected a PRIVATE KEY block")
        );
    }
    assert_eq!(
        KeyPair::from_pkcs8_pem("not a pem").unwrap_err(),
        KeyError::Encoding("PEM")
    );
    assert_eq!(
        KeyPair::from_pkcs8_der(b"\x30\x03\x02\x01\x00").unwrap_err(),
        KeyError::Encoding("PKCS#8 DER")
    );
}

#[test]
fn keypair_debug_shows_the_kid_but_no_secret() {
    for key in [ed25519("debug"), p256("debug")] {
        let pem = key.to_pkcs8_pem().unwrap();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = key.to_pkcs8_der().unwrap();
        let secret = SEEDS.bytes("debug");
        for text in [format!("{key:?}"), format!("{key:#?}")] {
            assert!(text.contains(key.key_id().as_str()), "{text}");
            assert!(text.contains(key.algorithm().as_str()), "{text}");
            assert!(!text.contains(&body), "{text}");
            for line in pem.lines().filter(|l| !l.starts_with("-----")) {
                assert!(!text.contains(line), "{text}");
            }
            assert!(!text.contains("PRIVATE KEY"), "{text}");
            assert!(!text.contains(&b64(secret)), "{text}");
            assert!(!text.contains(&format!("{secret:?}")), "{text}");
            assert!(
                !text.contains(&format!("{}, {}, {}", secret[0], secret[1], secret[2])),
                "{text}"
            );
            let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
            assert!(!text.to_lowercase().contains(&hex[..16]), "{text}");
            assert!(!text.contains(&b64(&der[..]).as_str()[..40]), "{text}");
        }
    }
}

#[test]
fn public_key_verify_checks_the_algorithm() {
    let ed = ed25519("k");
    let ec = p256("k");
    let sig_ed = Signer::sign(&ed, b"m").unwrap();
    let sig_ec = Signer::sign(&ec, b"m").unwrap();
    assert_eq!(sig_ed.len(), 64);
    assert_eq!(sig_ec.len(), 64);
    assert_eq!(ed.public_key().verify(Algorithm::EdDSA, b"m", &sig_ed), Ok(()));
    assert_eq!(ec.public_key().verify(Algorithm::ES256, b"m", &sig_ec), Ok(()));
    assert_eq!(
        ed.public_key().verify(Algorithm::ES256, b"m", &sig_ed),
        Err(aip_aat::keys::SignatureError::AlgorithmMismatch(Algorithm::ES256))
    );
    assert_eq!(
        ec.public_key().verify(Algorithm::EdDSA, b"m", &sig_ec),
        Err(aip_aat::keys::SignatureError::AlgorithmMismatch(Algorithm::EdDSA))
    );
    assert_eq!(
        ec.public_key().verify(Algorithm::ES256, b"m", &sig_ec[..63]),
        Err(aip_aat::keys::SignatureError::Invalid)
    );
    assert_eq!(
        ec.public_key().verify(Algorithm::ES256, b"n", &sig_ec),
        Err(aip_aat::keys::SignatureError::Invalid)
    );
}

#[test]
fn issuer_keys_stop_one_trusted_issuer_signing_as_another() {
    let issuer_a = ed25519("issuer-a");
    let issuer_b = ed25519("issuer-b");
    let agent = ed25519("agent");
    let mut impersonation = claims(&agent);
    impersonation.iss = "https://issuer-b.example".into();
    let token = encode_aat(&impersonation, &issuer_a).unwrap();
    let validation = Validation::new(AUDIENCE).with_trusted_issuers([ISSUER, "https://issuer-b.example"]);

    // One shared set answers for any issuer: A's key verifies a token claiming to be B's.
    let shared = keys_of(&[&issuer_a, &issuer_b]);
    assert!(verify_with(&token, &shared, NOW, &validation).is_ok());

    // Per-issuer sets look the kid up only among B's keys.
    let mut per_issuer = IssuerKeys::new();
    per_issuer
        .insert(ISSUER, keys_of(&[&issuer_a]))
        .insert("https://issuer-b.example", keys_of(&[&issuer_b]));
    assert_refused(
        verify_with(&token, &per_issuer, NOW, &validation),
        &AatError::UnknownSigningKey,
        "unknown_signing_key",
    );
    assert!(
        verify_with(
            &encode_aat(&claims(&agent), &issuer_a).unwrap(),
            &per_issuer,
            NOW,
            &validation
        )
        .is_ok()
    );
    let mut genuine_b = claims(&agent);
    genuine_b.iss = "https://issuer-b.example".into();
    assert!(
        verify_with(
            &encode_aat(&genuine_b, &issuer_b).unwrap(),
            &per_issuer,
            NOW,
            &validation
        )
        .is_ok()
    );
    assert!(per_issuer.get("https://unknown.example").is_none());
}
