//! The token issuer end to end over real HTTP on loopback, with the registry in the same
//! process and a real database (every test on SQLite and PostgreSQL): each grant, each user
//! authorization method, each spec 9.4.2 error, single use of challenges across two issuer
//! instances, refresh-token rotation and reuse detection, and revocation of tokens, sessions,
//! users and agents as the registry publishes it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, unreachable_pub)]

#[path = "../../registry/tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use aip_aat::challenge::ChallengeProof;
use aip_aat::clock::Clock as _;
use aip_aat::ids::AgentId;
use aip_aat::keyfile::Protection;
use aip_aat::keys::{Algorithm, JwkSet, Jwks, KeyPair};
use aip_aat::revocation::{RevocationIndex, RevocationList, SignedRevocationList};
use aip_aat::token::{AatClaims, UnverifiedAat, Validation};
use aip_aat::validate::RevocationView as _;
use aip_api::issuer::TokenResponse;
use aip_api::registry::IssuerEndpoints;
use aip_authority::directory::{IssuerKeys, LocalDirectory};
use aip_issuer::config::IssuerSettings;
use aip_issuer::directory::RemoteDirectory;
use aip_issuer::keys::{SigningKeys, ensure_key};
use aip_issuer::oidc::{JwksSource, OidcProvider, UserClaim};
use aip_issuer::service::Issuer;
use aip_issuer::store::{
    DbError, Issuance, IssuedToken, IssuerStore, Ledger, LedgerError, OnceKind, Refusal, SessionChange, SessionRecord,
};
use aip_registry::store::RevocationStore as _;
use common::{NOW, TestRegistry, key, sign_body};
use serde_json::{Value, json};

const AUDIENCE: &str = "files-proxy";

/// The registry and an issuer over its database, served on a loopback port.
struct Env {
    t: TestRegistry,
    url: String,
    http: reqwest::Client,
}

async fn start_issuer(t: &TestRegistry, settings: IssuerSettings) -> String {
    let store = IssuerStore::new(t.store.database());
    ensure_key(&store, Algorithm::EdDSA, Protection::InsecureNone, NOW)
        .await
        .unwrap();
    let keys = Arc::new(SigningKeys::load(&store, None, NOW).await.unwrap());
    let directory = LocalDirectory::new(t.registry.clone());
    let issuer = Issuer::new(settings, directory, store, keys.clone(), t.clock.clone())
        .await
        .unwrap();
    t.registry.attach_token_issuer(
        Arc::new(IssuerKeys(keys)),
        IssuerEndpoints {
            issuer: "http://registry.test".into(),
            challenge_endpoint: "http://registry.test/v1/challenge".into(),
            token_endpoint: "http://registry.test/v1/token".into(),
            revocation_endpoint: "http://registry.test/v1/revoke".into(),
            oauth_authorization_server: Some("http://registry.test/.well-known/oauth-authorization-server".into()),
        },
    );
    serve(aip_registry::http::router_with(
        t.registry.clone(),
        aip_issuer::http::routes(Arc::new(issuer)),
    ))
    .await
}

/// Serves `router` on a loopback port (recording client addresses); returns its base URL.
async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .await
            .unwrap();
    });
    format!("http://{addr}")
}

fn settings() -> IssuerSettings {
    let mut settings = IssuerSettings::new("http://registry.test");
    settings.registry_id = Some("http://registry.test".into());
    settings
}

impl Env {
    async fn new(t: TestRegistry) -> Self {
        Self::with(t, settings()).await
    }

    async fn with(t: TestRegistry, settings: IssuerSettings) -> Self {
        let url = start_issuer(&t, settings).await;
        Self {
            t,
            url,
            http: reqwest::Client::new(),
        }
    }

    async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        post(&self.http, &self.url, path, token, body).await
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.http.get(format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Registers an agent (capabilities read_file, list_directory); `autonomous` as given.
    async fn agent(&self, key: &KeyPair, autonomous: bool) -> AgentId {
        let mut body = self.t.registration(key, "agent");
        body.as_object_mut().unwrap().remove("proof");
        body["autonomous"] = autonomous.into();
        sign_body(key, &mut body, "/v1/agents", self.t.clock.now());
        let (status, reply) = self.post("/v1/agents", Some(&self.t.admin), &body).await;
        assert_eq!(status, 201, "{reply}");
        reply["agent_id"].as_str().unwrap().parse().unwrap()
    }

    async fn user(&self, user_id: &str, tools: &[&str]) -> String {
        let (status, reply) = self
            .post(
                "/v1/users",
                Some(&self.t.admin),
                &json!({"user_id": user_id, "delegatable_tools": tools}),
            )
            .await;
        assert_eq!(status, 201, "{reply}");
        reply["api_key"].as_str().unwrap().to_owned()
    }

    async fn signed_challenge(&self, key: &KeyPair, agent_id: &AgentId) -> Value {
        let (status, reply) = self.post("/v1/challenge", None, &json!({"agent_id": agent_id})).await;
        assert_eq!(status, 200, "{reply}");
        let challenge = reply["challenge"].as_str().unwrap();
        serde_json::to_value(ChallengeProof::create(key, challenge, agent_id, self.t.clock.now()).unwrap()).unwrap()
    }

    /// A token request body with a fresh signed challenge.
    async fn request(&self, key: &KeyPair, agent_id: &AgentId, extra: Value) -> Value {
        let mut body = json!({
            "grant_type": "agent_authentication",
            "agent_id": agent_id,
            "proof": self.signed_challenge(key, agent_id).await,
            "audience": AUDIENCE,
        });
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                body.as_object_mut().unwrap().remove(k);
            } else {
                body[k] = v.clone();
            }
        }
        body
    }

    async fn token(&self, key: &KeyPair, agent_id: &AgentId, extra: Value) -> (u16, Value) {
        let body = self.request(key, agent_id, extra).await;
        self.post("/v1/token", None, &body).await
    }

    async fn jwks(&self) -> JwkSet {
        let (status, jwks) = self.get("/v1/jwks", None).await;
        assert_eq!(status, 200);
        JwkSet::from_jwks(&serde_json::from_value::<Jwks>(jwks).unwrap()).unwrap()
    }

    async fn revocations(&self) -> RevocationList {
        let (status, list) = self.get("/v1/revocations", Some(&self.t.admin)).await;
        assert_eq!(status, 200, "{list}");
        serde_json::from_value(list).unwrap()
    }

    /// Verifies an AAT as a proxy would (signature from /v1/jwks, audience, time).
    async fn verify(&self, aat: &str) -> aip_aat::token::VerifiedAat {
        let keys = self.jwks().await;
        UnverifiedAat::parse(aat)
            .unwrap()
            .verify(&keys, &*self.t.clock, &Validation::new(AUDIENCE))
            .unwrap()
    }
}

