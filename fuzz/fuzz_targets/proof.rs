//! Per-call proof verification on arbitrary proofs and arguments, against a valid AAT.
#![no_main]

use std::sync::LazyLock;

use aip_aat::clock::FixedClock;
use aip_aat::ids::{AgentId, Jti};
use aip_aat::keys::{JwkSet, KeyPair};
use aip_aat::proof::{Call, ProofValidation, verify_proof};
use aip_aat::replay::InMemoryReplayCache;
use aip_aat::token::*;
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_770_000_000;

static AAT: LazyLock<VerifiedAat> = LazyLock::new(|| {
    let issuer = KeyPair::ed25519_from_seed(&[7; 32]);
    let agent = KeyPair::ed25519_from_seed(&[9; 32]);
    let id: AgentId = "ag_550e8400-e29b-41d4-a716-446655440000"
        .parse()
        .unwrap_or_else(|_| std::process::abort());
    let claims = AatClaims {
        aat_version: AAT_VERSION.into(),
        iss: "https://issuer.example".into(),
        sub: id.clone(),
        aud: Audience::one("files-proxy"),
        iat: NOW,
        exp: NOW + 900,
        nbf: None,
        jti: "fuzz".parse::<Jti>().unwrap_or_else(|_| std::process::abort()),
        agent: AgentClaims {
            id,
            name: None,
            public_key_thumbprint: agent.key_id().clone(),
            aid_hash: None,
        },
        user_binding: None,
        capabilities: Capabilities::default(),
        context: ContextClaims {
            session_id: "s".into(),
            policy_hash: None,
            registry_id: None,
        },
        cnf: Some(Confirmation {
            jkt: agent.key_id().clone(),
        }),
    };
    let token = encode_aat(&claims, &issuer).unwrap_or_else(|_| std::process::abort());
    UnverifiedAat::parse(&token)
        .and_then(|t| {
            t.verify(
                &JwkSet::from_keys([issuer.public_key()]),
                &FixedClock::new(NOW),
                &Validation::new("files-proxy"),
            )
        })
        .unwrap_or_else(|_| std::process::abort())
});

fuzz_target!(|input: (&str, &str, &str)| {
    let (proof, tool, arguments) = input;
    let arguments: Option<serde_json::Value> = serde_json::from_str(arguments).ok();
    let call = Call::tools_call(tool, arguments.as_ref());
    let replay = InMemoryReplayCache::new(64);
    if let Err(e) = verify_proof(proof, &AAT, &call, &ProofValidation::new("files-proxy"), &replay, NOW) {
        let _ = e.aat_error();
    }
});
