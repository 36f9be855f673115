//! Tests of `aip_api::agent::AgentClient` against a small in-test token issuer (axum on
//! 127.0.0.1:0) that implements `/v1/challenge` and `/v1/token` faithfully enough: single-use
//! challenges checked with `ChallengeProof::verify`, AATs minted with `encode_aat`, rotating
//! refresh tokens whose reuse revokes the session.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aip_aat::clock::{Clock, FixedClock, SystemClock};
use aip_aat::ids::{AgentId, Jti, fill_random};
use aip_aat::keys::{Algorithm, JwkSet, KeyPair, Signer};
use aip_aat::proof::{Call, ProofError, ProofMismatch, ProofValidation, verify_proof};
use aip_aat::replay::InMemoryReplayCache;
use aip_aat::secret::SecretString;
use aip_aat::token::{
    AAT_VERSION, AatClaims, AgentClaims, Audience, Capabilities, Confirmation, ContextClaims, UnverifiedAat,
    Validation, encode_aat,
};
use aip_aat::verifier::CallVerifier;
use aip_api::agent::{AgentClient, AgentClientConfig, AgentClientError};
use aip_api::issuer::{
    ChallengeRequest, ChallengeResponse, DeniedCapabilities, GrantType, GrantedCapabilities, TokenErrorCode,
    TokenErrorResponse, TokenFormat, TokenRequest, TokenResponse, UserAuthorization,
};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "files-proxy";
const API_KEY: &str = "k-user-secret-123";
/// What the agent is registered for.
const AGENT_TOOLS: [&str; 3] = ["read_file", "search", "write_file"];

// ---------------------------------------------------------------------------------------------
// The in-test issuer
// ---------------------------------------------------------------------------------------------

struct Issuer {
    key: KeyPair,
    agent_id: AgentId,
    agent_key: KeyPair,
    ttl: i64,
    state: Mutex<IssuerState>,
}

#[derive(Default)]
struct IssuerState {
    challenges: HashSet<String>,
    refresh_tokens: HashMap<String, RefreshEntry>,
    revoked_sessions: HashSet<String>,
    /// Answer the next `n` token requests with 500.
    fail_token_requests: u32,
    log: Vec<Logged>,
}

struct RefreshEntry {
    session: String,
    used: bool,
    /// `exp` of the AAT issued with this refresh token.
    exp: i64,
}

/// One token request as the issuer saw it.
#[derive(Clone, Debug)]
struct Logged {
    grant: GrantType,
    status: u16,
    had_user: bool,
    requested_tools: Option<Vec<String>>,
    audience: String,
    refresh_token: Option<String>,
    issued_refresh_token: Option<String>,
    session: Option<String>,
    /// For refreshes: whether the request came before the previous AAT's `exp`.
    before_previous_exp: Option<bool>,
}

