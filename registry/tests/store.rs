//! The SQL store on SQLite and PostgreSQL: atomicity, uniqueness, the audit chain, counters.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use aip_aat::aid::AgentStatus;
use aip_aat::ids::AgentId;
use aip_aat::keys::{Algorithm, KeyPair};
use aip_api::registry::Role;
use aip_db::audit::{AuditChain, AuditEntry};
use aip_registry::ca::CrlReason;
use aip_registry::store::*;
use serde_json::json;

fn new_agent(key: &KeyPair, now: i64) -> NewAgent {
    NewAgent {
        agent_id: AgentId::random().unwrap(),
        name: "reviewer".into(),
        description: None,
        owner: Some("dev@example.com".into()),
        capabilities: vec!["read_file".into()],
        autonomous: false,
        metadata: None,
        public_key: key.public_key().to_jwk(),
        thumbprint: key.key_id().clone(),
        created_at: now,
    }
}

fn cert(agent: &NewAgent, serial: &str, now: i64) -> NewCertificate {
    NewCertificate {
        serial: serial.into(),
        agent_id: agent.agent_id.clone(),
        key_thumbprint: agent.thumbprint.clone(),
        not_before: now,
        not_after: now + 86_400,
        der: vec![0x30, 0x00],
        issuer_key_id: None,
    }
}

fn audit(action: &'static str, subject: &str) -> AuditEntry {
    AuditEntry {
        actor: "admin:t1".into(),
        action,
        subject: subject.into(),
        details: json!({"k": "v"}),
    }
}

fn nonce(jti: &str) -> Nonce {
    Nonce {
        jti: jti.into(),
        expires_at: 2_000_000_000,
    }
}

async fn admin(store: &dyn Store) -> RegistrationCredential {
    let token = NewAccessToken {
        digest: "d-admin".into(),
        token_id: "t1".into(),
        role: Role::Admin,
        label: None,
        created_at: 1,
        expires_at: None,
    };
    store
        .create_access_token(&token, &audit("token.create", "t1"))
        .await
        .unwrap();
    RegistrationCredential::Admin { token_id: "t1".into() }
}

async fn register_and_read_back(db: &common::TestDb) {
    let store = db.store().await;
    let admin = admin(&*store).await;
    let key = KeyPair::generate(Algorithm::EdDSA).unwrap();
    let agent = new_agent(&key, 1_000);
    let expiry = store
        .register_agent(
            &agent,
            &cert(&agent, "01", 1_000),
            &admin,
            &nonce("n1"),
            &audit("agent.register", agent.agent_id.as_str()),
        )
        .await
        .unwrap();
    assert_eq!(expiry, None);
    let stored = store.agent(&agent.agent_id).await.unwrap().unwrap();
    assert_eq!(stored.agent, agent);
    assert_eq!(stored.status, AgentStatus::Active);
    assert_eq!(store.agent_keys(&agent.agent_id).await.unwrap().len(), 1);
    assert_eq!(
        store.certificates(&agent.agent_id).await.unwrap()[0].certificate.der,
        vec![0x30, 0x00]
    );

    // The same key again: 409, and nothing of the second attempt remains.
    let again = new_agent(&key, 1_001);
    let err = store
        .register_agent(
            &again,
            &cert(&again, "02", 1_001),
            &admin,
            &nonce("n2"),
            &audit("agent.register", "x"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::KeyAlreadyRegistered), "{err:?}");
    assert!(store.agent(&again.agent_id).await.unwrap().is_none());
    // The nonce of the failed attempt was rolled back too: it can be used now.
    let other = new_agent(&KeyPair::generate(Algorithm::ES256).unwrap(), 1_002);
    store
        .register_agent(
            &other,
            &cert(&other, "03", 1_002),
            &admin,
            &nonce("n2"),
            &audit("agent.register", "y"),
        )
        .await
        .unwrap();
    // A replayed nonce is refused.
    let third = new_agent(&KeyPair::generate(Algorithm::EdDSA).unwrap(), 1_003);
    let err = store
        .register_agent(
            &third,
            &cert(&third, "04", 1_003),
            &admin,
            &nonce("n1"),
            &audit("agent.register", "z"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ProofReplayed), "{err:?}");

    let listed = store
        .agents(&AgentQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed[0].agent.agent_id < listed[1].agent.agent_id);
}
both_backends!(register, register_and_read_back);