async fn post(http: &reqwest::Client, url: &str, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
    let mut request = http.post(format!("{url}{path}")).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Whether a verifier working from the revocation list refuses the token.
fn revoked(index: &RevocationIndex, claims: &AatClaims) -> bool {
    index.is_agent_revoked(&claims.sub)
        || index.is_token_revoked(&claims.jti)
        || index.is_session_revoked(&claims.context.session_id)
        || claims
            .user_binding
            .as_ref()
            .and_then(|b| index.user_revoked_at(&b.user_id))
            .is_some_and(|at| claims.iat <= at)
}

fn api_key(key: &str) -> Value {
    json!({"user_authorization": {"type": "api_key", "token": key}})
}

fn tools(extra: Value, list: &[&str]) -> Value {
    let mut extra = extra;
    extra["requested_capabilities"] = json!({"tools": list});
    extra
}

async fn api_key_grant(t: TestRegistry) {
    let env = Env::new(t).await;
    let agent_key = key();
    let agent = env.agent(&agent_key, false).await;
    let alice = env.user("alice@example.com", &["read_file", "write_file"]).await;
    let (status, reply) = env
        .token(
            &agent_key,
            &agent,
            tools(api_key(&alice), &["read_file", "list_directory"]),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let response: TokenResponse = serde_json::from_value(reply.clone()).unwrap();
    assert_eq!(response.token_type, "aat+jwt");
    assert_eq!(response.expires_in, 900);
    assert_eq!(response.capabilities_granted.tools, ["read_file"]);
    assert_eq!(response.capabilities_denied.tools, ["list_directory"]);
    assert!(reply["refresh_token"].as_str().unwrap().starts_with("aip_rf_"));

    let verified = env.verify(response.aat.expose()).await;
    let claims = verified.claims();
    assert_eq!(claims.iss, "http://registry.test");
    assert_eq!(claims.sub, agent);
    assert_eq!(claims.exp - claims.iat, 900);
    assert_eq!(claims.capabilities.tools, ["read_file"]);
    assert_eq!(claims.cnf.as_ref().unwrap().jkt, *agent_key.key_id());
    assert_eq!(claims.agent.public_key_thumbprint, *agent_key.key_id());
    let binding = claims.user_binding.as_ref().unwrap();
    assert_eq!(binding.user_id, "alice@example.com");
    assert_eq!(binding.auth_method.as_str(), "api_key");
    assert_eq!(binding.auth_time, NOW);
    assert_eq!(binding.delegation_scope.as_ref().unwrap().as_str(), "tools");
    assert!(claims.context.session_id.starts_with("ses_"));
    assert_eq!(claims.context.registry_id.as_deref(), Some("http://registry.test"));

    // No requested capabilities: everything the agent has, within the user's tools.
    let (status, reply) = env.token(&agent_key, &agent, api_key(&alice)).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["capabilities_granted"]["tools"], json!(["read_file"]));

    // Issuance is audited in the registry's hash-chained log, and the chain holds.
    let records = env.t.store.database().audit_records(0, 1000).await.unwrap();
    let issued: Vec<_> = records.iter().filter(|r| r.action == "token.issue").collect();
    assert_eq!(issued.len(), 2);
    assert_eq!(issued[0].subject, claims.jti.as_str());
    assert_eq!(issued[0].details["user_id"], "alice@example.com");
    let mut chain = aip_db::audit::AuditChain::default();
    for record in &records {
        chain.push(record).unwrap();
    }
    let (seq, head) = env.t.store.database().audit_head().await.unwrap();
    chain.finish(seq, &head).unwrap();
    assert!(!records.iter().any(|r| r.details.to_string().contains(&alice)));
}
with_registry!(api_key_grant_issues_verifiable_aats, api_key_grant);

async fn refresh(t: TestRegistry) {
    let env = Env::new(t).await;
    let agent_key = key();
    let agent = env.agent(&agent_key, false).await;
    let alice = env.user("alice", &["*"]).await;
    let (status, first) = env.token(&agent_key, &agent, api_key(&alice)).await;
    assert_eq!(status, 200, "{first}");
    let first_aat = env.verify(first["aat"].as_str().unwrap()).await;
    env.t.clock.advance(600);

    let refresh = |token: &Value| json!({"grant_type": "aat_refresh", "refresh_token": token});
    let (status, second) = env.token(&agent_key, &agent, refresh(&first["refresh_token"])).await;
    assert_eq!(status, 200, "{second}");
    let second_aat = env.verify(second["aat"].as_str().unwrap()).await;
    assert_eq!(
        second_aat.claims().context.session_id,
        first_aat.claims().context.session_id
    );
    assert_ne!(second_aat.claims().jti, first_aat.claims().jti);
    assert_eq!(second_aat.claims().iat, NOW + 600);
    // The user's authentication time is the session's, not the refresh's.
    assert_eq!(second_aat.claims().user_binding.as_ref().unwrap().auth_time, NOW);
    assert_ne!(second["refresh_token"], first["refresh_token"]);

    // A refresh needs the agent's proof too: another agent cannot use a stolen refresh token.
    let (status, reply) = env
        .token(
            &agent_key,
            &agent,
            json!({"grant_type": "aat_refresh", "refresh_token": null}),
        )
        .await;
    assert_eq!((status, reply["error"].as_str()), (400, Some("invalid_request")));

    // The old refresh token again: reuse → the whole session is revoked.
    let (status, reply) = env.token(&agent_key, &agent, refresh(&first["refresh_token"])).await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (400, Some("invalid_grant")),
        "{reply}"
    );
    let (status, reply) = env.token(&agent_key, &agent, refresh(&second["refresh_token"])).await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (400, Some("invalid_grant")),
        "{reply}"
    );
    let list = env.revocations().await;
    let session = &first_aat.claims().context.session_id;
    assert!(list.revoked_sessions.iter().any(|s| &s.session_id == session));
    for aat in [&first_aat, &second_aat] {
        assert!(list.revoked_aats.iter().any(|r| r.jti == aat.claims().jti));
        assert!(revoked(&RevocationIndex::from(&list), aat.claims()));
    }
    let audit = env.t.store.database().audit_records(0, 1000).await.unwrap();
    assert!(audit.iter().any(|r| r.action == "token.refresh"));
    assert!(
        audit
            .iter()
            .any(|r| r.action == "session.revoke" && r.details["reason"] == "refresh token reuse")
    );

    // Unknown refresh token; refresh after the session's end.
    let (status, reply) = env.token(&agent_key, &agent, refresh(&json!("aip_rf_unknown"))).await;
    assert_eq!((status, reply["error"].as_str()), (400, Some("invalid_grant")));
    let (_, third) = env.token(&agent_key, &agent, api_key(&alice)).await;
    env.t.clock.advance(86_400);
    let (status, reply) = env.token(&agent_key, &agent, refresh(&third["refresh_token"])).await;
    assert_eq!((status, reply["error"].as_str()), (400, Some("invalid_grant")));
}
with_registry!(refresh_rotates_and_reuse_revokes_the_session, refresh);