type Refusal = (TokenErrorCode, &'static str);

fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    fill_random(&mut bytes).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn precise_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

fn refuse(code: TokenErrorCode, description: &str) -> Response {
    let status = StatusCode::from_u16(code.http_status()).unwrap();
    let body = TokenErrorResponse {
        error: code,
        error_description: description.into(),
        error_details: None,
    };
    (status, Json(body)).into_response()
}

impl Issuer {
    fn new(ttl: i64) -> Arc<Self> {
        Arc::new(Self {
            key: KeyPair::generate(Algorithm::EdDSA).unwrap(),
            agent_id: AgentId::random().unwrap(),
            agent_key: KeyPair::generate(Algorithm::EdDSA).unwrap(),
            ttl,
            state: Mutex::default(),
        })
    }

    fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    fn grants(&self) -> Vec<(GrantType, u16)> {
        self.log().iter().map(|l| (l.grant, l.status)).collect()
    }

    fn revoke_all_sessions(&self) {
        let mut state = self.state.lock().unwrap();
        let sessions: Vec<String> = state.refresh_tokens.values().map(|e| e.session.clone()).collect();
        state.revoked_sessions.extend(sessions);
    }

    /// Someone else redeems the newest refresh token (as a thief would).
    fn steal_newest_refresh_token(&self) {
        let mut state = self.state.lock().unwrap();
        let newest = state
            .log
            .iter()
            .rev()
            .find_map(|l| l.issued_refresh_token.clone())
            .unwrap();
        state.refresh_tokens.get_mut(&newest).unwrap().used = true;
    }

    fn fail_next_token_requests(&self, n: u32) {
        self.state.lock().unwrap().fail_token_requests = n;
    }

    /// The verifier a proxy for [`AUDIENCE`] would use.
    fn verifier(&self) -> CallVerifier {
        CallVerifier::new(
            Validation::new(AUDIENCE),
            Arc::new(JwkSet::from_keys([self.key.public_key()])),
            Arc::new(InMemoryReplayCache::new(1000)),
        )
    }

    fn challenge(&self, request: &ChallengeRequest) -> Result<ChallengeResponse, Refusal> {
        if request.agent_id != self.agent_id {
            return Err((TokenErrorCode::AgentNotFound, "no such agent"));
        }
        let challenge = random_hex();
        self.state.lock().unwrap().challenges.insert(challenge.clone());
        Ok(ChallengeResponse {
            challenge,
            expires_at: time::OffsetDateTime::now_utc() + time::Duration::seconds(60),
        })
    }

    /// Handles a token request; `entry` receives what the log should say about it.
    fn token(&self, request: &TokenRequest, entry: &mut Logged) -> Result<TokenResponse, Refusal> {
        let mut state = self.state.lock().unwrap();
        if state.fail_token_requests > 0 {
            state.fail_token_requests -= 1;
            return Err((TokenErrorCode::IssuerError, "database unavailable"));
        }
        let now = SystemClock.now();
        if request.agent_id != self.agent_id {
            return Err((TokenErrorCode::AgentNotFound, "no such agent"));
        }
        if !state.challenges.remove(&request.proof.challenge) {
            return Err((TokenErrorCode::InvalidProof, "unknown or used challenge"));
        }
        request
            .proof
            .verify(self.agent_key.public_key(), &self.agent_id, now, 60)
            .map_err(|_| (TokenErrorCode::InvalidProof, "bad challenge signature"))?;
        if request.audience.is_empty() {
            return Err((TokenErrorCode::InvalidRequest, "audience required"));
        }
        let session = match request.grant_type {
            GrantType::AgentAuthentication => {
                match &request.user_authorization {
                    Some(UserAuthorization::ApiKey { token }) if token.expose() == API_KEY => {}
                    _ => return Err((TokenErrorCode::UserAuthFailed, "user authentication failed")),
                }
                if request.refresh_token.is_some() {
                    return Err((TokenErrorCode::InvalidRequest, "refresh_token not allowed"));
                }
                format!("s-{}", random_hex())
            }
            GrantType::AgentAttestation => {
                if request.user_authorization.is_some() || request.refresh_token.is_some() {
                    return Err((TokenErrorCode::InvalidRequest, "unexpected member"));
                }
                format!("s-{}", random_hex())
            }
            GrantType::AatRefresh => {
                if request.user_authorization.is_some() {
                    return Err((TokenErrorCode::InvalidRequest, "user_authorization not allowed"));
                }
                let presented = request
                    .refresh_token
                    .as_ref()
                    .ok_or((TokenErrorCode::InvalidRequest, "refresh_token required"))?;
                let IssuerState {
                    refresh_tokens,
                    revoked_sessions,
                    ..
                } = &mut *state;
                let old = refresh_tokens
                    .get_mut(presented.expose())
                    .ok_or((TokenErrorCode::InvalidGrant, "unknown refresh token"))?;
                if old.used {
                    // Reuse means theft or a confused client: end the session.
                    revoked_sessions.insert(old.session.clone());
                    return Err((TokenErrorCode::InvalidGrant, "refresh token reused; session revoked"));
                }
                if revoked_sessions.contains(&old.session) {
                    return Err((TokenErrorCode::InvalidGrant, "session revoked"));
                }
                old.used = true;
                entry.before_previous_exp = Some(precise_now() < old.exp as f64);
                old.session.clone()
            }
        };

        let requested: Vec<String> = match &request.requested_capabilities {
            Some(caps) => caps.tools.clone(),
            None => AGENT_TOOLS.iter().map(|t| t.to_string()).collect(),
        };
        let (granted, denied): (Vec<String>, Vec<String>) =
            requested.into_iter().partition(|t| AGENT_TOOLS.contains(&t.as_str()));
        if granted.is_empty() {
            return Err((TokenErrorCode::CapabilitiesDenied, "nothing to grant"));
        }
        let claims = AatClaims {
            aat_version: AAT_VERSION.into(),
            iss: ISSUER.into(),
            sub: self.agent_id.clone(),
            aud: Audience::one(request.audience.clone()),
            iat: now,
            exp: now + self.ttl,
            nbf: None,
            jti: Jti::random().unwrap(),
            agent: AgentClaims {
                id: self.agent_id.clone(),
                name: None,
                public_key_thumbprint: self.agent_key.key_id().clone(),
                aid_hash: None,
            },
            user_binding: None,
            capabilities: Capabilities {
                tools: granted.clone(),
                ..Default::default()
            },
            context: ContextClaims {
                session_id: session.clone(),
                policy_hash: None,
                registry_id: None,
            },
            cnf: Some(Confirmation {
                jkt: self.agent_key.key_id().clone(),
            }),
        };
        let aat = encode_aat(&claims, &self.key).unwrap();
        let refresh_token = format!("rt-{}", random_hex());
        state.refresh_tokens.insert(
            refresh_token.clone(),
            RefreshEntry {
                session: session.clone(),
                used: false,
                exp: claims.exp,
            },
        );
        entry.session = Some(session);
        entry.issued_refresh_token = Some(refresh_token.clone());
        Ok(TokenResponse {
            aat: SecretString::new(aat),
            token_type: "aat+jwt".into(),
            token_format: TokenFormat::Jwt,
            expires_in: u64::try_from(self.ttl).unwrap(),
            refresh_token: Some(SecretString::new(refresh_token)),
            capabilities_granted: GrantedCapabilities {
                tools: granted,
                resource_scopes: Vec::new(),
            },
            capabilities_denied: DeniedCapabilities {
                reason: if denied.is_empty() {
                    String::new()
                } else {
                    "not registered".into()
                },
                tools: denied,
            },
        })
    }
}

async fn challenge_endpoint(State(issuer): State<Arc<Issuer>>, Json(request): Json<ChallengeRequest>) -> Response {
    match issuer.challenge(&request) {
        Ok(response) => Json(response).into_response(),
        Err((code, description)) => refuse(code, description),
    }
}

async fn token_endpoint(State(issuer): State<Arc<Issuer>>, Json(request): Json<TokenRequest>) -> Response {
    let mut entry = Logged {
        grant: request.grant_type,
        status: 200,
        had_user: request.user_authorization.is_some(),
        requested_tools: request.requested_capabilities.as_ref().map(|c| c.tools.clone()),
        audience: request.audience.clone(),
        refresh_token: request.refresh_token.as_ref().map(|t| t.expose().to_owned()),
        issued_refresh_token: None,
        session: None,
        before_previous_exp: None,
    };
    let result = issuer.token(&request, &mut entry);
    let response = match result {
        Ok(response) => Json(response).into_response(),
        Err((code, description)) => {
            entry.status = code.http_status();
            refuse(code, description)
        }
    };
    issuer.state.lock().unwrap().log.push(entry);
    response
}

/// Serves `issuer` on an ephemeral loopback port; returns its base URL.
async fn serve(issuer: Arc<Issuer>) -> String {
    let app = Router::new()
        .route("/v1/challenge", post(challenge_endpoint))
        .route("/v1/token", post(token_endpoint))
        .with_state(issuer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn config(issuer: &Issuer, url: &str) -> AgentClientConfig {
    AgentClientConfig::new(url, issuer.agent_id.clone(), AUDIENCE)
}

fn agent_key(issuer: &Issuer) -> Arc<dyn Signer> {
    // The same key material as the issuer knows.
    Arc::new(KeyPair::from_pkcs8_der(&issuer.agent_key.to_pkcs8_der().unwrap()).unwrap())
}

/// An agent client with the default configuration, started against `issuer` served on
/// loopback.
async fn started(issuer: &Arc<Issuer>) -> AgentClient {
    let url = serve(issuer.clone()).await;
    AgentClient::start(agent_key(issuer), config(issuer, &url))
        .await
        .unwrap()
}

fn user() -> Option<UserAuthorization> {
    Some(UserAuthorization::ApiKey {
        token: SecretString::new(API_KEY),
    })
}

/// Checks that `client`'s credentials for a call pass a proxy's `CallVerifier`.
fn assert_call_accepted(issuer: &Issuer, client: &AgentClient) {
    let args = json!({"path": "/etc/hosts"});
    let call = Call::tools_call("read_file", Some(&args));
    let (aat, proof) = client.credentials(&call).unwrap();
    let verified = issuer
        .verifier()
        .verify(Some(aat.expose()), Some(&proof), &call)
        .unwrap();
    assert_eq!(verified.agent_id(), &issuer.agent_id);
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn client_is_send_sync_and_cheap_to_clone() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<AgentClient>();
    fn error<T: Send + Sync + std::error::Error + 'static>() {}
    error::<AgentClientError>();
}

#[tokio::test]
async fn user_authentication_then_credentials_pass_the_verifier() {
    let issuer = Issuer::new(900);
    let url = serve(issuer.clone()).await;
    let mut config = config(&issuer, &url);
    config.user = user();
    config.tools = Some(vec!["read_file".into(), "delete_everything".into()]);
    let client = AgentClient::start(agent_key(&issuer), config).await.unwrap();

    let log = issuer.log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].grant, GrantType::AgentAuthentication);
    assert!(log[0].had_user);
    assert_eq!(log[0].audience, AUDIENCE);
    assert_eq!(
        log[0].requested_tools.as_deref(),
        Some(&["read_file".to_owned(), "delete_everything".to_owned()][..])
    );

    let current = client.current();
    assert_eq!(current.capabilities_granted.tools, ["read_file"]);
    assert_eq!(current.capabilities_denied.tools, ["delete_everything"]);
    assert_eq!(current.expires_at - current.issued_at, 900);

    // A proxy accepts the AAT with a proof for this call, once.
    let verifier = issuer.verifier();
    let args = json!({"path": "/etc/hosts"});
    let call = Call::tools_call("read_file", Some(&args));
    let (aat, proof) = client.credentials(&call).unwrap();
    let verified = verifier.verify(Some(aat.expose()), Some(&proof), &call).unwrap();
    assert_eq!(verified.claims().capabilities.tools, ["read_file"]);
    assert_eq!(verified.confirmation_thumbprint(), issuer.agent_key.key_id());
    assert!(verifier.verify(Some(aat.expose()), Some(&proof), &call).is_err());
    // The proof is bound to its call.
    let other_args = json!({"path": "/etc/shadow"});
    let other = Call::tools_call("read_file", Some(&other_args));
    let (_, proof) = client.credentials(&call).unwrap();
    assert!(verifier.verify(Some(aat.expose()), Some(&proof), &other).is_err());

    // Nothing secret in Debug output.
    let shown = format!("{client:?} {current:?}");
    assert!(!shown.contains(aat.expose()), "{shown}");
    assert!(!shown.contains(API_KEY), "{shown}");
}

#[tokio::test]
async fn autonomous_agent_uses_attestation_and_the_injected_clock() {
    let issuer = Issuer::new(900);
    let url = serve(issuer.clone()).await;
    let now = SystemClock.now() - 20;
    let clock = Arc::new(FixedClock::new(now));
    let client = AgentClient::start_with_clock(agent_key(&issuer), config(&issuer, &url), clock.clone())
        .await
        .unwrap();
    let log = issuer.log();
    assert_eq!(log[0].grant, GrantType::AgentAttestation);
    assert!(!log[0].had_user);
    assert_eq!(log[0].requested_tools, None);
    let current = client.current();
    assert_eq!(current.issued_at, now);
    assert_eq!(current.capabilities_granted.tools, AGENT_TOOLS);

    // Proofs carry the injected time and pass `verify_proof` for their call only.
    let call = Call::tools_call("search", None);
    let (aat, proof) = client.credentials(&call).unwrap();
    let verified = UnverifiedAat::parse(aat.expose())
        .unwrap()
        .verify(
            &JwkSet::from_keys([issuer.key.public_key()]),
            &SystemClock,
            &Validation::new(AUDIENCE),
        )
        .unwrap();
    let replay = InMemoryReplayCache::new(100);
    let validation = ProofValidation::new(AUDIENCE);
    let other = Call::tools_call("write_file", None);
    assert_eq!(
        verify_proof(&proof, &verified, &other, &validation, &replay, now),
        Err(ProofError::Mismatch(ProofMismatch::Tool))
    );
    let claims = verify_proof(&proof, &verified, &call, &validation, &replay, now).unwrap();
    assert_eq!(claims.iat, now);
    assert_eq!(claims.aud, AUDIENCE);
}

#[tokio::test]
async fn refresh_rotates_the_refresh_token() {
    let issuer = Issuer::new(900);
    let url = serve(issuer.clone()).await;
    let mut config = config(&issuer, &url);
    config.user = user();
    config.tools = Some(vec!["read_file".into()]);
    let client = AgentClient::start(agent_key(&issuer), config).await.unwrap();
    let first = client.current();

    let second = client.refresh().await.unwrap();
    let third = client.refresh().await.unwrap();
    assert_ne!(first.aat, second.aat);
    assert_ne!(second.aat, third.aat);
    assert_eq!(client.current().aat, third.aat);
    assert_call_accepted(&issuer, &client);

    let log = issuer.log();
    assert_eq!(
        log.iter().map(|l| (l.grant, l.status)).collect::<Vec<_>>(),
        [
            (GrantType::AgentAuthentication, 200),
            (GrantType::AatRefresh, 200),
            (GrantType::AatRefresh, 200)
        ]
    );
    // Each refresh presents the refresh token of the response before it.
    assert_eq!(log[1].refresh_token, log[0].issued_refresh_token);
    assert_eq!(log[2].refresh_token, log[1].issued_refresh_token);
    assert_ne!(log[1].refresh_token, log[2].refresh_token);
    // Refreshes stay in the session, without user authorization, for the same audience and tools.
    for refresh in &log[1..] {
        assert!(!refresh.had_user);
        assert_eq!(refresh.audience, AUDIENCE);
        assert_eq!(refresh.session, log[0].session);
        assert_eq!(refresh.requested_tools.as_deref(), Some(&["read_file".to_owned()][..]));
    }
}

#[tokio::test]
async fn refused_refresh_falls_back_to_full_authentication() {
    let issuer = Issuer::new(900);
    let url = serve(issuer.clone()).await;
    let mut config = config(&issuer, &url);
    config.user = user();
    let client = AgentClient::start(agent_key(&issuer), config).await.unwrap();
    let before = client.current();

    issuer.revoke_all_sessions();
    let after = client.refresh().await.unwrap();
    assert_ne!(before.aat, after.aat);
    assert_call_accepted(&issuer, &client);
    let log = issuer.log();
    assert_eq!(
        issuer.grants(),
        [
            (GrantType::AgentAuthentication, 200),
            (GrantType::AatRefresh, 400),
            (GrantType::AgentAuthentication, 200),
        ]
    );
    assert_ne!(log[2].session, log[0].session, "a new session");

    // The new session's refresh token works again.
    client.refresh().await.unwrap();
    assert_eq!(issuer.grants()[3], (GrantType::AatRefresh, 200));
    assert_eq!(issuer.log()[3].session, log[2].session);

    // A refresh token redeemed by someone else is refused as reused (and the session ends):
    // the client authenticates again.
    issuer.steal_newest_refresh_token();
    client.refresh().await.unwrap();
    assert_eq!(
        issuer.grants()[4..],
        [(GrantType::AatRefresh, 400), (GrantType::AgentAuthentication, 200)]
    );
    assert_call_accepted(&issuer, &client);
}

#[tokio::test]
async fn server_errors_on_refresh_keep_the_refresh_token() {
    let issuer = Issuer::new(900);
    let client = started(&issuer).await;
    issuer.fail_next_token_requests(1);
    let error = client.refresh().await.unwrap_err();
    assert!(
        matches!(
            error,
            AgentClientError::Refused {
                status: 500,
                error: Some(TokenErrorCode::IssuerError),
                ..
            }
        ),
        "{error:?}"
    );
    // No fallback on a 5xx, and the refresh token is still the one to use.
    client.refresh().await.unwrap();
    let log = issuer.log();
    assert_eq!(
        issuer.grants(),
        [
            (GrantType::AgentAttestation, 200),
            (GrantType::AatRefresh, 500),
            (GrantType::AatRefresh, 200),
        ]
    );
    assert_eq!(log[2].refresh_token, log[0].issued_refresh_token);
}

#[tokio::test]
async fn run_refresh_renews_before_expiry_and_subscribers_follow() {
    let issuer = Issuer::new(4);
    let client = started(&issuer).await;
    let mut tokens = client.subscribe();
    let first = tokens.borrow_and_update().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .run_refresh(async {
                    let _ = stopped.await;
                })
                .await;
        })
    };

    let mut seen = vec![first];
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(10), tokens.changed())
            .await
            .expect("a new AAT within 10 s")
            .unwrap();
        let next = tokens.borrow_and_update().clone();
        // Renewed while the previous AAT was still valid.
        assert!(precise_now() < seen.last().unwrap().expires_at as f64);
        assert_ne!(next.aat, seen.last().unwrap().aat);
        seen.push(next);
        assert_call_accepted(&issuer, &client);
    }
    let log = issuer.log();
    assert_eq!(log.len(), 3);
    for refresh in &log[1..] {
        assert_eq!((refresh.grant, refresh.status), (GrantType::AatRefresh, 200));
        assert_eq!(refresh.before_previous_exp, Some(true));
    }
    assert!(client.subscribe_errors().borrow().is_none());

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), runner)
        .await
        .expect("run_refresh stops on shutdown")
        .unwrap();
}

