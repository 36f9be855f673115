//! Costs of the token operations, next to the floor they cannot go below: one Ed25519
//! signature verification.
//!
//! Run: `cargo bench -p aip-aat --bench aat`. Results: docs/benchmarks.md.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;

use aip_aat::clock::FixedClock;
use aip_aat::delegation::{self, Grant};
use aip_aat::ids::{AgentId, Jti};
use aip_aat::keys::{Algorithm, ISSUER_ROLE, JwkSet, Jwks, KeyPair, KeyResolver as _, Signer};
use aip_aat::proof::{Call, ProofValidation, create_proof, verify_proof};
use aip_aat::replay::{InMemoryReplayCache, ReplayCache, ReplayError, ReplayScope};
use aip_aat::revocation::{RevocationIndex, RevocationList, RevokedAat, RevokedAgent, RevokedSession, RevokedUser};
use aip_aat::token::{
    AAT_VERSION, AatClaims, AgentClaims, Audience, AuthMethod, Capabilities, Confirmation, ContextClaims,
    DelegationScope, UnverifiedAat, UserBinding, Validation, encode_aat,
};
use aip_aat::verifier::CallVerifier;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use serde_json::json;

const NOW: i64 = 1_770_000_000;
const AUDIENCE: &str = "files-proxy";

fn claims(agent: &KeyPair) -> AatClaims {
    let id = AgentId::random().unwrap();
    AatClaims {
        aat_version: AAT_VERSION.into(),
        iss: "https://issuer.aip.example".into(),
        sub: id.clone(),
        aud: Audience::one(AUDIENCE),
        iat: NOW - 60,
        exp: NOW + 840,
        nbf: None,
        jti: Jti::random().unwrap(),
        agent: AgentClaims {
            id,
            name: Some("code review agent".into()),
            public_key_thumbprint: agent.key_id().clone(),
            aid_hash: None,
        },
        user_binding: Some(UserBinding {
            user_id: "alice@example.com".into(),
            auth_method: AuthMethod::Oidc,
            auth_time: NOW - 600,
            delegation_scope: Some(DelegationScope::Tools),
        }),
        capabilities: Capabilities {
            tools: vec!["read_file".into(), "list_directory".into(), "search_files".into()],
            ..Default::default()
        },
        context: ContextClaims {
            session_id: "7f1d8a7e-58a5-4c67-a3f2-44bb3c1e9a10".into(),
            policy_hash: None,
            registry_id: Some("https://registry.aip.example".into()),
        },
        cnf: Some(Confirmation {
            jkt: agent.key_id().clone(),
        }),
    }
}

/// A revocation list of realistic size, none of which covers the benchmarked token.
fn revocations() -> RevocationIndex {
    let at = time::OffsetDateTime::from_unix_timestamp(NOW - 3_600).unwrap();
    let mut list = RevocationList::empty(1, at);
    for _ in 0..1_000 {
        list.revoked_agents.push(RevokedAgent {
            agent_id: AgentId::random().unwrap(),
            revoked_at: at,
            reason: None,
        });
        list.revoked_aats.push(RevokedAat {
            jti: Jti::random().unwrap(),
            revoked_at: at,
            reason: None,
        });
        list.revoked_sessions.push(RevokedSession {
            session_id: Jti::random().unwrap().into(),
            revoked_at: at,
            reason: None,
        });
        list.revoked_users.push(RevokedUser {
            user_id: format!("user-{}", Jti::random().unwrap()),
            revoked_at: at,
            reason: None,
        });
    }
    RevocationIndex::from(&list)
}

/// A delegable AAT of user → A → B → C, the key C signs with, and the issuer's JWKS with its
/// key marked as a root.
fn three_hops() -> (String, KeyPair, JwkSet) {
    let issuer = KeyPair::generate(Algorithm::EdDSA).unwrap();
    let keys = JwkSet::from_jwks(&Jwks {
        keys: vec![issuer.public_key().to_jwk().with_role(ISSUER_ROLE)],
    })
    .unwrap();
    let roots = |id: u32| keys.delegation_root(id);
    let a = KeyPair::generate(Algorithm::EdDSA).unwrap();
    let mut token = delegation::mint(&claims(&a), &issuer).unwrap();
    let mut holder = a;
    for _ in 0..2 {
        let next = KeyPair::generate(Algorithm::EdDSA).unwrap();
        let grant = Grant {
            delegatee: AgentId::random().unwrap(),
            delegatee_key: next.key_id().clone(),
            tools: vec!["read_file".into()],
            audience: vec![AUDIENCE.into()],
            expires_at: NOW + 600,
        };
        token = delegation::delegate(&token, &roots, &holder, &grant, NOW, 4).unwrap();
        holder = next;
    }
    (token, holder, keys)
}

/// Accepts every identifier: isolates proof verification from replay bookkeeping.
struct NoReplay;
impl ReplayCache for NoReplay {
    fn check_and_record(&self, _: ReplayScope, _: &str, _: i64, _: i64) -> Result<(), ReplayError> {
        Ok(())
    }
}