async fn refresh_reports_denials(t: TestRegistry) {
    let env = Env::new(t).await;
    let agent_key = key();
    let agent = env.agent(&agent_key, false).await;
    let alice = env.user("alice", &["*"]).await;
    let (status, first) = env
        .token(&agent_key, &agent, tools(api_key(&alice), &["read_file"]))
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["capabilities_granted"]["tools"], json!(["read_file"]));

    // The refresh asks for more than the session holds: the session's tools are granted and
    // the rest is reported as denied, never as granted.
    let refresh = json!({"grant_type": "aat_refresh", "refresh_token": first["refresh_token"]});
    let (status, second) = env
        .token(
            &agent_key,
            &agent,
            tools(refresh, &["read_file", "list_directory", "exec"]),
        )
        .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["capabilities_granted"]["tools"], json!(["read_file"]));
    assert_eq!(
        second["capabilities_denied"]["tools"],
        json!(["list_directory", "exec"])
    );
    assert_ne!(
        second["capabilities_denied"]["reason"], "all requested capabilities granted",
        "{second}"
    );
    let claims = env.verify(second["aat"].as_str().unwrap()).await;
    assert_eq!(claims.claims().capabilities.tools, ["read_file"]);

    // A refresh that asks for nothing in particular keeps the session's tools, denying none.
    let refresh = json!({"grant_type": "aat_refresh", "refresh_token": second["refresh_token"]});
    let (status, third) = env.token(&agent_key, &agent, refresh).await;
    assert_eq!(status, 200, "{third}");
    assert_eq!(third["capabilities_granted"]["tools"], json!(["read_file"]));
    assert_eq!(third["capabilities_denied"]["tools"], json!([]));
    assert_eq!(
        third["capabilities_denied"]["reason"],
        "all requested capabilities granted"
    );
}
with_registry!(refresh_reports_what_it_denied, refresh_reports_denials);

/// A signed registration body for `name`, with `edit` applied before signing.
fn registration_with(env: &Env, key: &KeyPair, name: &str, edit: impl FnOnce(&mut Value)) -> Value {
    let mut body = env.t.registration(key, name);
    body.as_object_mut().unwrap().remove("proof");
    edit(&mut body);
    sign_body(key, &mut body, "/v1/agents", env.t.clock.now());
    body
}

/// Asserts a refusal with this status and code whose description contains every `needle`.
fn refused(reply: &(u16, Value), status: u16, code: &str, needles: &[&str]) {
    assert_eq!(
        (reply.0, reply.1["error"].as_str()),
        (status, Some(code)),
        "{}",
        reply.1
    );
    let description = reply.1["error_description"].as_str().unwrap();
    for needle in needles {
        assert!(description.contains(needle), "{needle:?} not in {description:?}");
    }
}

async fn agent_count(env: &Env) -> usize {
    let (status, list) = env.get("/v1/agents?limit=1000", Some(&env.t.admin)).await;
    assert_eq!(status, 200, "{list}");
    list["agents"].as_array().unwrap().len()
}

async fn nested_members(t: TestRegistry) {
    let env = Env::new(t).await;
    let agent_key = key();
    let before = agent_count(&env).await;
    // Unknown members of nested request objects are refused, naming the member and its place.
    let body = registration_with(&env, &agent_key, "strict agent", |b| {
        b["metadata"] = json!({"owner": "ops", "colour": "red"});
    });
    let reply = env.post("/v1/agents", Some(&env.t.admin), &body).await;
    refused(&reply, 400, "invalid_request", &["metadata", "colour"]);
    let body = registration_with(&env, &agent_key, "strict agent", |b| {
        b["public_key"]["x5c"] = json!(["MIIB"]);
    });
    let reply = env.post("/v1/agents", Some(&env.t.admin), &body).await;
    refused(&reply, 400, "invalid_request", &["public_key", "x5c"]);
    assert_eq!(
        agent_count(&env).await,
        before,
        "a refused registration changes nothing"
    );
    let agent = env.agent(&agent_key, false).await;
    let new_key = key();
    let path = format!("/v1/agents/{agent}/rotate-key");
    let mut rotation = common::rotation(&agent_key, &new_key, &new_key, &path, env.t.clock.now());
    rotation["new_public_key"]["key_ops"] = json!(["verify"]);
    let reply = env.post(&path, None, &rotation).await;
    refused(&reply, 400, "invalid_request", &["new_public_key", "key_ops"]);

    // The token request's nested objects.
    let alice = env.user("alice", &["*"]).await;
    let mut authorization = api_key(&alice);
    authorization["user_authorization"]["scope"] = json!("all");
    let reply = env.token(&agent_key, &agent, authorization).await;
    refused(&reply, 400, "invalid_request", &["user_authorization", "scope"]);
    let mut requested = tools(api_key(&alice), &["read_file"]);
    requested["requested_capabilities"]["max_calls"] = json!(3);
    let reply = env.token(&agent_key, &agent, requested).await;
    refused(&reply, 400, "invalid_request", &["requested_capabilities", "max_calls"]);
    let mut body = env.request(&agent_key, &agent, api_key(&alice)).await;
    body["proof"]["nonce"] = json!("n");
    let reply = env.post("/v1/token", None, &body).await;
    refused(&reply, 400, "invalid_request", &["proof", "nonce"]);

    // A remote issuer's publication.
    let publication = json!({"subject": "session:s1", "sessions": [{"id": "s1", "expires_at": NOW, "why": "x"}]});
    let reply = env.post("/v1/revocations", Some(&env.t.admin), &publication).await;
    refused(&reply, 400, "invalid_request", &["sessions[0]", "why"]);
}
with_registry!(nested_unknown_members_are_refused, nested_members);

async fn invisible_characters(t: TestRegistry) {
    let env = Env::new(t).await;
    let before = agent_count(&env).await;
    for (name, code_point) in [
        ("pay\u{202E}lapl-agent", "U+202E"),
        ("\u{2066}paypal\u{2069}", "U+2066"),
        ("pay\u{200B}pal", "U+200B"),
        ("paypal\u{200D}", "U+200D"),
        ("\u{FEFF}paypal", "U+FEFF"),
        ("pay\u{061C}pal", "U+061C"),
        ("pay\u{200F}pal", "U+200F"),
        ("pay\u{2060}pal", "U+2060"),
    ] {
        let body = registration_with(&env, &key(), name, |_| {});
        let reply = env.post("/v1/agents", Some(&env.t.admin), &body).await;
        refused(&reply, 400, "invalid_request", &["name", code_point]);
    }
    let body = registration_with(&env, &key(), "tagged", |b| {
        b["metadata"] = json!({"owner": "ops\u{202D}", "tags": ["ok"]});
    });
    let reply = env.post("/v1/agents", Some(&env.t.admin), &body).await;
    refused(&reply, 400, "invalid_request", &["metadata.owner", "U+202D"]);
    assert_eq!(agent_count(&env).await, before);

    let reply = env
        .post(
            "/v1/users",
            Some(&env.t.admin),
            &json!({"user_id": "alice\u{200B}@example.com", "delegatable_tools": ["*"]}),
        )
        .await;
    refused(&reply, 400, "invalid_request", &["user_id", "U+200B"]);
    let (status, users) = env.get("/v1/users", Some(&env.t.admin)).await;
    assert_eq!((status, users["users"].as_array().unwrap().len()), (200, 0), "{users}");
    let reply = env
        .post(
            "/v1/access-tokens",
            Some(&env.t.admin),
            &json!({"role": "reader", "label": "dash\u{202E}board"}),
        )
        .await;
    refused(&reply, 400, "invalid_request", &["label", "U+202E"]);
}
with_registry!(names_refuse_invisible_characters, invisible_characters);

/// Sets the skeleton columns back to NULL, as rows from before migration 0005 have them.
async fn forget_skeletons(env: &Env) {
    let db = env.t.store.database();
    for sql in [
        "UPDATE agents SET name_skeleton = NULL",
        "UPDATE users SET user_id_skeleton = NULL",
    ] {
        sqlx::query(sql).execute(db.writer()).await.unwrap();
    }
}