#[tokio::test]
async fn run_refresh_retries_after_a_failure() {
    let issuer = Issuer::new(4);
    let client = started(&issuer).await;
    let mut tokens = client.subscribe();
    let mut errors = client.subscribe_errors();
    issuer.fail_next_token_requests(1);
    let runner = {
        let client = client.clone();
        tokio::spawn(async move { client.run_refresh(std::future::pending()).await })
    };

    // The failure is published...
    tokio::time::timeout(Duration::from_secs(10), errors.changed())
        .await
        .expect("the failed refresh is reported")
        .unwrap();
    let reported = errors.borrow_and_update().clone();
    let text = reported.map(|e| e.to_string()).unwrap_or_default();
    assert!(text.contains("HTTP 500 issuer_error"), "{text}");

    // ...and the retry, within the backoff and before expiry, succeeds and clears it.
    tokio::time::timeout(Duration::from_secs(10), tokens.changed())
        .await
        .expect("a new AAT after the retry")
        .unwrap();
    assert!(precise_now() < client.current().issued_at as f64 + 4.0);
    assert_eq!(
        issuer.grants(),
        [
            (GrantType::AgentAttestation, 200),
            (GrantType::AatRefresh, 500),
            (GrantType::AatRefresh, 200),
        ]
    );
    assert_eq!(issuer.log()[2].before_previous_exp, Some(true));
    tokio::time::timeout(Duration::from_secs(5), async {
        while errors.borrow_and_update().is_some() {
            errors.changed().await.unwrap();
        }
    })
    .await
    .expect("the error is cleared");
    runner.abort();
}