async fn registration_tokens_are_consumed_atomically(db: &common::TestDb) {
    let store = db.store().await;
    let token = NewRegistrationToken {
        digest: "d-reg".into(),
        token_id: "r1".into(),
        uses: 1,
        expires_at: 5_000,
        created_at: 1,
        label: None,
    };
    store
        .create_registration_token(&token, &audit("registration_token.create", "r1"))
        .await
        .unwrap();
    let credential = RegistrationCredential::RegistrationToken { digest: "d-reg".into() };
    let key = KeyPair::generate(Algorithm::EdDSA).unwrap();
    // A failing registration (replayed nonce) must not use the token up.
    let first = new_agent(&key, 1_000);
    store
        .register_agent(
            &first,
            &cert(&first, "a1", 1_000),
            &RegistrationCredential::RegistrationToken { digest: "nope".into() },
            &nonce("x"),
            &audit("agent.register", "x"),
        )
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(
        store.registration_token("d-reg").await.unwrap().unwrap().uses_remaining,
        1
    );
    let expiry = store
        .register_agent(
            &first,
            &cert(&first, "a1", 1_000),
            &credential,
            &nonce("y"),
            &audit("agent.register", "y"),
        )
        .await
        .unwrap();
    assert_eq!(expiry, Some(5_000));
    assert_eq!(
        store.registration_token("d-reg").await.unwrap().unwrap().uses_remaining,
        0
    );
    let second = new_agent(&KeyPair::generate(Algorithm::EdDSA).unwrap(), 1_001);
    let err = store
        .register_agent(
            &second,
            &cert(&second, "a2", 1_001),
            &credential,
            &nonce("z"),
            &audit("agent.register", "z"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidCredential), "{err:?}");
}
both_backends!(registration_tokens, registration_tokens_are_consumed_atomically);

async fn status_changes_events_crl_and_audit(db: &common::TestDb) {
    let store = db.store().await;
    let admin = admin(&*store).await;
    let key = KeyPair::generate(Algorithm::EdDSA).unwrap();
    let agent = new_agent(&key, 1_000);
    store
        .register_agent(
            &agent,
            &cert(&agent, "c1", 1_000),
            &admin,
            &nonce("n1"),
            &audit("agent.register", "a"),
        )
        .await
        .unwrap();
    let id = &agent.agent_id;

    let suspended = store
        .change_status(
            id,
            StatusAction::Suspend,
            Some("review"),
            1_100,
            &audit("agent.suspend", "a"),
        )
        .await
        .unwrap();
    assert_eq!((suspended.version, suspended.status), (1, AgentStatus::Suspended));
    let (entries, _) = store.crl_entries(1_200, "ca-1", true).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].reason, CrlReason::CertificateHold);
    let list = store.revocation_list(1_200).await.unwrap();
    assert_eq!(
        (list.version, list.suspended_agents.len(), list.revoked_agents.len()),
        (1, 1, 0)
    );

    let reactivated = store
        .change_status(
            id,
            StatusAction::Reactivate,
            None,
            1_300,
            &audit("agent.reactivate", "a"),
        )
        .await
        .unwrap();
    assert_eq!(reactivated.version, 2);
    assert!(store.crl_entries(1_400, "ca-1", true).await.unwrap().0.is_empty());
    assert!(matches!(
        store
            .change_status(
                id,
                StatusAction::Reactivate,
                None,
                1_400,
                &audit("agent.reactivate", "a")
            )
            .await,
        Err(StoreError::Conflict(_))
    ));

    store
        .change_status(
            id,
            StatusAction::Revoke(CrlReason::KeyCompromise),
            Some("leaked"),
            1_500,
            &audit("agent.revoke", "a"),
        )
        .await
        .unwrap();
    let (entries, _) = store.crl_entries(1_600, "ca-1", true).await.unwrap();
    assert_eq!(
        (entries[0].reason, entries[0].revoked_at),
        (CrlReason::KeyCompromise, 1_500)
    );
    let list = store.revocation_list(1_600).await.unwrap();
    assert_eq!(
        (list.version, list.revoked_agents.len(), list.suspended_agents.len()),
        (3, 1, 0)
    );
    assert_eq!(list.revoked_agents[0].reason.as_deref(), Some("leaked"));
    assert!(matches!(
        store
            .change_status(id, StatusAction::Suspend, None, 1_700, &audit("agent.suspend", "a"))
            .await,
        Err(StoreError::Conflict(_))
    ));

    let events = store.events_after(0, 100).await.unwrap();
    let kinds: Vec<_> = events.iter().map(|e| (e.version, e.kind.as_str())).collect();
    assert_eq!(
        kinds,
        [(1, "agent_suspended"), (2, "agent_reactivated"), (3, "agent_revoked")]
    );
    assert_eq!(store.events_after(2, 100).await.unwrap().len(), 1);

    let (n1, v1) = store.next_crl_number().await.unwrap();
    let (n2, _) = store.next_crl_number().await.unwrap();
    assert!(n2 > n1);
    assert_eq!(v1, 3);

    // Audit: token create, register, suspend, reactivate, revoke — and the chain holds.
    let records = store.database().audit_records(0, 100).await.unwrap();
    assert_eq!(records.len(), 5);
    let mut chain = AuditChain::default();
    for r in &records {
        chain.push(r).unwrap();
    }
    let (seq, head) = store.database().audit_head().await.unwrap();
    assert_eq!(chain.finish(seq, &head).unwrap(), 5);
}
both_backends!(status, status_changes_events_crl_and_audit);

