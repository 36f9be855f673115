//! Delegable AATs: minting, delegation steps, and the chains a verifier must refuse
//! (aat/src/delegation; the same cases, from fixed keys, are in `vectors/delegation.json`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aip_aat::delegation::*;
use aip_aat::ids::{AgentId, Jti};
use aip_aat::keys::{Algorithm, KeyPair, PublicKey};
use aip_aat::token::{
    AAT_VERSION, AatClaims, AgentClaims, Audience, AuthMethod, Capabilities, Confirmation, ContextClaims,
    DelegationScope, UserBinding,
};
use biscuit_auth::Biscuit;
use biscuit_auth::builder::BlockBuilder;

const NOW: i64 = 1_770_000_000;

/// A step written without the checks `delegate` makes, as a careless or hostile delegator could.
fn written(
    token: &str,
    root: &dyn Fn(u32) -> Option<PublicKey>,
    by: &KeyPair,
    by_agent: &AgentId,
    step: usize,
    grant: &Grant,
) -> String {
    let next = KeyPair::generate(Algorithm::EdDSA).unwrap();
    append_reproducibly(token, root, by, by_agent, step, grant, &next).unwrap()
}

struct Agent {
    id: AgentId,
    key: KeyPair,
}

impl Agent {
    fn new(alg: Algorithm) -> Self {
        Self {
            id: AgentId::random().unwrap(),
            key: KeyPair::generate(alg).unwrap(),
        }
    }

    fn grant(&self, tools: &[&str], audience: &[&str], expires_at: i64) -> Grant {
        Grant {
            delegatee: self.id.clone(),
            delegatee_key: self.key.key_id().clone(),
            tools: tools.iter().map(|t| (*t).to_owned()).collect(),
            audience: audience.iter().map(|a| (*a).to_owned()).collect(),
            expires_at,
        }
    }
}

struct World {
    issuer: KeyPair,
    a: Agent,
    b: Agent,
    c: Agent,
}

impl World {
    fn new() -> Self {
        Self {
            issuer: KeyPair::generate(Algorithm::EdDSA).unwrap(),
            a: Agent::new(Algorithm::EdDSA),
            // Delegatees on the other curve: keys of both kinds cross into biscuit.
            b: Agent::new(Algorithm::ES256),
            c: Agent::new(Algorithm::EdDSA),
        }
    }

    fn claims(&self) -> AatClaims {
        AatClaims {
            aat_version: AAT_VERSION.into(),
            iss: "https://issuer.example".into(),
            sub: self.a.id.clone(),
            aud: Audience::many(["files".to_owned(), "mail".to_owned()]).unwrap(),
            iat: NOW,
            exp: NOW + 900,
            nbf: None,
            jti: Jti::random().unwrap(),
            agent: AgentClaims {
                id: self.a.id.clone(),
                name: Some("planner".into()),
                public_key_thumbprint: self.a.key.key_id().clone(),
                aid_hash: None,
            },
            user_binding: Some(UserBinding {
                user_id: "alice@example.com".into(),
                auth_method: AuthMethod::ApiKey,
                auth_time: NOW - 60,
                delegation_scope: Some(DelegationScope::Tools),
            }),
            capabilities: Capabilities {
                tools: vec!["read_file".into(), "write_file".into(), "send_mail".into()],
                ..Default::default()
            },
            context: ContextClaims {
                session_id: "s-1".into(),
                policy_hash: None,
                registry_id: None,
            },
            cnf: Some(Confirmation {
                jkt: self.a.key.key_id().clone(),
            }),
        }
    }

    fn root(&self) -> impl Fn(u32) -> Option<PublicKey> + '_ {
        |id| (id == root_key_id(self.issuer.key_id())).then(|| self.issuer.public_key().clone())
    }

    fn minted(&self) -> String {
        mint(&self.claims(), &self.issuer).unwrap()
    }

    /// user → A → B (files, read_file), as A delegates it.
    fn to_b(&self) -> String {
        let grant = self.b.grant(&["read_file", "write_file"], &["files"], NOW + 600);
        delegate(&self.minted(), &self.root(), &self.a.key, &grant, NOW, 4).unwrap()
    }

    fn verify(&self, token: &str, max_depth: u8) -> Result<DelegatedAat, DelegationError> {
        verify(token, &self.root(), NOW, max_depth)
    }
}