async fn look_alikes(t: TestRegistry) {
    let env = Env::new(t).await;
    let paypal = {
        let body = registration_with(&env, &key(), "paypal-agent", |_| {});
        let (status, reply) = env.post("/v1/agents", Some(&env.t.admin), &body).await;
        assert_eq!(status, 201, "{reply}");
        reply["agent_id"].as_str().unwrap().to_owned()
    };
    let before = agent_count(&env).await;
    // A Cyrillic а, a fullwidth ｐ, a digit one for an l: each looks like paypal-agent.
    for look_alike in ["p\u{430}ypal-agent", "\u{FF50}aypal-agent", "paypa1-agent"] {
        let body = registration_with(&env, &key(), look_alike, |_| {});
        let reply = env.post("/v1/agents", Some(&env.t.admin), &body).await;
        refused(&reply, 409, "conflict", &["looks like", "\"paypal-agent\"", &paypal]);
    }
    assert_eq!(
        agent_count(&env).await,
        before,
        "a refused registration changes nothing"
    );
    // Names that do not look alike, and the same name again, are accepted as before.
    for name in ["paypal-agent", "payroll-agent", "PayPal-agent"] {
        let body = registration_with(&env, &key(), name, |_| {});
        let (status, reply) = env.post("/v1/agents", Some(&env.t.admin), &body).await;
        assert_eq!(status, 201, "{name}: {reply}");
    }

    env.user("alice@example.com", &["*"]).await;
    let create = |user_id: &str| json!({"user_id": user_id, "delegatable_tools": ["*"]});
    let reply = env
        .post("/v1/users", Some(&env.t.admin), &create("alic\u{435}@example.com"))
        .await;
    refused(
        &reply,
        409,
        "conflict",
        &["user_id", "\\u{0435}", "\"alice@example.com\""],
    );
    let (_, users) = env.get("/v1/users", Some(&env.t.admin)).await;
    assert_eq!(users["users"].as_array().unwrap().len(), 1, "{users}");

    // Rows from before the skeleton columns are filled in when the authority opens the
    // database, and are found again.
    forget_skeletons(&env).await;
    assert_eq!(env.t.store.backfill_name_skeletons().await.unwrap(), 4);
    let issuer_store = IssuerStore::new(env.t.store.database());
    assert_eq!(issuer_store.backfill_user_skeletons().await.unwrap(), 1);
    assert_eq!(env.t.store.backfill_name_skeletons().await.unwrap(), 0);
    let body = registration_with(&env, &key(), "p\u{430}ypal-agent", |_| {});
    let reply = env.post("/v1/agents", Some(&env.t.admin), &body).await;
    refused(&reply, 409, "conflict", &["\"paypal-agent\""]);
    let reply = env
        .post("/v1/users", Some(&env.t.admin), &create("alic\u{435}@example.com"))
        .await;
    refused(&reply, 409, "conflict", &["\"alice@example.com\""]);
}
with_registry!(look_alike_names_are_refused, look_alikes);

async fn attestation(t: TestRegistry) {
    let env = Env::new(t).await;
    let autonomous_key = key();
    let autonomous = env.agent(&autonomous_key, true).await;
    let attest = json!({"grant_type": "agent_attestation", "user_authorization": null});
    let (status, reply) = env.token(&autonomous_key, &autonomous, attest.clone()).await;
    assert_eq!(status, 200, "{reply}");
    let verified = env.verify(reply["aat"].as_str().unwrap()).await;
    assert!(verified.claims().user_binding.is_none());
    assert_eq!(verified.claims().capabilities.tools, ["read_file", "list_directory"]);

    // Only for agents registered as autonomous, and never with a user.
    let supervised_key = key();
    let supervised = env.agent(&supervised_key, false).await;
    let (status, reply) = env.token(&supervised_key, &supervised, attest).await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (401, Some("user_auth_failed")),
        "{reply}"
    );
    let alice = env.user("alice", &["*"]).await;
    let mut with_user = api_key(&alice);
    with_user["grant_type"] = "agent_attestation".into();
    let (status, reply) = env.token(&autonomous_key, &autonomous, with_user).await;
    assert_eq!((status, reply["error"].as_str()), (400, Some("invalid_request")));
}
with_registry!(agent_attestation_is_for_autonomous_agents, attestation);

/// An identity provider: an ES256 key whose JWKS is served over HTTP.
struct Idp {
    key: KeyPair,
    jwks_url: String,
}

impl Idp {
    async fn start() -> Self {
        let key = KeyPair::generate(Algorithm::ES256).unwrap();
        let mut jwk = serde_json::to_value(key.public_key().to_jwk()).unwrap();
        jwk["alg"] = "ES256".into();
        jwk["use"] = "sig".into();
        let jwks = json!({"keys": [jwk]});
        let router = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let jwks = jwks.clone();
                async move { axum::Json(jwks) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self {
            key,
            jwks_url: format!("http://{addr}/jwks"),
        }
    }

    fn id_token(&self, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.key.key_id().to_string());
        let encoding = jsonwebtoken::EncodingKey::from_ec_der(&self.key.to_pkcs8_der().unwrap());
        jsonwebtoken::encode(&header, claims, &encoding).unwrap()
    }

    fn provider(&self) -> OidcProvider {
        OidcProvider {
            issuer: "https://idp.example".into(),
            audience: "aip-authority".into(),
            jwks: JwksSource::Url(self.jwks_url.clone()),
            user_claim: UserClaim::Email,
            delegatable_tools: vec!["read_file".into()],
            id_jag: false,
            login: None,
        }
    }
}

