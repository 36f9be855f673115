//! Revocation is linearizable across replicas: two real `aip-ca serve` processes over one real
//! PostgreSQL database. An agent on replica B requests AATs in a tight loop while replica A
//! suspends or revokes it, revokes its user, or revokes its session: once A has acknowledged
//! the change, every later request to B is refused. B's event stream shows A's revocation
//! (within a generous bound; the 100 ms target is measured by `tests/benches/replicas.rs`).
//!
//! Needs `AIP_TEST_POSTGRES_URL`; without it each test reports itself skipped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aip_aat::challenge::ChallengeProof;
use aip_aat::clock::{Clock as _, SystemClock};
use aip_aat::ids::AgentId;
use aip_aat::keys::{Algorithm, KeyPair};
use aip_aat::secret::SecretString;
use aip_api::client::Client;
use aip_api::issuer::{
    ChallengeResponse, CreateUserRequest, GrantType, RevokeRequest, TokenErrorCode, TokenErrorResponse, TokenFormat,
    TokenRequest, TokenResponse, UserAuthorization,
};
use aip_api::registry::{StatusKind, StatusRequest};
use aip_tests::{PostgresDb, Replicas};
use base64::Engine as _;
use futures_util::StreamExt as _;
use serde_json::{Value, json};

const AUDIENCE: &str = "files-proxy";
/// How long the loop keeps asking after the acknowledgement.
const AFTER_ACK: Duration = Duration::from_millis(1500);

/// A registered agent and its key.
struct Agent {
    id: AgentId,
    key: KeyPair,
}

/// What the agent presents besides its proof.
#[derive(Clone)]
enum Grant {
    /// `agent_attestation` (an autonomous agent).
    Attestation,
    /// `agent_authentication` with a user's API key.
    User(String),
    /// `aat_refresh` with this refresh token, replaced by each new one issued.
    Refresh(String),
}

fn client(url: &str, token: Option<&str>) -> Client {
    Client::new(url, token.map(str::to_owned)).unwrap()
}

async fn register(admin: &Client, autonomous: bool) -> Agent {
    let key = KeyPair::generate(Algorithm::EdDSA).unwrap();
    let fields = json!({"name": "replicated agent", "capabilities": ["read_file"], "autonomous": autonomous});
    let body = aip_api::registry::registration_body(&key, fields, SystemClock.now()).unwrap();
    let registered = admin.register_agent(&body).await.unwrap();
    Agent {
        id: registered.agent_id,
        key,
    }
}

/// One token request (challenge, then token): the answer, or the refusal's code.
async fn request_token(client: &Client, agent: &Agent, grant: &Grant) -> Result<TokenResponse, TokenErrorCode> {
    let request = aip_api::issuer::ChallengeRequest {
        agent_id: agent.id.clone(),
    };
    let (status, body) = client.challenge(&request).await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let challenge: ChallengeResponse = serde_json::from_slice(&body).unwrap();
    let proof = ChallengeProof::create(&agent.key, &challenge.challenge, &agent.id, SystemClock.now()).unwrap();
    let (grant_type, user_authorization, refresh_token) = match grant {
        Grant::Attestation => (GrantType::AgentAttestation, None, None),
        Grant::User(key) => (
            GrantType::AgentAuthentication,
            Some(UserAuthorization::ApiKey {
                token: SecretString::new(key.clone()),
            }),
            None,
        ),
        Grant::Refresh(token) => (GrantType::AatRefresh, None, Some(SecretString::new(token.clone()))),
    };
    let request = TokenRequest {
        grant_type,
        agent_id: agent.id.clone(),
        proof,
        user_authorization,
        requested_capabilities: None,
        audience: AUDIENCE.into(),
        refresh_token,
        token_format: TokenFormat::Jwt,
    };
    let (status, body) = client.token(&request).await.unwrap();
    if status == 200 {
        Ok(serde_json::from_slice(&body).unwrap())
    } else {
        let refused: TokenErrorResponse = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{status}: {e}: {}", String::from_utf8_lossy(&body)));
        Err(refused.error)
    }
}