#[tokio::test]
async fn refused_start_reports_the_code_without_secrets() {
    let issuer = Issuer::new(900);
    let url = serve(issuer.clone()).await;
    let mut config = config(&issuer, &url);
    let wrong_key = "k-wrong-secret-456";
    config.user = Some(UserAuthorization::ApiKey {
        token: SecretString::new(wrong_key),
    });
    let error = AgentClient::start(agent_key(&issuer), config).await.unwrap_err();
    assert!(
        matches!(
            error,
            AgentClientError::Refused {
                status: 401,
                error: Some(TokenErrorCode::UserAuthFailed),
                ..
            }
        ),
        "{error:?}"
    );
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains(wrong_key), "{shown}");
    assert!(!shown.contains(API_KEY), "{shown}");
    assert_eq!(
        error.to_string(),
        "the issuer refused the request (HTTP 401 user_auth_failed): user authentication failed"
    );

    // An unknown agent is refused at the challenge.
    let stranger = AgentClientConfig::new(&url, AgentId::random().unwrap(), AUDIENCE);
    let error = AgentClient::start(agent_key(&issuer), stranger).await.unwrap_err();
    assert!(matches!(
        error,
        AgentClientError::Refused {
            status: 404,
            error: Some(TokenErrorCode::AgentNotFound),
            ..
        }
    ));

    // A key other than the registered one fails the challenge proof.
    let impostor: Arc<dyn Signer> = Arc::new(KeyPair::generate(Algorithm::EdDSA).unwrap());
    let error = AgentClient::start(impostor, self::config(&issuer, &url))
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        AgentClientError::Refused {
            status: 401,
            error: Some(TokenErrorCode::InvalidProof),
            ..
        }
    ));
}