async fn user_authorizations(t: TestRegistry) {
    let idp = Idp::start().await;
    let mut settings = settings();
    settings.oidc = vec![idp.provider()];
    settings.local_user_tools = Some(vec!["list_directory".into()]);
    let env = Env::with(t, settings).await;
    let agent_key = key();
    let agent = env.agent(&agent_key, false).await;

    // OpenID Connect: a real ID token signed by the identity provider's key.
    let id_token = idp.id_token(&json!({
        "iss": "https://idp.example", "aud": "aip-authority", "sub": "u-123",
        "email": "bob@example.com", "email_verified": true,
        "iat": NOW - 30, "exp": NOW + 300, "auth_time": NOW - 60,
    }));
    let oidc = json!({"user_authorization": {"type": "oidc_id_token", "token": id_token}});
    let (status, reply) = env.token(&agent_key, &agent, oidc).await;
    assert_eq!(status, 200, "{reply}");
    let verified = env.verify(reply["aat"].as_str().unwrap()).await;
    let binding = verified.claims().user_binding.clone().unwrap();
    assert_eq!(
        (
            binding.user_id.as_str(),
            binding.auth_method.as_str(),
            binding.auth_time
        ),
        ("bob@example.com", "oidc", NOW - 60)
    );
    assert_eq!(verified.claims().capabilities.tools, ["read_file"]);

    // Wrong audience, expired, another signer: refused.
    for claims in [
        json!({"iss": "https://idp.example", "aud": "someone-else", "sub": "u", "email": "b@x", "iat": NOW, "exp": NOW + 300}),
        json!({"iss": "https://idp.example", "aud": "aip-authority", "sub": "u", "email": "b@x", "iat": NOW - 900, "exp": NOW - 300}),
        json!({"iss": "https://evil.example", "aud": "aip-authority", "sub": "u", "email": "b@x", "iat": NOW, "exp": NOW + 300}),
    ] {
        let bad = json!({"user_authorization": {"type": "oidc_id_token", "token": idp.id_token(&claims)}});
        let (status, reply) = env.token(&agent_key, &agent, bad).await;
        assert_eq!(
            (status, reply["error"].as_str()),
            (401, Some("user_auth_failed")),
            "{reply}"
        );
    }

    // A loopback user, when enabled.
    let local = json!({"user_authorization": {"type": "local_user", "username": "dev", "uid": 501}});
    let (status, reply) = env.token(&agent_key, &agent, local).await;
    assert_eq!(status, 200, "{reply}");
    let verified = env.verify(reply["aat"].as_str().unwrap()).await;
    let binding = verified.claims().user_binding.clone().unwrap();
    assert_eq!(
        (binding.user_id.as_str(), binding.auth_method.as_str()),
        ("local:dev", "local")
    );
    assert_eq!(verified.claims().capabilities.tools, ["list_directory"]);

    // A wrong API key; OAuth access tokens are not accepted.
    let (status, reply) = env.token(&agent_key, &agent, api_key("aip_uk_nope")).await;
    assert_eq!((status, reply["error"].as_str()), (401, Some("user_auth_failed")));
    let oauth = json!({"user_authorization": {"type": "oauth2_token", "token": "ya29.x"}});
    let (status, reply) = env.token(&agent_key, &agent, oauth).await;
    assert_eq!((status, reply["error"].as_str()), (401, Some("user_auth_failed")));
    // The ID token, the API key and the refresh token never reach the audit log.
    let audit = env.t.store.database().audit_records(0, 1000).await.unwrap();
    let text = serde_json::to_string(&audit.iter().map(|r| &r.details).collect::<Vec<_>>()).unwrap();
    assert!(!text.contains(&id_token[..40]) && !text.contains("aip_uk_") && !text.contains("aip_rf_"));
}
with_registry!(user_authorization_methods, user_authorizations);

async fn local_user_disabled(t: TestRegistry) {
    let env = Env::new(t).await;
    let agent_key = key();
    let agent = env.agent(&agent_key, false).await;
    let local = json!({"user_authorization": {"type": "local_user", "username": "dev"}});
    let (status, reply) = env.token(&agent_key, &agent, local).await;
    assert_eq!((status, reply["error"].as_str()), (401, Some("user_auth_failed")));
    assert!(reply["error_description"].as_str().unwrap().contains("not enabled"));
}
with_registry!(local_user_is_off_by_default, local_user_disabled);

async fn errors(t: TestRegistry) {
    let env = Env::new(t).await;
    let agent_key = key();
    let agent = env.agent(&agent_key, false).await;
    let alice = env.user("alice", &["read_file"]).await;
    let expect = |(status, reply): (u16, Value), want: (u16, &str)| {
        assert_eq!((status, reply["error"].as_str().unwrap_or_default()), want, "{reply}");
        assert!(reply["error_description"].as_str().is_some_and(|d| !d.is_empty()));
    };

    // invalid_request: no audience, unknown member, a bad tool name, missing user.
    expect(
        env.token(&agent_key, &agent, json!({"audience": null})).await,
        (400, "invalid_request"),
    );
    expect(
        env.token(&agent_key, &agent, json!({"audience": ""})).await,
        (400, "invalid_request"),
    );
    expect(
        env.token(&agent_key, &agent, json!({"scope": "x"})).await,
        (400, "invalid_request"),
    );
    expect(
        env.token(&agent_key, &agent, tools(api_key(&alice), &["bad tool"]))
            .await,
        (400, "invalid_request"),
    );
    expect(env.token(&agent_key, &agent, json!({})).await, (400, "invalid_request"));

    // agent_not_found, for the challenge and the token.
    let stranger = AgentId::random().unwrap();
    let (status, reply) = env.post("/v1/challenge", None, &json!({"agent_id": stranger})).await;
    expect((status, reply), (404, "agent_not_found"));
    let mut body = env.request(&agent_key, &agent, api_key(&alice)).await;
    body["agent_id"] = json!(stranger);
    expect(env.post("/v1/token", None, &body).await, (404, "agent_not_found"));

    // invalid_proof: another key, a challenge for another agent, a stale one, a replay.
    let body = env.request(&key(), &agent, api_key(&alice)).await;
    expect(env.post("/v1/token", None, &body).await, (401, "invalid_proof"));
    let other_key = key();
    let other = env.agent(&other_key, false).await;
    let mut body = env.request(&agent_key, &agent, api_key(&alice)).await;
    let foreign = env.signed_challenge(&other_key, &other).await;
    let proof = ChallengeProof::create(&agent_key, foreign["challenge"].as_str().unwrap(), &agent, NOW).unwrap();
    body["proof"] = serde_json::to_value(proof).unwrap();
    expect(env.post("/v1/token", None, &body).await, (401, "invalid_proof"));
    let stale = env.request(&agent_key, &agent, api_key(&alice)).await;
    env.t.clock.advance(61);
    expect(env.post("/v1/token", None, &stale).await, (401, "invalid_proof"));
    let once = env.request(&agent_key, &agent, api_key(&alice)).await;
    assert_eq!(env.post("/v1/token", None, &once).await.0, 200);
    expect(env.post("/v1/token", None, &once).await, (401, "invalid_proof"));

    // capabilities_denied, with what was denied.
    let (status, reply) = env
        .token(&agent_key, &agent, tools(api_key(&alice), &["write_file"]))
        .await;
    assert_eq!(reply["error_details"]["denied_tools"], json!(["write_file"]));
    expect((status, reply), (403, "capabilities_denied"));

    // user_auth_failed: revoked user.
    let (status, _) = env
        .post("/v1/revoke", Some(&env.t.admin), &json!({"user_id": "alice"}))
        .await;
    assert_eq!(status, 200);
    expect(
        env.token(&agent_key, &agent, api_key(&alice)).await,
        (401, "user_auth_failed"),
    );

    // agent_suspended, agent_revoked (after a valid proof).
    let bob = env.user("bob", &["*"]).await;
    let (status, _) = env
        .post(&format!("/v1/agents/{agent}/suspend"), Some(&env.t.admin), &json!({}))
        .await;
    assert_eq!(status, 200);
    expect(
        env.token(&agent_key, &agent, api_key(&bob)).await,
        (403, "agent_suspended"),
    );
    let (status, _) = env
        .post(&format!("/v1/agents/{agent}/revoke"), Some(&env.t.admin), &json!({}))
        .await;
    assert_eq!(status, 200);
    expect(
        env.token(&agent_key, &agent, api_key(&bob)).await,
        (403, "agent_revoked"),
    );
    let audit = env.t.store.database().audit_records(0, 1000).await.unwrap();
    let denials: Vec<_> = audit
        .iter()
        .filter(|r| r.action == "token.deny")
        .map(|r| r.details["error"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        denials,
        [
            "capabilities_denied",
            "user_auth_failed",
            "agent_suspended",
            "agent_revoked"
        ]
    );

    // issuer_error: the database is gone.
    let body = env.request(&other_key, &other, api_key(&bob)).await;
    env.t.store.database().close().await;
    expect(env.post("/v1/token", None, &body).await, (500, "issuer_error"));
}
with_registry!(every_token_error, errors);

async fn replicas(t: TestRegistry) {
    // Two issuers over one database: a challenge from one is good at the other, once.
    let env = Env::new(t).await;
    let second = start_issuer(&env.t, settings()).await;
    let agent_key = key();
    let agent = env.agent(&agent_key, false).await;
    let alice = env.user("alice", &["*"]).await;
    let body = env.request(&agent_key, &agent, api_key(&alice)).await;
    let (status, reply) = post(&env.http, &second, "/v1/token", None, &body).await;
    assert_eq!(status, 200, "{reply}");
    let (status, reply) = env.post("/v1/token", None, &body).await;
    assert_eq!((status, reply["error"].as_str()), (401, Some("invalid_proof")));
    let (status, reply) = post(&env.http, &second, "/v1/token", None, &body).await;
    assert_eq!((status, reply["error"].as_str()), (401, Some("invalid_proof")));
    // Concurrent replays of one fresh request: exactly one succeeds.
    let body = env.request(&agent_key, &agent, api_key(&alice)).await;
    let attempts = (0..8).map(|i| {
        let (http, url, body) = (
            env.http.clone(),
            if i % 2 == 0 { env.url.clone() } else { second.clone() },
            body.clone(),
        );
        tokio::spawn(async move { post(&http, &url, "/v1/token", None, &body).await.0 })
    });
    let mut statuses = Vec::new();
    for attempt in attempts {
        statuses.push(attempt.await.unwrap());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 401, 401, 401, 401, 401, 401, 401]);
}
with_registry!(challenges_are_single_use_across_replicas, replicas);