/// Requests AATs from `client` without pause until `stop`: when each token request was sent,
/// and its outcome.
async fn tight_loop(
    client: Client,
    agent: Arc<Agent>,
    mut grant: Grant,
    issued: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> Vec<(Instant, Result<(), TokenErrorCode>)> {
    let mut attempts = Vec::new();
    while !stop.load(Ordering::Acquire) {
        let sent = Instant::now();
        let outcome = request_token(&client, &agent, &grant).await;
        if let (Ok(reply), Grant::Refresh(token)) = (&outcome, &mut grant) {
            *token = reply.refresh_token.as_ref().unwrap().expose().to_owned();
        }
        if outcome.is_ok() {
            issued.fetch_add(1, Ordering::AcqRel);
        }
        attempts.push((sent, outcome.map(|_| ())));
    }
    attempts
}

/// Runs the tight loop against replica B, waits for a few AATs, runs `change` against replica
/// A, and asserts that every token request B received after A's acknowledgement was refused
/// with `refusal`.
async fn refused_after_acknowledgement<F>(b: &Client, agent: Agent, grant: Grant, refusal: TokenErrorCode, change: F)
where
    F: Future<Output = ()>,
{
    let issued = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let looping = tokio::spawn(tight_loop(
        b.clone(),
        Arc::new(agent),
        grant,
        issued.clone(),
        stop.clone(),
    ));
    let started = Instant::now();
    while issued.load(Ordering::Acquire) < 5 {
        assert!(started.elapsed() < Duration::from_secs(30), "replica B issued no AATs");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    change.await;
    let acknowledged = Instant::now();
    tokio::time::sleep(AFTER_ACK).await;
    stop.store(true, Ordering::Release);
    let attempts = looping.await.unwrap();
    let later: Vec<_> = attempts.iter().filter(|(sent, _)| *sent > acknowledged).collect();
    assert!(
        later.len() >= 3,
        "only {} requests after the acknowledgement",
        later.len()
    );
    let issued_later = later.iter().filter(|(_, outcome)| outcome.is_ok()).count();
    assert_eq!(
        issued_later,
        0,
        "replica B issued {issued_later} of {} AATs requested after replica A acknowledged",
        later.len()
    );
    for (_, outcome) in later {
        assert_eq!(*outcome, Err(refusal), "every later request is refused the same way");
    }
}

/// Starts two replicas over a fresh database; `None` (reported skipped) without PostgreSQL.
fn replicas() -> Option<(PostgresDb, Replicas)> {
    let db = PostgresDb::create()?;
    let replicas = Replicas::start(&db.url);
    Some((db, replicas))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The claims of an AAT.
fn claims(aat: &str) -> Value {
    let payload = aat.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn an_agent_revoked_on_one_replica_gets_nothing_more_from_the_other() {
    let Some((_db, replicas)) = replicas() else { return };
    runtime().block_on(async {
        let admin_a = client(&replicas.a.url, Some(&replicas.admin_token));
        let admin_b = client(&replicas.b.url, Some(&replicas.admin_token));
        let b = client(&replicas.b.url, None);
        let agent = register(&admin_a, true).await;
        let id = agent.id.clone();

        // B's event stream, from the current version on.
        let version = serde_json::from_slice::<Value>(&fetch_list(&admin_b).await).unwrap()["version"]
            .as_u64()
            .unwrap();
        let mut events = admin_b
            .revocation_events(version, Duration::from_secs(10))
            .await
            .unwrap();

        let request = StatusRequest {
            reason: Some("compromised".into()),
            crl_reason: None,
        };
        let revoked_version = Arc::new(std::sync::Mutex::new(0));
        let seen = revoked_version.clone();
        refused_after_acknowledgement(&b, agent, Grant::Attestation, TokenErrorCode::AgentRevoked, async {
            let changed = admin_a.change_status(&id, StatusKind::Revoke, &request).await.unwrap();
            *seen.lock().unwrap() = changed.revocation_version;
        })
        .await;
        let revoked_version = *revoked_version.lock().unwrap();

        // B's stream shows A's revocation.
        let shown = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(event) = events.next().await {
                let event = event.unwrap();
                if event.event == "agent_revoked" && event.data.contains(id.as_str()) {
                    return event;
                }
            }
            panic!("B's event stream ended");
        })
        .await
        .expect("B's event stream did not show A's revocation within 10 s");
        assert_eq!(shown.id, revoked_version.to_string());
        // And B's list and CRL-backed view list it.
        let list: Value = serde_json::from_slice(&fetch_list(&admin_b).await).unwrap();
        assert!(list["version"].as_u64().unwrap() >= revoked_version, "{list}");
        assert!(list.to_string().contains(id.as_str()), "{list}");
    });
}

async fn fetch_list(client: &Client) -> Vec<u8> {
    match client
        .revocations_since(None, Duration::from_secs(10), 1 << 24)
        .await
        .unwrap()
    {
        aip_api::client::Fetched::Body { bytes, .. } => bytes,
        aip_api::client::Fetched::NotModified => panic!("an unconditional request answered 304"),
    }
}

#[test]
fn an_agent_suspended_on_one_replica_gets_nothing_more_from_the_other() {
    let Some((_db, replicas)) = replicas() else { return };
    runtime().block_on(async {
        let admin_a = client(&replicas.a.url, Some(&replicas.admin_token));
        let b = client(&replicas.b.url, None);
        let agent = register(&admin_a, true).await;
        let id = agent.id.clone();
        let request = StatusRequest::default();
        refused_after_acknowledgement(&b, agent, Grant::Attestation, TokenErrorCode::AgentSuspended, async {
            admin_a.change_status(&id, StatusKind::Suspend, &request).await.unwrap();
        })
        .await;
    });
}

#[test]
fn a_user_revoked_on_one_replica_gets_nothing_more_from_the_other() {
    let Some((_db, replicas)) = replicas() else { return };
    runtime().block_on(async {
        let admin_a = client(&replicas.a.url, Some(&replicas.admin_token));
        let b = client(&replicas.b.url, None);
        let agent = register(&admin_a, false).await;
        let user = admin_a
            .create_user(&CreateUserRequest {
                user_id: "alice@example.com".into(),
                delegatable_tools: vec!["*".into()],
                delegation_scope: None,
            })
            .await
            .unwrap();
        let grant = Grant::User(user.api_key.expose().to_owned());
        refused_after_acknowledgement(&b, agent, grant, TokenErrorCode::UserAuthFailed, async {
            let request = RevokeRequest {
                user_id: Some("alice@example.com".into()),
                ..RevokeRequest::default()
            };
            admin_a.revoke(&request).await.unwrap();
        })
        .await;
    });
}

#[test]
fn a_session_revoked_on_one_replica_is_not_refreshed_by_the_other() {
    let Some((_db, replicas)) = replicas() else { return };
    runtime().block_on(async {
        let admin_a = client(&replicas.a.url, Some(&replicas.admin_token));
        let b = client(&replicas.b.url, None);
        let agent = register(&admin_a, true).await;
        let first = request_token(&b, &agent, &Grant::Attestation).await.unwrap();
        let session = claims(first.aat.expose())["context"]["session_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let grant = Grant::Refresh(first.refresh_token.as_ref().unwrap().expose().to_owned());
        refused_after_acknowledgement(&b, agent, grant, TokenErrorCode::InvalidGrant, async {
            let request = RevokeRequest {
                session_id: Some(session.clone()),
                ..RevokeRequest::default()
            };
            admin_a.revoke(&request).await.unwrap();
        })
        .await;
    });
}