#[test]
fn a_minted_token_carries_the_claims_and_verifies_against_the_issuer_key() {
    let w = World::new();
    let token = w.minted();
    assert!(is_delegable(&token));
    assert!(!is_delegable("a.b.c"));
    let chain = w.verify(&token, DEFAULT_MAX_DEPTH).unwrap();
    assert_eq!(chain.root_claims(), &w.claims_with_jti(chain.root_claims()));
    assert!(chain.steps().is_empty());
    assert_eq!(chain.depth(), 2, "user → A");
    assert_eq!(chain.effective_claims().sub, w.a.id);
    assert_eq!(chain.effective_claims().confirmation_thumbprint(), w.a.key.key_id());
    assert_eq!(chain.revocation_ids().count(), 1);
    assert!(
        chain
            .revocation_ids()
            .all(|id| id.len() == 128 && hex::decode(id).is_ok())
    );
}

impl World {
    /// The claims of `World::claims` with the `jti` of `minted` (each mint draws its own).
    fn claims_with_jti(&self, minted: &AatClaims) -> AatClaims {
        AatClaims {
            jti: minted.jti.clone(),
            ..self.claims()
        }
    }
}

#[test]
fn each_step_narrows_and_names_the_next_holder() {
    let w = World::new();
    let to_b = w.to_b();
    let chain = w.verify(&to_b, DEFAULT_MAX_DEPTH).unwrap();
    assert_eq!(chain.depth(), 3, "user → A → B");
    let [step] = chain.steps() else {
        panic!("{:?}", chain.steps())
    };
    assert_eq!(step.delegator, w.a.id);
    assert_eq!(step.delegatee, w.b.id);
    let held = chain.effective_claims();
    assert_eq!(held.sub, w.b.id);
    assert_eq!(held.confirmation_thumbprint(), w.b.key.key_id());
    assert_eq!(held.capabilities.tools, ["read_file", "write_file"]);
    assert_eq!(held.aud.as_slice(), ["files"]);
    assert_eq!(held.exp, NOW + 600);
    assert_eq!(
        held.user_binding,
        w.claims().user_binding,
        "the user stays on the chain"
    );
    assert_eq!(chain.agents().collect::<Vec<_>>(), [&w.a.id, &w.b.id]);
    let ids: Vec<&str> = chain.revocation_ids().collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1]);

    // B hands on less again; the default depth refuses a third agent, a depth of 4 takes it.
    let grant = w.c.grant(&["read_file"], &["files"], NOW + 300);
    assert_eq!(
        delegate(&to_b, &w.root(), &w.b.key, &grant, NOW, DEFAULT_MAX_DEPTH),
        Err(DelegationError::TooDeep { depth: 4, max: 3 })
    );
    let to_c = delegate(&to_b, &w.root(), &w.b.key, &grant, NOW, 4).unwrap();
    let chain = w.verify(&to_c, 4).unwrap();
    assert_eq!(chain.depth(), 4);
    assert_eq!(chain.effective_claims().sub, w.c.id);
    assert_eq!(chain.effective_claims().capabilities.tools, ["read_file"]);
    assert_eq!(chain.agents().count(), 3);
    assert_eq!(
        w.verify(&to_c, DEFAULT_MAX_DEPTH).unwrap_err(),
        DelegationError::TooDeep { depth: 4, max: 3 }
    );
    assert_eq!(w.verify(&to_c, 4).unwrap().revocation_ids().count(), 3);
}

#[test]
fn a_step_that_widens_anything_is_refused_when_made_and_when_verified() {
    let w = World::new();
    let token = w.minted();
    let widen = [
        (w.b.grant(&["read_file", "delete_file"], &["files"], NOW + 60), "tools"),
        (w.b.grant(&["read_file"], &["files", "payroll"], NOW + 60), "audience"),
        (w.b.grant(&["read_file"], &["files"], NOW + 901), "lifetime"),
    ];
    for (grant, what) in widen {
        assert_eq!(
            delegate(&token, &w.root(), &w.a.key, &grant, NOW, 4),
            Err(DelegationError::Widened { step: 1, what }),
        );
        // Written anyway (as a careless or hostile delegator could), it does not verify.
        let written = written(&token, &w.root(), &w.a.key, &w.a.id, 1, &grant);
        let refused = w.verify(&written, 4).unwrap_err();
        // A lifetime past the parent's also fails the parent's own time check later; what
        // is reported is the widening.
        assert_eq!(refused, DelegationError::Widened { step: 1, what }, "{what}");
        assert_eq!(refused.aat_error(), "delegation_widened");
    }
}

