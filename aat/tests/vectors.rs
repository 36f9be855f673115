//! Test vectors for other implementations, in `tests/vectors/` (format: `vectors/README.md`).
//!
//! The files are produced by the generator below from fixed seeds and committed. This test
//! regenerates them and fails if the committed files differ; `UPDATE_VECTORS=1 cargo test
//! -p aip-aat --test vectors` rewrites them. Separately, every committed vector is checked
//! against this implementation, so a generator bug cannot hide a verifier bug.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Seeds;
use std::path::{Path, PathBuf};

use aip_aat::clock::FixedClock;
use aip_aat::delegation::{self, DelegationError, Grant, append_reproducibly, mint_reproducibly, root_key_id};
use aip_aat::ids::{AgentId, Jti};
use aip_aat::jcs;
use aip_aat::jws;
use aip_aat::keys::{Algorithm, JwkSet, Jwks, KeyPair, PublicKey, Signer};
use aip_aat::proof::{Call, ProofValidation, create_proof_with_jti, verify_proof};
use aip_aat::replay::{InMemoryReplayCache, ReplayCache, ReplayScope};
use aip_aat::revocation::{RevocationList, RevokedAgent, SignedListError, SignedRevocationList, SupersededKey};
use aip_aat::token::{
    AAT_VERSION, AatClaims, AgentClaims, Audience, AuthMethod, Capabilities, Confirmation, ContextClaims,
    DelegationScope, UnverifiedAat, UserBinding, Validation, encode_aat,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};

/// 2026-02-02T02:40:00Z: the "now" of every vector.
const NOW: i64 = 1_770_000_000;
const ISSUER: &str = "https://issuer.aip.example";
const AUDIENCE: &str = "files-proxy";

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

/// The only source of key material and identifiers in the vectors.
const SEEDS: Seeds = Seeds("aip-aat test vectors v1");

fn ed25519(label: &str) -> KeyPair {
    SEEDS.ed25519(label)
}

fn p256(label: &str) -> KeyPair {
    SEEDS.p256(label)
}

fn uuid_from(label: &str) -> String {
    SEEDS.uuid(label)
}

struct Keys {
    issuer_ed: KeyPair,
    issuer_p256: KeyPair,
    agent_ed: KeyPair,
    agent_p256: KeyPair,
    attacker: KeyPair,
}

impl Keys {
    fn new() -> Self {
        Self {
            issuer_ed: ed25519("issuer-ed25519"),
            issuer_p256: p256("issuer-p256"),
            agent_ed: ed25519("agent-ed25519"),
            agent_p256: p256("agent-p256"),
            attacker: ed25519("attacker"),
        }
    }

    fn jwks(&self) -> Value {
        serde_json::to_value(Jwks::from_keys([
            self.issuer_ed.public_key(),
            self.issuer_p256.public_key(),
        ]))
        .unwrap()
    }
}

fn claims(agent: &dyn Signer, label: &str, iat: i64, exp: i64) -> AatClaims {
    let agent_id: AgentId = format!("ag_{}", uuid_from(&format!("agent-id/{label}")))
        .parse()
        .unwrap();
    AatClaims {
        aat_version: AAT_VERSION.into(),
        iss: ISSUER.into(),
        sub: agent_id.clone(),
        aud: Audience::one(AUDIENCE),
        iat,
        exp,
        nbf: None,
        jti: uuid_from(&format!("jti/{label}")).parse::<Jti>().unwrap(),
        agent: AgentClaims {
            id: agent_id,
            name: Some("code review agent".into()),
            public_key_thumbprint: agent.key_id().clone(),
            aid_hash: None,
        },
        user_binding: Some(UserBinding {
            user_id: "alice@example.com".into(),
            auth_method: AuthMethod::Oidc,
            auth_time: iat - 600,
            delegation_scope: Some(DelegationScope::Tools),
        }),
        capabilities: Capabilities {
            tools: vec!["read_file".into(), "list_directory".into()],
            ..Default::default()
        },
        context: ContextClaims {
            session_id: uuid_from(&format!("session/{label}")),
            policy_hash: None,
            registry_id: Some("https://registry.aip.example".into()),
        },
        cnf: Some(Confirmation {
            jkt: agent.key_id().clone(),
        }),
    }
}

/// Signs arbitrary claims JSON with an arbitrary header (for vectors no encoder would make).
fn sign_with_header(header: Value, payload: &Value, key: &dyn Signer) -> String {
    jws::sign_raw(
        &serde_json::to_vec(&header).unwrap(),
        &serde_json::to_vec(payload).unwrap(),
        key,
    )
    .unwrap()
}

fn header(alg: &str, kid: &str) -> Value {
    json!({"alg": alg, "typ": "aat+jwt", "kid": kid})
}

/// Re-encodes a token with one signature byte changed.
fn corrupt_signature(token: &str) -> String {
    let (input, sig) = token.rsplit_once('.').unwrap();
    let mut bytes = B64.decode(sig).unwrap();
    bytes[10] ^= 0x01;
    format!("{input}.{}", B64.encode(bytes))
}