fn benches(c: &mut Criterion) {
    let issuer_ed = KeyPair::generate(Algorithm::EdDSA).unwrap();
    let issuer_es = KeyPair::generate(Algorithm::ES256).unwrap();
    let agent = KeyPair::generate(Algorithm::EdDSA).unwrap();
    let keys = JwkSet::from_keys([issuer_ed.public_key(), issuer_es.public_key()]);
    let clock = FixedClock::new(NOW);
    let validation = Validation::new(AUDIENCE);
    let claims = claims(&agent);
    let aat_ed = encode_aat(&claims, &issuer_ed).unwrap();
    let aat_es = encode_aat(&claims, &issuer_es).unwrap();
    let args = json!({"path": "/home/alice/projects/aip/README.md", "encoding": "utf-8", "max_bytes": 65536});
    let call = Call::tools_call("read_file", Some(&args));
    let proof = create_proof(&agent, &aat_ed, &call, AUDIENCE, NOW).unwrap();

    // The floor: one Ed25519 verification of a message the size of a proof's signing input,
    // by ed25519-dalek's `verify_strict` and by the toolkit's key (same acceptance rule; the
    // key is reused, so it has its precomputed tables after the first few iterations).
    let (signing_input, _) = proof.rsplit_once('.').unwrap();
    let signature = agent.sign(signing_input.as_bytes()).unwrap();
    let dalek_key = ed25519_dalek::VerifyingKey::try_from(agent.public_key().to_raw_bytes().as_slice()).unwrap();
    let dalek_signature = ed25519_dalek::Signature::from_slice(&signature).unwrap();
    let mut raw = c.benchmark_group("floor");
    raw.bench_function("ed25519_verify_strict", |b| {
        b.iter(|| {
            dalek_key
                .verify_strict(black_box(signing_input.as_bytes()), &dalek_signature)
                .unwrap()
        })
    });
    raw.bench_function("ed25519_verify_toolkit", |b| {
        b.iter(|| {
            agent
                .public_key()
                .verify(Algorithm::EdDSA, black_box(signing_input.as_bytes()), &signature)
                .unwrap()
        })
    });
    raw.finish();

    let mut aat = c.benchmark_group("aat");
    aat.bench_function("sign_eddsa", |b| {
        b.iter(|| encode_aat(black_box(&claims), &issuer_ed).unwrap())
    });
    aat.bench_function("sign_es256", |b| {
        b.iter(|| encode_aat(black_box(&claims), &issuer_es).unwrap())
    });
    for (name, token) in [("verify_eddsa", &aat_ed), ("verify_es256", &aat_es)] {
        aat.bench_function(name, |b| {
            b.iter(|| {
                UnverifiedAat::parse(black_box(token))
                    .unwrap()
                    .verify(&keys, &clock, &validation)
                    .unwrap()
            })
        });
    }
    aat.finish();

    let verified = UnverifiedAat::parse(&aat_ed)
        .unwrap()
        .verify(&keys, &clock, &validation)
        .unwrap();
    let proof_validation = ProofValidation::new(AUDIENCE);
    let mut p = c.benchmark_group("proof");
    p.bench_function("create_eddsa", |b| {
        b.iter(|| create_proof(&agent, black_box(&aat_ed), &call, AUDIENCE, NOW).unwrap())
    });
    p.bench_function("verify_eddsa", |b| {
        b.iter(|| verify_proof(black_box(&proof), &verified, &call, &proof_validation, &NoReplay, NOW).unwrap())
    });
    p.finish();

    // The steady state of a proxy: AAT cached by its hash; revocation lookups against a
    // 4 000-entry list; proof verified and its jti inserted into the replay cache. Each
    // iteration gets a fresh proof, made outside the timed section.
    let verifier = CallVerifier::new(
        validation.clone(),
        Arc::new(keys.clone()),
        Arc::new(InMemoryReplayCache::new(20_000_000)),
    )
    .with_clock(Arc::new(FixedClock::new(NOW)))
    .with_revocation(Arc::new(revocations()));
    verifier.verify(Some(&aat_ed), Some(&proof), &call).unwrap();
    let mut s = c.benchmark_group("call");
    s.bench_function("steady_state_check", |b| {
        b.iter_batched(
            || create_proof(&agent, &aat_ed, &call, AUDIENCE, NOW).unwrap(),
            |proof| verifier.verify(Some(black_box(&aat_ed)), Some(&proof), &call).unwrap(),
            BatchSize::SmallInput,
        )
    });

    // The same with a delegated AAT of three hops, user → A → B → C (four principals, the
    // largest depth a verifier may allow): the chain is verified once and cached by the token's
    // hash like any AAT; the proofs are by C's key.
    let (chain_token, holder, chain_keys) = three_hops();
    let chain_verifier = CallVerifier::new(
        validation.clone().with_max_delegation_depth(4),
        Arc::new(chain_keys),
        Arc::new(InMemoryReplayCache::new(20_000_000)),
    )
    .with_clock(Arc::new(FixedClock::new(NOW)))
    .with_revocation(Arc::new(revocations()));
    let first = create_proof(&holder, &chain_token, &call, AUDIENCE, NOW).unwrap();
    chain_verifier.verify(Some(&chain_token), Some(&first), &call).unwrap();
    s.bench_function("steady_state_check_delegated_three_hops", |b| {
        b.iter_batched(
            || create_proof(&holder, &chain_token, &call, AUDIENCE, NOW).unwrap(),
            |proof| {
                chain_verifier
                    .verify(Some(black_box(&chain_token)), Some(&proof), &call)
                    .unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    s.finish();
}

criterion_group!(name = aat; config = Criterion::default().sample_size(60); targets = benches);
criterion_main!(aat);