#[tokio::test]
async fn unreachable_issuer_is_a_transport_error() {
    // A port that was just free: nothing listens there.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let issuer = Issuer::new(900);
    let error = AgentClient::start(agent_key(&issuer), config(&issuer, &url))
        .await
        .unwrap_err();
    match &error {
        AgentClientError::Transport { url: failed, .. } => assert_eq!(failed, &format!("{url}/v1/challenge")),
        other => panic!("expected a transport error, got {other:?}"),
    }
    let text = error.to_string();
    assert!(
        text.starts_with(&format!("cannot reach the issuer at {url}/v1/challenge: ")),
        "{text}"
    );
    assert!(!text.contains('\n'));
}

#[tokio::test]
async fn unusable_configuration_is_refused_before_any_request() {
    let issuer = Issuer::new(900);
    let base = config(&issuer, "http://127.0.0.1:1");
    let with = |change: fn(&mut AgentClientConfig)| {
        let mut config = base.clone();
        change(&mut config);
        config
    };
    let cases = [
        (with(|c| c.refresh_at = 0.0), "refresh_at"),
        (with(|c| c.refresh_at = f64::NAN), "refresh_at"),
        (with(|c| c.refresh_at = 1.5), "refresh_at"),
        (with(|c| c.issuer_url = "ftp://issuer".into()), "issuer_url"),
        (with(|c| c.issuer_url = "not a url".into()), "issuer_url"),
        (with(|c| c.audience = String::new()), "audience"),
        (with(|c| c.ca_pem = Some(b"no certificate here".to_vec())), "ca_pem"),
    ];
    for (config, field) in cases {
        match AgentClient::start(agent_key(&issuer), config).await {
            Err(AgentClientError::Config(what)) => assert!(what.contains(field), "{what}"),
            other => panic!("{field}: expected a configuration error, got {other:?}"),
        }
    }
}