/// After a renewal of the issuing CA, each CA's CRL lists only the certificates it signed:
/// the retired one those recorded before (labelled as its), the current one the new ones.
async fn crl_entries_follow_the_issuing_ca(db: &common::TestDb) {
    let store = db.store().await;
    let admin = admin(&*store).await;
    let revoke = |id: AgentId, at: i64| {
        let store = store.clone();
        async move {
            store
                .change_status(
                    &id,
                    StatusAction::Revoke(CrlReason::KeyCompromise),
                    None,
                    at,
                    &audit("agent.revoke", id.as_str()),
                )
                .await
                .unwrap();
        }
    };
    let old = new_agent(&KeyPair::generate(Algorithm::EdDSA).unwrap(), 1_000);
    store
        .register_agent(
            &old,
            &cert(&old, "0a", 1_000),
            &admin,
            &nonce("n1"),
            &audit("agent.register", "old"),
        )
        .await
        .unwrap();
    revoke(old.agent_id.clone(), 1_100).await;
    // Before any renewal the current CA answers for unlabelled certificates.
    assert_eq!(store.crl_entries(1_200, "ca-1", true).await.unwrap().0.len(), 1);
    assert!(store.crl_entries(1_200, "ca-1", false).await.unwrap().0.is_empty());

    let renewal = audit("ca.renew_issuing", "ca-2");
    assert_eq!(store.retire_issuing_ca("ca-1", 1_300, &renewal).await.unwrap(), 1);
    let new = new_agent(&KeyPair::generate(Algorithm::EdDSA).unwrap(), 1_400);
    let mut certificate = cert(&new, "0b", 1_400);
    certificate.issuer_key_id = Some("ca-2".into());
    store
        .register_agent(
            &new,
            &certificate,
            &admin,
            &nonce("n2"),
            &audit("agent.register", "new"),
        )
        .await
        .unwrap();
    revoke(new.agent_id.clone(), 1_500).await;
    let serials = |entries: Vec<aip_registry::ca::CrlEntry>| entries.into_iter().map(|e| e.serial).collect::<Vec<_>>();
    assert_eq!(
        serials(store.crl_entries(1_600, "ca-1", false).await.unwrap().0),
        ["0a"]
    );
    assert_eq!(serials(store.crl_entries(1_600, "ca-2", true).await.unwrap().0), ["0b"]);
    // A second renewal labels nothing more: every certificate names its CA.
    let renewal = audit("ca.renew_issuing", "ca-3");
    assert_eq!(store.retire_issuing_ca("ca-2", 1_700, &renewal).await.unwrap(), 0);
    // The renewals are in the audit chain.
    let records = store.database().audit_records(0, 100).await.unwrap();
    assert_eq!(records.iter().filter(|r| r.action == "ca.renew_issuing").count(), 2);
}
both_backends!(crl_issuers, crl_entries_follow_the_issuing_ca);