#[test]
fn only_the_holder_can_delegate_and_every_block_must_be_its_delegators() {
    let w = World::new();
    let to_b = w.to_b();
    let grant = w.c.grant(&["read_file"], &["files"], NOW + 60);
    // A no longer holds what it gave B; nor does a stranger.
    let stranger = Agent::new(Algorithm::EdDSA);
    for key in [&w.a.key, &stranger.key] {
        assert!(matches!(
            delegate(&to_b, &w.root(), key, &grant, NOW, 4),
            Err(DelegationError::NotHolder(_))
        ));
        // Written anyway: signed by another key than the delegator's.
        let forged = written(&to_b, &w.root(), key, &w.b.id, 2, &grant);
        let refused = w.verify(&forged, 4).unwrap_err();
        assert!(
            matches!(refused, DelegationError::Invalid(ref why) if why.contains("another key")),
            "{refused}"
        );
        assert_eq!(refused.aat_error(), "delegation_invalid");
    }
    // The right key, but naming someone else as the delegator.
    let misnamed = written(&to_b, &w.root(), &w.b.key, &w.a.id, 2, &grant);
    assert!(matches!(w.verify(&misnamed, 4), Err(DelegationError::Invalid(_))));
}

#[test]
fn a_block_appended_without_the_delegators_signature_makes_the_token_invalid() {
    let w = World::new();
    let to_b = w.to_b();
    let root = biscuit_auth::PublicKey::from_bytes(
        &w.issuer.public_key().to_raw_bytes(),
        biscuit_auth::builder::Algorithm::Ed25519,
    )
    .unwrap();
    // An ordinary (first-party) block, as any holder can append: it even claims a delegation.
    let block = BlockBuilder::new()
        .code(format!(
            r#"delegation(2, "{}", "{}", "{}", 2026-12-31T00:00:00Z); delegated_tool(2, "read_file");"#,
            w.b.id,
            w.c.id,
            w.c.key.key_id()
        ))
        .unwrap();
    let appended = Biscuit::from_base64(&to_b, root)
        .unwrap()
        .append(block)
        .unwrap()
        .to_base64()
        .unwrap();
    let refused = w.verify(&appended, 4).unwrap_err();
    assert!(
        matches!(refused, DelegationError::Invalid(ref why) if why.contains("block 2")),
        "{refused}"
    );
}

#[test]
fn only_issuer_keys_root_a_delegable_token() {
    let w = World::new();
    // The registry's key, or any key the verifier does not take as an issuer signing key.
    let registry = KeyPair::generate(Algorithm::EdDSA).unwrap();
    let rooted_elsewhere = mint(&w.claims(), &registry).unwrap();
    assert_eq!(
        w.verify(&rooted_elsewhere, 3).unwrap_err(),
        DelegationError::UnknownRoot
    );
    // A resolver that maps the root key id to the wrong key: the signature fails.
    let wrong = |_: u32| Some(registry.public_key().clone());
    assert!(matches!(
        verify(&w.minted(), &wrong, NOW, 3),
        Err(DelegationError::Invalid(_))
    ));
    // A token without a root key id, or one the resolver does not know.
    let nobody = |_: u32| None;
    assert_eq!(
        verify(&w.minted(), &nobody, NOW, 3).unwrap_err(),
        DelegationError::UnknownRoot
    );
}

#[test]
fn expired_and_tampered_tokens_are_refused() {
    let w = World::new();
    let to_b = w.to_b();
    // B's step ends at NOW + 600; the token itself at NOW + 900.
    assert_eq!(
        verify(&to_b, &w.root(), NOW + 600, 3).unwrap_err(),
        DelegationError::Expired
    );
    assert_eq!(
        verify(&w.minted(), &w.root(), NOW + 900, 3).unwrap_err(),
        DelegationError::Expired
    );
    let grant = w.c.grant(&["read_file"], &["files"], NOW - 1);
    assert!(matches!(
        delegate(&to_b, &w.root(), &w.b.key, &grant, NOW, 4),
        Err(DelegationError::Build(_))
    ));

    // Any change to any byte of the token makes it fail.
    let bytes = to_b.as_bytes();
    for at in [10, bytes.len() / 2, bytes.len() - 10] {
        let mut tampered = bytes.to_vec();
        tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(w.verify(&tampered, 3).is_err(), "byte {at} changed and still verified");
    }
    assert!(matches!(
        w.verify("not a biscuit", 3),
        Err(DelegationError::Malformed(_))
    ));
    assert!(matches!(
        w.verify(&"A".repeat(MAX_TOKEN_LEN + 1), 3),
        Err(DelegationError::Malformed(_))
    ));
    assert!(matches!(w.verify(&to_b, 5), Err(DelegationError::Build(_))));
}

#[test]
fn the_root_key_id_is_a_function_of_the_key_id() {
    let w = World::new();
    assert_eq!(root_key_id(w.issuer.key_id()), root_key_id(w.issuer.key_id()));
    assert_ne!(root_key_id(w.issuer.key_id()), root_key_id(w.a.key.key_id()));
    let unbound = AatClaims {
        cnf: None,
        ..w.claims()
    };
    assert!(matches!(mint(&unbound, &w.issuer), Err(DelegationError::Build(_))));
}