async fn revocation(t: TestRegistry) {
    let env = Env::new(t).await;
    let agent_key = key();
    let agent = env.agent(&agent_key, false).await;
    let other_key = key();
    let other = env.agent(&other_key, false).await;
    let alice = env.user("alice", &["*"]).await;
    let bob = env.user("bob", &["*"]).await;
    let mut alice_tokens = Vec::new();
    for (k, a) in [(&agent_key, &agent), (&other_key, &other), (&agent_key, &agent)] {
        let (status, reply) = env.token(k, a, api_key(&alice)).await;
        assert_eq!(status, 200);
        alice_tokens.push(env.verify(reply["aat"].as_str().unwrap()).await);
    }
    let (_, bob_reply) = env.token(&agent_key, &agent, api_key(&bob)).await;
    let bob_token = env.verify(bob_reply["aat"].as_str().unwrap()).await;
    let version = env.revocations().await.version;

    // Non-admins may not revoke; exactly one target.
    let reader = env.t.reader_token().await;
    let (status, _) = env
        .post("/v1/revoke", Some(&reader), &json!({"user_id": "alice"}))
        .await;
    assert_eq!(status, 403);
    let (status, _) = env.post("/v1/revoke", None, &json!({"user_id": "alice"})).await;
    assert_eq!(status, 401);
    let (status, _) = env
        .post(
            "/v1/revoke",
            Some(&env.t.admin),
            &json!({"user_id": "alice", "jti": "x"}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(env.revocations().await.version, version);

    // Revoking the user lists every live AAT of hers, her sessions and herself, in one version.
    let (status, reply) = env
        .post(
            "/v1/revoke",
            Some(&env.t.admin),
            &json!({"user_id": "alice", "reason": "left"}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        (reply["tokens"].as_u64(), reply["sessions"].as_u64()),
        (Some(3), Some(3))
    );
    let list = env.revocations().await;
    assert_eq!(list.version, version + 1);
    assert_eq!(reply["revocation_version"].as_u64(), Some(list.version));
    assert!(list.revoked_users.iter().any(|u| u.user_id == "alice"));
    let index = RevocationIndex::from(&list);
    for token in &alice_tokens {
        assert!(list.revoked_aats.iter().any(|r| r.jti == token.claims().jti));
        assert!(
            list.revoked_sessions
                .iter()
                .any(|s| s.session_id == token.claims().context.session_id)
        );
        assert!(revoked(&index, token.claims()));
    }
    assert!(!revoked(&index, bob_token.claims()));
    // The signed list says the same at once, and the event stream announces it.
    let jws = env
        .http
        .get(format!("{}/v1/revocations.jws", env.url))
        .bearer_auth(&env.t.admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let signed = SignedRevocationList::verify(&jws, &env.jwks().await).unwrap().list;
    assert_eq!(signed.version, list.version);
    assert!(signed.revoked_users.iter().any(|u| u.user_id == "alice"));
    assert!(
        alice_tokens
            .iter()
            .all(|t| signed.revoked_aats.iter().any(|r| r.jti == t.claims().jti))
    );
    let mut stream = env
        .http
        .get(format!("{}/v1/revocations/stream", env.url))
        .bearer_auth(&env.t.admin)
        .header("last-event-id", version.to_string())
        .send()
        .await
        .unwrap();
    let mut seen = String::new();
    while !seen.contains("\n\n") {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(5), stream.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        seen.contains("event: user_revoked") && seen.contains(&format!("id: {}", version + 1)),
        "{seen}"
    );
    assert!(seen.contains(alice_tokens[0].claims().jti.as_str()), "{seen}");
    let audit = env.t.store.database().audit_records(0, 1000).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|r| r.action == "user.revoke" && r.subject == "user:alice")
    );
    assert!(
        audit
            .iter()
            .any(|r| r.action == "revocation.publish" && r.subject == "user:alice")
    );

    // One token by jti; a session; an agent (with its live tokens).
    let (status, reply) = env
        .post(
            "/v1/revoke",
            Some(&env.t.admin),
            &json!({"jti": bob_token.claims().jti}),
        )
        .await;
    assert_eq!((status, reply["tokens"].as_u64()), (200, Some(1)));
    let (status, _) = env
        .post("/v1/revoke", Some(&env.t.admin), &json!({"jti": "no-such-jti"}))
        .await;
    assert_eq!(status, 404);
    let (_, carol_reply) = env.token(&other_key, &other, api_key(&bob)).await;
    let carol = env.verify(carol_reply["aat"].as_str().unwrap()).await;
    let (status, reply) = env
        .post(
            "/v1/revoke",
            Some(&env.t.admin),
            &json!({"session_id": carol.claims().context.session_id}),
        )
        .await;
    assert_eq!((status, reply["tokens"].as_u64()), (200, Some(1)));
    let (status, reply) = env
        .token(
            &other_key,
            &other,
            json!({"grant_type": "aat_refresh", "refresh_token": carol_reply["refresh_token"]}),
        )
        .await;
    assert_eq!((status, reply["error"].as_str()), (400, Some("invalid_grant")));
    let (_, dave_reply) = env.token(&agent_key, &agent, api_key(&bob)).await;
    let dave = env.verify(dave_reply["aat"].as_str().unwrap()).await;
    let (status, reply) = env
        .post("/v1/revoke", Some(&env.t.admin), &json!({"agent_id": agent}))
        .await;
    assert_eq!(status, 200, "{reply}");
    let list = env.revocations().await;
    assert!(list.revoked_agents.iter().any(|a| a.agent_id == agent));
    assert!(list.revoked_aats.iter().any(|r| r.jti == dave.claims().jti));
    // The stream announced each revocation.
    let events = env.t.registry.events_after(version, 100).await.unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "user_revoked",
            "aat_revoked",
            "session_revoked",
            "agent_revoked",
            "session_revoked"
        ]
    );
    assert_eq!(events[0].subject, "user:alice");
}
with_registry!(revoking_users_sessions_tokens_and_agents, revocation);