fn aat_vectors() -> Value {
    let k = Keys::new();
    let jwks = k.jwks();
    let ed_kid = k.issuer_ed.key_id().to_string();
    let base = claims(&k.agent_ed, "base", NOW - 60, NOW + 840);
    let base_json = serde_json::to_value(&base).unwrap();
    let valid = encode_aat(&base, &k.issuer_ed).unwrap();
    let mut v = Vec::new();
    let mut push = |name: &str, token: String, expect: &str, extra: Option<(&str, Value)>| {
        let mut e =
            json!({"name": name, "token": token, "jwks": jwks, "audience": AUDIENCE, "now": NOW, "expect": expect});
        if let Some((k, val)) = extra {
            e[k] = val;
        }
        v.push(e);
    };
    let with = |f: &dyn Fn(&mut AatClaims)| {
        let mut c = base.clone();
        f(&mut c);
        c
    };
    let with_json = |f: &dyn Fn(&mut Value)| {
        let mut c = base_json.clone();
        f(&mut c);
        c
    };

    // Valid tokens.
    push("valid-eddsa", valid.clone(), "valid", None);
    push(
        "valid-es256",
        encode_aat(&claims(&k.agent_p256, "es256", NOW - 60, NOW + 840), &k.issuer_p256).unwrap(),
        "valid",
        None,
    );
    let many = with(&|c| c.aud = Audience::many(["other-proxy".to_owned(), AUDIENCE.to_owned()]).unwrap());
    push(
        "valid-audience-array",
        encode_aat(&many, &k.issuer_ed).unwrap(),
        "valid",
        None,
    );
    let in_leeway = with(&|c| {
        c.iat = NOW - 930;
        c.exp = NOW - 30;
    });
    push(
        "valid-expired-within-clock-skew",
        encode_aat(&in_leeway, &k.issuer_ed).unwrap(),
        "valid",
        None,
    );
    let attested = with(&|c| c.user_binding = None);
    push(
        "valid-no-user-binding",
        encode_aat(&attested, &k.issuer_ed).unwrap(),
        "valid",
        None,
    );
    push(
        "valid-trusted-issuer",
        valid.clone(),
        "valid",
        Some(("trusted_issuers", json!([ISSUER, "https://other.example"]))),
    );

    // Signature failures.
    push(
        "signature-corrupted",
        corrupt_signature(&valid),
        "signature_invalid",
        None,
    );
    let impostor = ed25519("impostor");
    let forged = sign_with_header(header("EdDSA", &ed_kid), &base_json, &impostor);
    push(
        "signature-by-other-key-with-issuer-kid",
        forged,
        "signature_invalid",
        None,
    );
    let (input, _) = valid.rsplit_once('.').unwrap();
    push(
        "alg-none",
        format!(
            "{}.{}.",
            B64.encode(br#"{"alg":"none","typ":"aat+jwt"}"#),
            input.split_once('.').unwrap().1
        ),
        "signature_invalid",
        None,
    );
    let hs = {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.typ = Some("aat+jwt".into());
        h.kid = Some(ed_kid.clone());
        let secret = B64.decode(k.issuer_ed.public_key().to_jwk().x.unwrap()).unwrap();
        jsonwebtoken::encode(&h, &base_json, &jsonwebtoken::EncodingKey::from_secret(&secret)).unwrap()
    };
    push("alg-hs256-with-public-key-as-secret", hs, "signature_invalid", None);
    push(
        "alg-es256-header-on-ed25519-key",
        sign_with_header(header("ES256", &ed_kid), &base_json, &k.issuer_ed),
        "signature_invalid",
        None,
    );
    push(
        "alg-rs256",
        sign_with_header(header("RS256", &ed_kid), &base_json, &k.issuer_ed),
        "signature_invalid",
        None,
    );
    push(
        "kid-unknown",
        encode_aat(&base, &impostor).unwrap(),
        "unknown_signing_key",
        None,
    );
    push(
        "kid-missing",
        sign_with_header(json!({"alg": "EdDSA", "typ": "aat+jwt"}), &base_json, &k.issuer_ed),
        "unknown_signing_key",
        None,
    );

    // Structure failures.
    push("malformed-two-segments", input.to_owned(), "malformed_aat", None);
    push(
        "malformed-padded-base64",
        valid.replacen('.', "=.", 1),
        "malformed_aat",
        None,
    );
    push(
        "malformed-typ-jwt",
        sign_with_header(
            json!({"alg": "EdDSA", "typ": "JWT", "kid": ed_kid}),
            &base_json,
            &k.issuer_ed,
        ),
        "malformed_aat",
        None,
    );
    push(
        "malformed-typ-missing",
        sign_with_header(json!({"alg": "EdDSA", "kid": ed_kid}), &base_json, &k.issuer_ed),
        "malformed_aat",
        None,
    );
    push(
        "malformed-crit-header",
        sign_with_header(
            json!({"alg": "EdDSA", "typ": "aat+jwt", "kid": ed_kid, "crit": ["exp"]}),
            &base_json,
            &k.issuer_ed,
        ),
        "malformed_aat",
        None,
    );
    let no_jti = with_json(&|c| {
        c.as_object_mut().unwrap().remove("jti");
    });
    push(
        "malformed-missing-jti",
        sign_with_header(header("EdDSA", &ed_kid), &no_jti, &k.issuer_ed),
        "malformed_aat",
        None,
    );
    let float_exp = with_json(&|c| c["exp"] = json!((NOW + 840) as f64 + 0.5));
    push(
        "malformed-non-integer-exp",
        sign_with_header(header("EdDSA", &ed_kid), &float_exp, &k.issuer_ed),
        "malformed_aat",
        None,
    );
    let sub_differs = with_json(&|c| c["sub"] = json!(format!("ag_{}", uuid_from("someone-else"))));
    push(
        "malformed-sub-differs-from-agent-id",
        sign_with_header(header("EdDSA", &ed_kid), &sub_differs, &k.issuer_ed),
        "malformed_aat",
        None,
    );
    let version = with_json(&|c| c["aat_version"] = json!("aip/v1alpha2"));
    push(
        "unsupported-version",
        sign_with_header(header("EdDSA", &ed_kid), &version, &k.issuer_ed),
        "unsupported_version",
        None,
    );

    // Issuer.
    push(
        "untrusted-issuer",
        valid.clone(),
        "untrusted_issuer",
        Some(("trusted_issuers", json!(["https://other.example"]))),
    );

    // Time.
    let expired = with(&|c| {
        c.iat = NOW - 931;
        c.exp = NOW - 31;
    });
    push(
        "expired",
        encode_aat(&expired, &k.issuer_ed).unwrap(),
        "aat_expired",
        None,
    );
    let nbf = with(&|c| {
        c.iat = NOW - 60;
        c.nbf = Some(NOW + 31);
    });
    push(
        "not-yet-valid-nbf",
        encode_aat(&nbf, &k.issuer_ed).unwrap(),
        "not_yet_valid",
        None,
    );
    let future = with(&|c| {
        c.iat = NOW + 31;
        c.exp = NOW + 931;
    });
    push(
        "not-yet-valid-iat-in-future",
        encode_aat(&future, &k.issuer_ed).unwrap(),
        "not_yet_valid",
        None,
    );
    let long = with_json(&|c| {
        c["iat"] = json!(NOW - 60);
        c["exp"] = json!(NOW - 60 + 86_401);
    });
    push(
        "lifetime-over-24h",
        sign_with_header(header("EdDSA", &ed_kid), &long, &k.issuer_ed),
        "aat_expired",
        None,
    );

    // Audience, and check order (expiry is step 5, audience step 6).
    let other_aud = with(&|c| c.aud = Audience::one("another-proxy"));
    push(
        "audience-mismatch",
        encode_aat(&other_aud, &k.issuer_ed).unwrap(),
        "audience_mismatch",
        None,
    );
    let both = with(&|c| {
        c.aud = Audience::one("another-proxy");
        c.iat = NOW - 931;
        c.exp = NOW - 31;
    });
    push(
        "expired-and-audience-mismatch-reports-expiry",
        encode_aat(&both, &k.issuer_ed).unwrap(),
        "aat_expired",
        None,
    );
    Value::Array(v)
}

fn proof_vectors() -> Value {
    let k = Keys::new();
    let jwks = k.jwks();
    let aat = encode_aat(&claims(&k.agent_ed, "proof", NOW - 60, NOW + 840), &k.issuer_ed).unwrap();
    let aat_p256 = encode_aat(&claims(&k.agent_p256, "proof-p256", NOW - 60, NOW + 840), &k.issuer_ed).unwrap();
    let other_aat = encode_aat(&claims(&k.agent_ed, "proof-other", NOW - 60, NOW + 840), &k.issuer_ed).unwrap();
    let args = json!({"path": "/home/alice/notes.txt", "limit": 100});
    let call = json!({"method": "tools/call", "tool": "read_file", "arguments": args});
    let mut v = Vec::new();
    let mut n = 0;
    let mut jti = || {
        n += 1;
        Jti::try_from(uuid_from(&format!("proof-jti/{n}"))).unwrap()
    };
    let mut make =
        |signer: &dyn Signer, token: &str, tool: &str, args: Option<&Value>, method: &str, aud: &str, iat: i64| {
            let call = Call {
                method,
                tool,
                arguments: args,
            };
            create_proof_with_jti(signer, token, &call, aud, iat, jti()).unwrap()
        };
    let mut push = |name: &str, aat: &str, proof: String, call: &Value, expect: &str, extra: Option<(&str, Value)>| {
        let mut e = json!({"name": name, "aat": aat, "jwks": jwks, "audience": AUDIENCE, "proof": proof, "call": call, "now": NOW, "expect": expect});
        if let Some((k, val)) = extra {
            e[k] = val;
        }
        v.push(e);
    };
    let a = Some(&args);

    push(
        "valid-eddsa-agent",
        &aat,
        make(&k.agent_ed, &aat, "read_file", a, "tools/call", AUDIENCE, NOW),
        &call,
        "valid",
        None,
    );
    push(
        "valid-es256-agent",
        &aat_p256,
        make(
            &k.agent_p256,
            &aat_p256,
            "read_file",
            a,
            "tools/call",
            AUDIENCE,
            NOW - 10,
        ),
        &call,
        "valid",
        None,
    );
    let no_args = json!({"method": "tools/call", "tool": "list_directory"});
    push(
        "valid-no-arguments",
        &aat,
        make(&k.agent_ed, &aat, "list_directory", None, "tools/call", AUDIENCE, NOW),
        &no_args,
        "valid",
        None,
    );
    push(
        "valid-iat-300s-old",
        &aat,
        make(&k.agent_ed, &aat, "read_file", a, "tools/call", AUDIENCE, NOW - 300),
        &call,
        "valid",
        None,
    );

    let other_args = json!({"path": "/etc/shadow", "limit": 100});
    push(
        "mismatch-arguments",
        &aat,
        make(
            &k.agent_ed,
            &aat,
            "read_file",
            Some(&other_args),
            "tools/call",
            AUDIENCE,
            NOW,
        ),
        &call,
        "proof_mismatch",
        None,
    );
    push(
        "mismatch-tool",
        &aat,
        make(&k.agent_ed, &aat, "write_file", a, "tools/call", AUDIENCE, NOW),
        &call,
        "proof_mismatch",
        None,
    );
    push(
        "mismatch-method",
        &aat,
        make(&k.agent_ed, &aat, "read_file", a, "resources/read", AUDIENCE, NOW),
        &call,
        "proof_mismatch",
        None,
    );
    push(
        "mismatch-audience",
        &aat,
        make(&k.agent_ed, &aat, "read_file", a, "tools/call", "another-proxy", NOW),
        &call,
        "proof_mismatch",
        None,
    );
    push(
        "mismatch-other-aat",
        &aat,
        make(&k.agent_ed, &other_aat, "read_file", a, "tools/call", AUDIENCE, NOW),
        &call,
        "proof_mismatch",
        None,
    );
    push(
        "mismatch-stolen-aat-attacker-key",
        &aat,
        make(&k.attacker, &aat, "read_file", a, "tools/call", AUDIENCE, NOW),
        &call,
        "proof_mismatch",
        None,
    );

    let good = make(&k.agent_ed, &aat, "read_file", a, "tools/call", AUDIENCE, NOW);
    push(
        "invalid-signature",
        &aat,
        corrupt_signature(&good),
        &call,
        "proof_invalid",
        None,
    );
    push(
        "invalid-too-old",
        &aat,
        make(&k.agent_ed, &aat, "read_file", a, "tools/call", AUDIENCE, NOW - 301),
        &call,
        "proof_invalid",
        None,
    );
    push(
        "invalid-from-future",
        &aat,
        make(&k.agent_ed, &aat, "read_file", a, "tools/call", AUDIENCE, NOW + 31),
        &call,
        "proof_invalid",
        None,
    );
    let (_, payload_and_sig) = good.split_once('.').unwrap();
    let payload = B64.decode(payload_and_sig.split_once('.').unwrap().0).unwrap();
    let mut jwk = serde_json::to_value(k.agent_ed.public_key().to_jwk()).unwrap();
    jwk.as_object_mut().unwrap().remove("kid");
    let wrong_typ = jws::sign_raw(
        &serde_json::to_vec(&json!({"alg": "EdDSA", "typ": "JWT", "jwk": jwk})).unwrap(),
        &payload,
        &k.agent_ed,
    )
    .unwrap();
    push("invalid-typ", &aat, wrong_typ, &call, "proof_invalid", None);
    let no_jwk = jws::sign_raw(
        &serde_json::to_vec(&json!({"alg": "EdDSA", "typ": "aip-pop+jwt"})).unwrap(),
        &payload,
        &k.agent_ed,
    )
    .unwrap();
    push("invalid-no-jwk", &aat, no_jwk, &call, "proof_invalid", None);

    let replayed = make(&k.agent_ed, &aat, "read_file", a, "tools/call", AUDIENCE, NOW);
    let replayed_jti = serde_json::from_slice::<Value>(&B64.decode(replayed.split('.').nth(1).unwrap()).unwrap())
        .unwrap()["jti"]
        .clone();
    push(
        "replayed",
        &aat,
        replayed,
        &call,
        "proof_replayed",
        Some(("replayed_jtis", json!([replayed_jti]))),
    );
    Value::Array(v)
}

fn jcs_vectors() -> Value {
    let mut v = vec![
        json!({"name": "rfc8785-3.2.2-example",
               "input": "{\n  \"numbers\": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],\n  \"string\": \"\\u20ac$\\u000F\\u000aA'\\u0042\\u0022\\u005c\\\\\\\"\\/\",\n  \"literals\": [null, true, false]\n}",
               "canonical": "{\"literals\":[null,true,false],\"numbers\":[333333333.3333333,1e+30,4.5,0.002,1e-27],\"string\":\"\u{20ac}$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}"}),
        json!({"name": "rfc8785-3.2.3-utf16-key-order",
               "input": "{\n  \"\\u20ac\": \"Euro Sign\",\n  \"\\r\": \"Carriage Return\",\n  \"\\ufb33\": \"Hebrew Letter Dalet With Dagesh\",\n  \"1\": \"One\",\n  \"\\ud83d\\ude00\": \"Emoji: Grinning Face\",\n  \"\\u0080\": \"Control\",\n  \"\\u00f6\": \"Latin Small Letter O With Diaeresis\"\n}",
               "canonical": "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20ac}\":\"Euro Sign\",\"\u{1f600}\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}"}),
        json!({"name": "nested-objects-sorted-at-every-level", "input": "{\"b\":{\"z\":1,\"a\":[{\"y\":true,\"x\":null}]},\"a\":\"\"}", "canonical": "{\"a\":\"\",\"b\":{\"a\":[{\"x\":null,\"y\":true}],\"z\":1}}"}),
        json!({"name": "whitespace-removed", "input": " [ 1 , { } , [ ] , \"\" ] ", "canonical": "[1,{},[],\"\"]"}),
        json!({"name": "control-characters-escaped", "input": "\"\\u0000\\u0008\\u0009\\u000a\\u000c\\u000d\\u001f\\u007f\"", "canonical": "\"\\u0000\\b\\t\\n\\f\\r\\u001f\u{7f}\""}),
        json!({"name": "solidus-and-unicode-unescaped", "input": "\"\\/\\u00e9\\u4e2d\"", "canonical": "\"/\u{e9}\u{4e2d}\""}),
        json!({"name": "mcp-tool-arguments", "input": "{\"path\": \"/etc/hosts\", \"options\": {\"encoding\": \"utf-8\", \"max_bytes\": 1.0E6}}", "canonical": "{\"options\":{\"encoding\":\"utf-8\",\"max_bytes\":1000000},\"path\":\"/etc/hosts\"}"}),
    ];
    // RFC 8785 Appendix B: IEEE 754 bit patterns and their ECMAScript serialization. The input
    // spells each double with 17 significant digits, which always round-trips.
    let appendix_b = [
        ("0000000000000000", "0"),
        ("8000000000000000", "0"),
        ("0000000000000001", "5e-324"),
        ("8000000000000001", "-5e-324"),
        ("7fefffffffffffff", "1.7976931348623157e+308"),
        ("ffefffffffffffff", "-1.7976931348623157e+308"),
        ("4340000000000000", "9007199254740992"),
        ("c340000000000000", "-9007199254740992"),
        ("4430000000000000", "295147905179352830000"),
        ("44b52d02c7e14af5", "9.999999999999997e+22"),
        ("44b52d02c7e14af6", "1e+23"),
        ("44b52d02c7e14af7", "1.0000000000000001e+23"),
        ("444b1ae4d6e2ef4e", "999999999999999700000"),
        ("444b1ae4d6e2ef4f", "999999999999999900000"),
        ("444b1ae4d6e2ef50", "1e+21"),
        ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
        ("3eb0c6f7a0b5ed8d", "0.000001"),
        ("41b3de4355555553", "333333333.3333332"),
        ("41b3de4355555554", "333333333.33333325"),
        ("41b3de4355555555", "333333333.3333333"),
        ("41b3de4355555556", "333333333.3333334"),
        ("41b3de4355555557", "333333333.33333343"),
        ("becbf647612f3696", "-0.0000033333333333333333"),
        ("43143ff3c1cb0959", "1424953923781206.2"),
    ];
    for (bits, canonical) in appendix_b {
        let value = f64::from_bits(u64::from_str_radix(bits, 16).unwrap());
        v.push(json!({"name": format!("rfc8785-appendix-b-{bits}"), "input": format!("{value:.16e}"), "canonical": canonical}));
    }
    v.push(json!({"name": "integer-beyond-2^53-rounds-to-double", "input": "9007199254740993", "canonical": "9007199254740992"}));
    Value::Array(v)
}

/// Signed revocation lists (`/v1/revocations.jws`): the list with `issued_at` and `expires_at`,
/// signed by a registry key.
fn revocation_vectors() -> Value {
    let registry_ed = ed25519("registry-ed25519");
    let registry_p256 = p256("registry-p256");
    let at = |t: i64| time::OffsetDateTime::from_unix_timestamp(t).unwrap();
    let mut list = RevocationList::empty(42, at(NOW - 900));
    list.revoked_agents.push(RevokedAgent {
        agent_id: format!("ag_{}", uuid_from("revoked-agent")).parse().unwrap(),
        revoked_at: at(NOW - 900),
        reason: Some("Security incident".into()),
    });
    list.superseded_keys.push(SupersededKey {
        agent_id: format!("ag_{}", uuid_from("rotated-agent")).parse().unwrap(),
        key_thumbprint: ed25519("rotated-out-key").key_id().clone(),
        valid_until: at(NOW - 300),
    });
    let signed = |issued_at: i64, expires_at: i64, key: &KeyPair| {
        SignedRevocationList::new(list.clone(), at(issued_at), at(expires_at))
            .sign(key)
            .unwrap()
    };
    let jwks = |key: &KeyPair| serde_json::to_value(Jwks::from_keys([key.public_key()])).unwrap();
    let payload = |issued_at: i64, expires_at: i64| {
        serde_json::to_value(SignedRevocationList::new(list.clone(), at(issued_at), at(expires_at))).unwrap()
    };
    let bare = jws::sign("aip-revocations+jwt", &jcs::to_vec(&list).unwrap(), &registry_ed, false).unwrap();
    json!([
        {"name": "valid-ed25519", "signed": signed(NOW - 600, NOW + 3000, &registry_ed),
         "jwks": jwks(&registry_ed), "now": NOW, "expect": "valid", "payload": payload(NOW - 600, NOW + 3000)},
        {"name": "valid-p256", "signed": signed(NOW - 600, NOW + 3000, &registry_p256),
         "jwks": jwks(&registry_p256), "now": NOW, "expect": "valid", "payload": payload(NOW - 600, NOW + 3000)},
        {"name": "expired", "signed": signed(NOW - 3600, NOW, &registry_ed),
         "jwks": jwks(&registry_ed), "now": NOW, "expect": "expired"},
        {"name": "no-issued-at-or-expires-at", "signed": bare,
         "jwks": jwks(&registry_ed), "now": NOW, "expect": "no_expiry"},
        {"name": "signature-invalid", "signed": corrupt_signature(&signed(NOW - 600, NOW + 3000, &registry_ed)),
         "jwks": jwks(&registry_ed), "now": NOW, "expect": "signature_invalid"},
    ])
}

/// Delegable AATs (`aat+biscuit`): a token as minted, delegated once and twice, and chains a
/// verifier must refuse. Every block's next key is derived from the seeds, so the tokens are
/// reproducible (a token in use draws them fresh).
fn delegation_vectors() -> Value {
    let keys = Keys::new();
    let issuer = &keys.issuer_ed;
    let a = &keys.agent_ed;
    let b = p256("delegatee-b");
    let c = ed25519("delegatee-c");
    let next = |label: &str| ed25519(&format!("biscuit-next-key/{label}"));
    let root_claims = claims(a, "delegation", NOW - 60, NOW + 900);
    let root = |id: u32| (id == root_key_id(issuer.key_id())).then(|| issuer.public_key().clone());
    let grant = |to: &str, key: &KeyPair, tools: &[&str], expires_at: i64| Grant {
        delegatee: SEEDS.agent_id(to),
        delegatee_key: key.key_id().clone(),
        tools: tools.iter().map(|t| (*t).to_owned()).collect(),
        audience: vec![AUDIENCE.to_owned()],
        expires_at,
    };
    let to_b = grant("delegatee-b", &b, &["read_file"], NOW + 600);
    let to_c = grant("delegatee-c", &c, &["read_file"], NOW + 300);
    let append = |token: &str, by: &KeyPair, by_agent: &AgentId, step: usize, grant: &Grant, label: &str| {
        append_reproducibly(token, &root, by, by_agent, step, grant, &next(label)).unwrap()
    };
    let minted = mint_reproducibly(&root_claims, issuer, &next("minted")).unwrap();
    let a_to_b = append(&minted, a, &root_claims.sub, 1, &to_b, "a-to-b");
    let b_to_c = append(&a_to_b, &b, &to_b.delegatee, 2, &to_c, "b-to-c");
    let widened = append(
        &minted,
        a,
        &root_claims.sub,
        1,
        &grant("delegatee-b", &b, &["read_file", "delete_file"], NOW + 600),
        "widened",
    );
    let forged = append(&a_to_b, &keys.attacker, &to_b.delegatee, 2, &to_c, "forged");
    let registry_rooted = mint_reproducibly(&root_claims, &ed25519("registry-ed25519"), &next("registry")).unwrap();
    let tampered = {
        let mut bytes = a_to_b.clone().into_bytes();
        let at = bytes.len() / 2;
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        String::from_utf8(bytes).unwrap()
    };
    let raw = |key: &KeyPair| hex::encode(key.public_key().to_raw_bytes());
    let jwks = serde_json::to_value(Jwks::from_keys([issuer.public_key()])).unwrap();
    let holder = |agent: &AgentId, key: &KeyPair, tools: &[&str], exp: i64| json!({"agent": agent, "key": key.key_id(), "tools": tools, "audience": [AUDIENCE], "exp": exp});
    let agents_ab = json!([root_claims.sub, to_b.delegatee]);
    let agents_abc = json!([root_claims.sub, to_b.delegatee, to_c.delegatee]);
    let vector = |name: &str, token: &str, now: i64, max_depth: u8, expect: &str, signatures: &str, signers: Value| {
        json!({"name": name, "token": token, "jwks": jwks, "issuer_root_key_id": root_key_id(issuer.key_id()),
               "now": now, "max_depth": max_depth, "expect": expect, "signatures": signatures,
               "block_signers": signers})
    };
    // A valid token's vector also names its blocks' revocation ids, as this toolkit reads them.
    let with = |mut v: Value, extra: Value| {
        let token = v["token"].as_str().unwrap().to_owned();
        let max_depth = u8::try_from(v["max_depth"].as_u64().unwrap()).unwrap();
        let chain = delegation::verify(&token, &root, NOW, max_depth).unwrap();
        let fields = v.as_object_mut().unwrap();
        fields.extend(extra.as_object().unwrap().clone());
        fields.insert(
            "revocation_ids".into(),
            json!(chain.revocation_ids().collect::<Vec<_>>()),
        );
        v
    };
    json!([
        with(
            vector("minted", &minted, NOW, 3, "valid", "valid", json!([])),
            json!({"holder": holder(&root_claims.sub, a, &["read_file", "list_directory"], NOW + 900),
                    "agents": [root_claims.sub], "depth": 2})
        ),
        with(
            vector("a-to-b", &a_to_b, NOW, 3, "valid", "valid", json!([raw(a)])),
            json!({"holder": holder(&to_b.delegatee, &b, &["read_file"], NOW + 600), "agents": agents_ab, "depth": 3})
        ),
        with(
            vector(
                "a-to-b-to-c",
                &b_to_c,
                NOW,
                4,
                "valid",
                "valid",
                json!([raw(a), raw(&b)])
            ),
            json!({"holder": holder(&to_c.delegatee, &c, &["read_file"], NOW + 300), "agents": agents_abc, "depth": 4})
        ),
        vector(
            "a-to-b-to-c-default-depth",
            &b_to_c,
            NOW,
            3,
            "delegation_too_deep",
            "valid",
            json!([raw(a), raw(&b)])
        ),
        vector(
            "a-to-b-expired",
            &a_to_b,
            NOW + 600,
            3,
            "aat_expired",
            "valid",
            json!([raw(a)])
        ),
        vector(
            "widened-tools",
            &widened,
            NOW,
            3,
            "delegation_widened",
            "valid",
            json!([raw(a)])
        ),
        vector(
            "step-signed-by-another-key",
            &forged,
            NOW,
            4,
            "delegation_invalid",
            "valid",
            json!([raw(a), raw(&keys.attacker)])
        ),
        vector(
            "rooted-in-a-key-not-in-the-jwks",
            &registry_rooted,
            NOW,
            3,
            "delegation_invalid",
            "unknown_root",
            json!([])
        ),
        vector(
            "tampered",
            &tampered,
            NOW,
            3,
            "delegation_invalid",
            "invalid",
            json!([raw(a)])
        ),
    ])
}

fn files() -> [(&'static str, Value); 5] {
    [
        ("jcs.json", jcs_vectors()),
        ("aat.json", aat_vectors()),
        ("proof.json", proof_vectors()),
        ("revocations.json", revocation_vectors()),
        ("delegation.json", delegation_vectors()),
    ]
}

fn render(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap();
    text.push('\n');
    text
}

/// Writes the generated files once per run when `UPDATE_VECTORS=1`.
fn update_requested() -> bool {
    static WRITTEN: std::sync::Once = std::sync::Once::new();
    let update = std::env::var_os("UPDATE_VECTORS").is_some_and(|v| v == "1");
    if update {
        WRITTEN.call_once(|| {
            for (name, value) in files() {
                std::fs::write(dir().join(name), render(&value)).unwrap();
            }
        });
    }
    update
}

fn load(name: &str) -> Vec<Value> {
    update_requested();
    let text = std::fs::read_to_string(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::from_str::<Value>(&text)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn committed_vectors_match_the_generator() {
    if update_requested() {
        return;
    }
    for (name, value) in files() {
        let path = dir().join(name);
        let generated = render(&value);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{name} differs from the generator; if the change is intended, run \
             `UPDATE_VECTORS=1 cargo test -p aip-aat --test vectors` and commit the result"
        );
    }
}

#[test]
fn generation_is_deterministic() {
    let [a, b, c, d, e] = files();
    let [v, w, x, y, z] = files();
    assert_eq!((a.1, b.1, c.1, d.1, e.1), (v.1, w.1, x.1, y.1, z.1));
}

#[test]
fn jcs_vectors_hold() {
    let vectors = load("jcs.json");
    assert!(vectors.len() >= 30);
    for v in vectors {
        let input = v["input"].as_str().unwrap();
        assert_eq!(
            jcs::canonicalize(input).unwrap(),
            v["canonical"].as_str().unwrap(),
            "{}",
            v["name"]
        );
    }
}

fn jwk_set(v: &Value) -> JwkSet {
    JwkSet::from_jwks(&serde_json::from_value::<Jwks>(v["jwks"].clone()).unwrap()).unwrap()
}

fn aat_validation(v: &Value) -> Validation {
    let validation = Validation::new(v["audience"].as_str().unwrap());
    match v.get("trusted_issuers") {
        Some(issuers) => validation.with_trusted_issuers(
            issuers
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_str().unwrap().to_owned()),
        ),
        None => validation,
    }
}

#[test]
fn aat_vectors_hold() {
    let vectors = load("aat.json");
    let expectations: std::collections::BTreeSet<&str> =
        vectors.iter().map(|v| v["expect"].as_str().unwrap()).collect();
    for needed in [
        "valid",
        "malformed_aat",
        "unsupported_version",
        "untrusted_issuer",
        "unknown_signing_key",
        "signature_invalid",
        "not_yet_valid",
        "aat_expired",
        "audience_mismatch",
    ] {
        assert!(expectations.contains(needed), "no vector expects {needed}");
    }
    for v in &vectors {
        let clock = FixedClock::new(v["now"].as_i64().unwrap());
        let result = UnverifiedAat::parse(v["token"].as_str().unwrap())
            .and_then(|t| t.verify(&jwk_set(v), &clock, &aat_validation(v)));
        let got = match &result {
            Ok(_) => "valid",
            Err(e) => e.aat_error(),
        };
        assert_eq!(got, v["expect"].as_str().unwrap(), "{}: {result:?}", v["name"]);
    }
    let algs: Vec<Algorithm> = vectors
        .iter()
        .filter(|v| v["expect"] == "valid")
        .map(|v| {
            let clock = FixedClock::new(v["now"].as_i64().unwrap());
            let t = UnverifiedAat::parse(v["token"].as_str().unwrap()).unwrap();
            t.verify(&jwk_set(v), &clock, &aat_validation(v)).unwrap().algorithm()
        })
        .collect();
    assert!(algs.contains(&Algorithm::EdDSA) && algs.contains(&Algorithm::ES256));
}

#[test]
fn proof_vectors_hold() {
    for v in load("proof.json") {
        let now = v["now"].as_i64().unwrap();
        let audience = v["audience"].as_str().unwrap();
        let clock = FixedClock::new(now);
        let aat = UnverifiedAat::parse(v["aat"].as_str().unwrap())
            .unwrap()
            .verify(&jwk_set(&v), &clock, &Validation::new(audience))
            .unwrap();
        let replay = InMemoryReplayCache::new(1_000);
        for jti in v.get("replayed_jtis").and_then(Value::as_array).into_iter().flatten() {
            replay
                .check_and_record(ReplayScope::Proof, jti.as_str().unwrap(), now + 600, now)
                .unwrap();
        }
        let c = &v["call"];
        let call = Call {
            method: c["method"].as_str().unwrap(),
            tool: c["tool"].as_str().unwrap(),
            arguments: c.get("arguments"),
        };
        let result = verify_proof(
            v["proof"].as_str().unwrap(),
            &aat,
            &call,
            &ProofValidation::new(audience),
            &replay,
            now,
        );
        let got = match &result {
            Ok(_) => "valid",
            Err(e) => e.aat_error(),
        };
        assert_eq!(got, v["expect"].as_str().unwrap(), "{}: {result:?}", v["name"]);
    }
}

#[test]
fn revocation_vectors_hold() {
    let vectors = load("revocations.json");
    assert!(vectors.len() >= 5);
    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let now = v["now"].as_i64().unwrap();
        let result = SignedRevocationList::verify(v["signed"].as_str().unwrap(), &jwk_set(&v));
        match v["expect"].as_str().unwrap() {
            "valid" => {
                let signed = result.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(!signed.is_expired(now), "{name}");
                assert_eq!(serde_json::to_value(&signed).unwrap(), v["payload"], "{name}");
            }
            "expired" => assert!(result.unwrap().is_expired(now), "{name}"),
            "no_expiry" => assert!(matches!(result, Err(SignedListError::NoExpiry)), "{name}"),
            "signature_invalid" => assert!(matches!(result, Err(SignedListError::SignatureInvalid)), "{name}"),
            other => panic!("{name}: unknown expectation {other}"),
        }
    }
}

#[test]
fn vector_keys_round_trip_as_jwk() {
    let k = Keys::new();
    for key in [&k.issuer_ed, &k.issuer_p256, &k.agent_ed, &k.agent_p256] {
        let jwk = key.public_key().to_jwk();
        assert_eq!(&PublicKey::from_jwk(&jwk).unwrap(), key.public_key());
    }
}

#[test]
fn delegation_vectors_hold() {
    let vectors = load("delegation.json");
    assert!(vectors.len() >= 9);
    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let keys = jwk_set(&v);
        let issuer_id = u32::try_from(v["issuer_root_key_id"].as_u64().unwrap()).unwrap();
        let root = |id: u32| {
            (id == issuer_id)
                .then(|| keys.iter().find(|key| root_key_id(key.thumbprint()) == id).cloned())
                .flatten()
        };
        let max_depth = u8::try_from(v["max_depth"].as_u64().unwrap()).unwrap();
        let verified = delegation::verify(
            v["token"].as_str().unwrap(),
            &root,
            v["now"].as_i64().unwrap(),
            max_depth,
        );
        match (v["expect"].as_str().unwrap(), verified) {
            ("valid", Ok(chain)) => {
                let held = chain.effective_claims();
                let holder = &v["holder"];
                assert_eq!(held.sub.as_str(), holder["agent"], "{name}");
                assert_eq!(held.confirmation_thumbprint().as_str(), holder["key"], "{name}");
                assert_eq!(json!(held.capabilities.tools), holder["tools"], "{name}");
                assert_eq!(json!(held.aud.as_slice()), holder["audience"], "{name}");
                assert_eq!(json!(held.exp), holder["exp"], "{name}");
                assert_eq!(json!(chain.agents().collect::<Vec<_>>()), v["agents"], "{name}");
                assert_eq!(json!(chain.depth()), v["depth"], "{name}");
                assert_eq!(
                    json!(chain.revocation_ids().collect::<Vec<_>>()),
                    v["revocation_ids"],
                    "{name}"
                );
            }
            (expected, Err(e)) => assert_eq!(e.aat_error(), expected, "{name}: {e}"),
            (expected, Ok(_)) => panic!("{name}: verified, expected {expected}"),
        }
    }
    // No issuer key at all: even the good token's root is unknown.
    let minted = load("delegation.json")[0]["token"].as_str().unwrap().to_owned();
    assert_eq!(
        delegation::verify(&minted, &|_| None, NOW, 3).unwrap_err(),
        DelegationError::UnknownRoot
    );
}
