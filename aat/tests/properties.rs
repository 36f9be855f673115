//! Property tests: canonical JSON and token round trips over generated inputs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aip_aat::clock::FixedClock;
use aip_aat::ids::{AgentId, Jti};
use aip_aat::jcs;
use aip_aat::keys::{Algorithm, JwkSet, KeyPair};
use aip_aat::proof::{Call, ProofValidation, create_proof, verify_proof};
use aip_aat::replay::InMemoryReplayCache;
use aip_aat::token::{
    AAT_VERSION, AatClaims, AgentClaims, Audience, AuthMethod, Capabilities, Confirmation, ContextClaims,
    DelegationScope, UnverifiedAat, UserBinding, Validation, encode_aat,
};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Arbitrary JSON values of bounded depth, with any Unicode in strings and member names.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Reverses the member order of every object (serde_json keeps insertion order here only
/// with `preserve_order`; the text form is what is reordered).
fn reversed_text(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let members: Vec<String> = map
                .iter()
                .rev()
                .map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), reversed_text(v)))
                .collect();
            format!("{{{}}}", members.join(","))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(reversed_text).collect::<Vec<_>>().join(",")),
        other => serde_json::to_string(other).unwrap(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn canonical_form_is_a_fixed_point(value in json()) {
        let once = jcs::to_string(&value).unwrap();
        prop_assert_eq!(jcs::canonicalize(&once).unwrap(), once.clone());
        // It is still the same JSON value (numbers compared as doubles, as RFC 8785 does).
        let back: Value = serde_json::from_str(&once).unwrap();
        prop_assert_eq!(jcs::to_string(&back).unwrap(), once);
    }

    #[test]
    fn member_order_and_whitespace_do_not_matter(value in json()) {
        let pretty = serde_json::to_string_pretty(&value).unwrap();
        let reversed = reversed_text(&value);
        let canonical = jcs::to_string(&value).unwrap();
        prop_assert_eq!(jcs::canonicalize(&pretty).unwrap(), canonical.clone());
        prop_assert_eq!(jcs::canonicalize(&reversed).unwrap(), canonical);
    }

    #[test]
    fn proofs_bind_the_canonical_arguments(value in json(), other in json()) {
        let mut args = Map::new();
        args.insert("input".into(), value);
        let args = Value::Object(args);
        let call = Call::tools_call("tool", Some(&args));
        let reparsed: Value = serde_json::from_str(&reversed_text(&args)).unwrap();
        prop_assert_eq!(call.args_hash().unwrap(), Call::tools_call("tool", Some(&reparsed)).args_hash().unwrap());
        let mut changed = Map::new();
        changed.insert("input".into(), other);
        let changed = Value::Object(changed);
        if jcs::to_string(&changed).unwrap() != jcs::to_string(&args).unwrap() {
            prop_assert_ne!(call.args_hash().unwrap(), Call::tools_call("tool", Some(&changed)).args_hash().unwrap());
        }
    }
}

fn text() -> impl Strategy<Value = String> {
    "[ -~\\u{a0}-\\u{2fff}]{1,24}"
}

prop_compose! {
    fn claims()(
        iss in text(),
        aud in prop::collection::vec(text(), 1..4),
        lifetime in 1i64..86_400,
        name in proptest::option::of(text()),
        user in proptest::option::of((text(), 0i64..1_000_000)),
        tools in prop::collection::vec(text(), 0..6),
        max_calls in proptest::option::of(any::<u64>()),
        session in text(),
    ) -> (AatClaims, KeyPair) {
        let agent = KeyPair::generate(Algorithm::EdDSA).unwrap();
        let id = AgentId::random().unwrap();
        let now = 1_770_000_000;
        let claims = AatClaims {
            aat_version: AAT_VERSION.into(),
            iss,
            sub: id.clone(),
            aud: Audience::many(aud).unwrap(),
            iat: now,
            exp: now + lifetime,
            nbf: Some(now),
            jti: Jti::random().unwrap(),
            agent: AgentClaims { id, name, public_key_thumbprint: agent.key_id().clone(), aid_hash: None },
            user_binding: user.map(|(user_id, age)| UserBinding {
                user_id,
                auth_method: AuthMethod::ApiKey,
                auth_time: now - age,
                delegation_scope: Some(DelegationScope::ReadOnly),
            }),
            capabilities: Capabilities { tools, max_calls_per_session: max_calls, ..Default::default() },
            context: ContextClaims { session_id: session, policy_hash: None, registry_id: None },
            cnf: Some(Confirmation { jkt: agent.key_id().clone() }),
        };
        (claims, agent)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn tokens_round_trip(
        (claims, agent) in claims(),
        alg in prop_oneof![Just(Algorithm::EdDSA), Just(Algorithm::ES256)],
    ) {
        let issuer = KeyPair::generate(alg).unwrap();
        let token = encode_aat(&claims, &issuer).unwrap();
        let keys = JwkSet::from_keys([issuer.public_key()]);
        let clock = FixedClock::new(claims.iat);
        let audience = claims.aud.as_slice()[0].clone();
        let verified = UnverifiedAat::parse(&token).unwrap().verify(&keys, &clock, &Validation::new(&audience)).unwrap();
        prop_assert_eq!(verified.claims(), &claims);

        let call = Call::tools_call("read_file", None);
        let proof = create_proof(&agent, &token, &call, &audience, claims.iat).unwrap();
        let replay = InMemoryReplayCache::new(16);
        prop_assert!(verify_proof(&proof, &verified, &call, &ProofValidation::new(&audience), &replay, claims.iat).is_ok());
    }
}