async fn users_admin(t: TestRegistry) {
    let env = Env::new(t).await;
    let (status, reply) = env
        .post(
            "/v1/users",
            Some(&env.t.admin),
            &json!({"user_id": "alice", "delegatable_tools": []}),
        )
        .await;
    assert_eq!((status, reply["error"].as_str()), (400, Some("invalid_request")));
    env.user("alice", &["read_file"]).await;
    let (status, _) = env
        .post(
            "/v1/users",
            Some(&env.t.admin),
            &json!({"user_id": "alice", "delegatable_tools": ["x"]}),
        )
        .await;
    assert_eq!(status, 409);
    let reader = env.t.reader_token().await;
    let (status, _) = env
        .post(
            "/v1/users",
            Some(&reader),
            &json!({"user_id": "bob", "delegatable_tools": ["x"]}),
        )
        .await;
    assert_eq!(status, 403);
    let (status, list) = env.get("/v1/users", Some(&env.t.admin)).await;
    assert_eq!(status, 200);
    assert_eq!(list["users"][0]["user_id"], "alice");
    assert!(list["users"][0].get("api_key").is_none());
    // The user's API key is stored as a digest only.
    let audit = env.t.store.database().audit_records(0, 1000).await.unwrap();
    assert!(audit.iter().any(|r| r.action == "user.create" && r.subject == "alice"));
}
with_registry!(user_administration, users_admin);

async fn jwks_and_discovery(t: TestRegistry) {
    let env = Env::new(t).await;
    let (_, discovery) = env.get("/.well-known/aip-configuration", None).await;
    assert_eq!(discovery["token_endpoint"], "http://registry.test/v1/token");
    assert_eq!(discovery["issuer"], "http://registry.test");
    let store = IssuerStore::new(env.t.store.database());
    let current = store.keys().await.unwrap()[0].kid.clone();
    assert!(env.jwks().await.get(&current.parse().unwrap()).is_some());
    // A new key is published at once (after a refresh), the old one while its tokens live.
    let agent_key = key();
    let agent = env.agent(&agent_key, true).await;
    let (_, reply) = env
        .token(
            &agent_key,
            &agent,
            json!({"grant_type": "agent_attestation", "user_authorization": null}),
        )
        .await;
    let aat = reply["aat"].as_str().unwrap().to_owned();
    let new_kid = aip_issuer::keys::add_key(&store, Algorithm::ES256, Protection::InsecureNone, "test", NOW + 1)
        .await
        .unwrap();
    let keys = store.keys().await.unwrap();
    let published = aip_issuer::keys::publishable(&keys, NOW + 1);
    assert!(published.iter().any(|k| k.thumbprint().as_str() == new_kid));
    assert!(published.iter().any(|k| k.thumbprint().as_str() == current));
    assert!(env.verify(&aat).await.claims().exp > NOW);
    // Once every token of the old key has expired (recorded with up to a minute of slack,
    // plus the skew margin), it is withdrawn.
    let later = NOW + 900 + 60 + aip_issuer::keys::PUBLISH_MARGIN + 1;
    let published = aip_issuer::keys::publishable(&keys, later);
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].thumbprint().as_str(), new_kid);
}
with_registry!(signing_keys_are_published, jwks_and_discovery);

async fn remote_registry(t: TestRegistry) {
    // The registry alone on one port; the issuer, with its own database, on another, reaching
    // the registry over HTTP.
    let registry_url = serve(aip_registry::http::router(t.registry.clone())).await;
    let own_db = common::TestDb::new(common::Backend::Sqlite).await.unwrap();
    let own = own_db.store().await;
    let store = IssuerStore::new(own.database());
    ensure_key(&store, Algorithm::EdDSA, Protection::InsecureNone, NOW)
        .await
        .unwrap();
    let keys = Arc::new(SigningKeys::load(&store, None, NOW).await.unwrap());
    let directory = Arc::new(RemoteDirectory::new(&registry_url, &t.admin, None).unwrap());
    let issuer = Issuer::new(settings(), directory, store, keys.clone(), t.clock.clone())
        .await
        .unwrap();
    let issuer_url = serve(aip_issuer::http::router(Arc::new(issuer))).await;
    let http = reqwest::Client::new();
    let agent_key = key();
    let (status, registered) = post(
        &http,
        &registry_url,
        "/v1/agents",
        Some(&t.admin),
        &t.registration(&agent_key, "remote"),
    )
    .await;
    assert_eq!(status, 201, "{registered}");
    let agent: AgentId = registered["agent_id"].as_str().unwrap().parse().unwrap();

    // Admin calls are authenticated by the registry; a reader token is not enough.
    let reader = t.reader_token().await;
    let user = json!({"user_id": "alice", "delegatable_tools": ["read_file"]});
    assert_eq!(post(&http, &issuer_url, "/v1/users", Some(&reader), &user).await.0, 403);
    assert_eq!(
        post(&http, &issuer_url, "/v1/users", Some("aip_at_bogus"), &user)
            .await
            .0,
        401
    );
    let (status, created) = post(&http, &issuer_url, "/v1/users", Some(&t.admin), &user).await;
    assert_eq!(status, 201, "{created}");

    let (_, challenge) = post(&http, &issuer_url, "/v1/challenge", None, &json!({"agent_id": agent})).await;
    let proof = ChallengeProof::create(&agent_key, challenge["challenge"].as_str().unwrap(), &agent, NOW).unwrap();
    let request = json!({
        "grant_type": "agent_authentication", "agent_id": agent, "proof": proof, "audience": AUDIENCE,
        "user_authorization": {"type": "api_key", "token": created["api_key"]},
    });
    let (status, reply) = post(&http, &issuer_url, "/v1/token", None, &request).await;
    assert_eq!(status, 200, "{reply}");
    let aat = UnverifiedAat::parse(reply["aat"].as_str().unwrap())
        .unwrap()
        .verify(
            &JwkSet::from_keys(keys.published_keys().iter()),
            &*t.clock,
            &Validation::new(AUDIENCE),
        )
        .unwrap();
    assert_eq!(aat.claims().capabilities.tools, ["read_file"]);

    // Revoking the user at the issuer publishes through the registry.
    let (status, reply) = post(
        &http,
        &issuer_url,
        "/v1/revoke",
        Some(&t.admin),
        &json!({"user_id": "alice"}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let list = t.store.revocation_list(NOW).await.unwrap();
    assert!(list.revoked_users.iter().any(|u| u.user_id == "alice"));
    assert!(list.revoked_aats.iter().any(|r| r.jti == aat.claims().jti));
    // Unknown agents are unknown to the remote issuer too.
    let (status, _) = post(
        &http,
        &issuer_url,
        "/v1/challenge",
        None,
        &json!({"agent_id": AgentId::random().unwrap()}),
    )
    .await;
    assert_eq!(status, 404);
}
with_registry!(issuer_against_a_remote_registry, remote_registry);

/// Issuance number `n` of a ledger test, for `user` (none: an autonomous agent) answering
/// `challenge`.
fn batch_issuance(n: usize, jti: &str, user: Option<&str>, challenge: &str) -> Issuance {
    let agent: AgentId = "ag_550e8400-e29b-41d4-a716-446655440000".parse().unwrap();
    let session_id = format!("ses_batch_{n}");
    Issuance {
        single_use: vec![
            aip_issuer::challenge::OpenedChallenge {
                id: challenge.to_owned(),
                expires_at: NOW + 60,
            }
            .into(),
        ],
        token: IssuedToken {
            jti: jti.to_owned(),
            agent_id: agent.clone(),
            user_id: user.map(str::to_owned),
            session_id: session_id.clone(),
            kid: "kid".into(),
            issued_at: NOW,
            expires_at: NOW + 300,
        },
        session: SessionChange::New {
            session: SessionRecord {
                session_id,
                agent_id: agent.clone(),
                user_id: user.map(str::to_owned),
                auth_method: user.map(|_| "api_key".to_owned()),
                auth_time: user.map(|_| NOW),
                delegation_scope: user.map(|_| "full".to_owned()),
                audience: AUDIENCE.into(),
                capabilities: r#"{"tools":["read_file"]}"#.into(),
                created_at: NOW,
                expires_at: NOW + 3_600,
                revoked_at: None,
            },
            refresh_digest: Some(format!("refresh-{n}")),
        },
        audit: aip_db::audit::AuditEntry {
            actor: format!("agent:{agent}"),
            action: "token.issue",
            subject: format!("jti-{n}"),
            details: json!({"n": n}),
        },
    }
}

/// The group commit on its own: a batch in which one issuance fails a constraint (a `jti`
/// given twice) commits nothing of that issuance, and every other one still commits. On SQLite
/// the batch's inserts are `INSERT OR FAIL`, which keeps the rows a failed statement had
/// already written; this shows the transaction around them is never committed.
async fn failed_issuance(t: TestRegistry) {
    let store = IssuerStore::new(t.store.database());
    let ledger = Ledger::start(store.clone(), None);
    let issuance = |n: usize, jti: &str| batch_issuance(n, jti, None, &format!("challenge-{n}"));
    let (_, audited_before) = t.store.database().audit_head().await.unwrap();
    let before = t.store.database().audit_records(0, 10_000).await.unwrap().len();
    // Sent together so that they are committed together (or, after the batch fails, one by one).
    let mut outcomes = tokio::task::JoinSet::new();
    for n in 0..8 {
        let ledger = ledger.clone();
        let jti = if n == 3 || n == 6 {
            "jti-twice".to_owned()
        } else {
            format!("jti-{n}")
        };
        let issuance = issuance(n, &jti);
        outcomes.spawn(async move { (n, ledger.issue(issuance).await) });
    }
    let mut failed = Vec::new();
    while let Some(joined) = outcomes.join_next().await {
        let (n, outcome) = joined.unwrap();
        match outcome {
            Ok(()) => {}
            Err(LedgerError::Store(DbError::Backend(_))) => failed.push(n),
            Err(e) => panic!("issuance {n}: {e}"),
        }
    }
    assert_eq!(failed.len(), 1, "exactly one of the two issuances sharing a jti fails");
    let failed = failed[0];
    assert!(failed == 3 || failed == 6);
    for n in 0..8 {
        let session = store.session(&format!("ses_batch_{n}")).await.unwrap();
        let refresh = store.refresh_token(&format!("refresh-{n}")).await.unwrap();
        assert_eq!(session.is_some(), n != failed, "session of issuance {n}");
        assert_eq!(refresh.is_some(), n != failed, "refresh token of issuance {n}");
    }
    // The failed issuance's challenge is still unused: answering it again is not a replay.
    let again = ledger.issue(issuance(failed, "jti-retried")).await;
    assert!(again.is_ok(), "{again:?}");
    assert_eq!(store.token_expiry("jti-retried").await.unwrap(), Some(NOW + 300));
    // One audit record per committed issuance, and the chain holds.
    let records = t.store.database().audit_records(0, 10_000).await.unwrap();
    assert_eq!(records.len(), before + 8);
    assert_ne!(records.last().unwrap().hash, audited_before);
    let mut chain = aip_db::audit::AuditChain::default();
    for record in &records {
        chain.push(record).unwrap();
    }
    let (seq, head) = t.store.database().audit_head().await.unwrap();
    assert_eq!(chain.finish(seq, &head).unwrap(), i64::try_from(records.len()).unwrap());
}
with_registry!(a_failed_issuance_writes_nothing, failed_issuance);

/// The group commit's own checks, which hold even where the issuer's caches are stale (a user
/// revoked through another replica): a revoked user's issuance is refused and does not use up
/// its challenge, and a challenge presented twice goes to one issuance only.
async fn batch_refusals(t: TestRegistry) {
    let store = IssuerStore::new(t.store.database());
    let revocation = aip_db::audit::AuditEntry {
        actor: "admin:test".into(),
        action: "user.revoke",
        subject: "mallory".into(),
        details: json!({}),
    };
    store.revoke_user("mallory", None, NOW, &revocation).await.unwrap();
    let ledger = Ledger::start(store.clone(), None);
    let batch = [
        batch_issuance(0, "jti-0", Some("mallory"), "c-shared-with-alice"),
        batch_issuance(1, "jti-1", Some("alice"), "c-twice"),
        batch_issuance(2, "jti-2", None, "c-twice"),
        batch_issuance(3, "jti-3", Some("alice"), "c-shared-with-alice"),
    ];
    let mut outcomes = tokio::task::JoinSet::new();
    for (n, issuance) in batch.into_iter().enumerate() {
        let ledger = ledger.clone();
        outcomes.spawn(async move { (n, ledger.issue(issuance).await) });
    }
    let mut results = std::collections::BTreeMap::new();
    while let Some(joined) = outcomes.join_next().await {
        let (n, outcome) = joined.unwrap();
        results.insert(n, outcome);
    }
    assert!(
        matches!(results[&0], Err(LedgerError::Refused(Refusal::UserRevoked))),
        "{:?}",
        results[&0]
    );
    // The revoked user's challenge was not used up: alice's issuance answering it commits.
    assert!(results[&3].is_ok(), "{:?}", results[&3]);
    let twice: Vec<_> = [1, 2].iter().map(|n| &results[n]).collect();
    assert_eq!(
        twice.iter().filter(|r| r.is_ok()).count(),
        1,
        "one of the issuances sharing a challenge commits: {twice:?}"
    );
    assert!(
        twice
            .iter()
            .any(|r| matches!(r, Err(LedgerError::Refused(Refusal::Replayed(OnceKind::Challenge))))),
        "{twice:?}"
    );
    // A refused issuance wrote nothing.
    assert_eq!(store.token_expiry("jti-0").await.unwrap(), None);
    assert!(store.session("ses_batch_0").await.unwrap().is_none());
    for (n, outcome) in &results {
        assert_eq!(
            store.token_expiry(&format!("jti-{n}")).await.unwrap().is_some(),
            outcome.is_ok(),
            "issuance {n}"
        );
    }
    // That challenge is used up now, by alice's issuance.
    let again = ledger
        .issue(batch_issuance(4, "jti-4", Some("alice"), "c-shared-with-alice"))
        .await;
    assert!(
        matches!(again, Err(LedgerError::Refused(Refusal::Replayed(OnceKind::Challenge)))),
        "{again:?}"
    );
}
with_registry!(a_batch_refuses_revoked_users_and_replayed_challenges, batch_refusals);
