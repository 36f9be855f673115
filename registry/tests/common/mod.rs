//! Test databases: a fresh SQLite file, or a fresh PostgreSQL database on the server named by
//! `AIP_TEST_POSTGRES_URL` (created per test, dropped afterwards). Without that variable,
//! PostgreSQL tests report themselves skipped — except under `CI`, where they fail.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::sync::Arc;

use aip_db::Database;
use aip_registry::store::SqlStore;

/// The environment variable naming the PostgreSQL server for tests.
pub(crate) const POSTGRES_ENV: &str = "AIP_TEST_POSTGRES_URL";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// A database that exists for one test.
pub(crate) struct TestDb {
    pub(crate) url: String,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
}

impl TestDb {
    /// A fresh database, or `None` (after printing why) when PostgreSQL is not configured.
    pub(crate) async fn new(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = Database::sqlite_url(&dir.path().join("aip.db"));
                Some(Self {
                    url,
                    _dir: Some(dir),
                    postgres: None,
                })
            }
            Backend::Postgres => {
                let Ok(admin_url) = std::env::var(POSTGRES_ENV) else {
                    assert!(std::env::var_os("CI").is_none(), "{POSTGRES_ENV} must be set under CI");
                    eprintln!("SKIPPED: {POSTGRES_ENV} is not set; PostgreSQL tests did not run");
                    return None;
                };
                let name = format!(
                    "aip_test_{}",
                    aip_aat::ids::Jti::random().unwrap().as_str().replace('-', "")
                );
                let admin = admin_connection(&admin_url).await;
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&admin)
                    .await
                    .unwrap();
                admin.close().await;
                let url = with_database(&admin_url, &name);
                Some(Self {
                    url,
                    _dir: None,
                    postgres: Some((admin_url, name)),
                })
            }
        }
    }

    pub(crate) async fn store(&self) -> Arc<SqlStore> {
        Arc::new(SqlStore::connect(&self.url).await.unwrap())
    }
}

async fn admin_connection(url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap()
}

/// `url` with its database path replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin_url, name)) = self.postgres.take() {
            // Drop the database from a separate runtime: Drop cannot await.
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                    return;
                };
                rt.block_on(async {
                    let admin = admin_connection(&admin_url).await;
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&admin)
                    .await;
                    admin.close().await;
                });
            })
            .join();
        }
    }
}

/// Runs an async test body against both backends: `both_backends!(name, body_fn)` defines
/// `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:path) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                if let Some(db) = common::TestDb::new(common::Backend::Sqlite).await {
                    $body(&db).await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(db) = common::TestDb::new(common::Backend::Postgres).await {
                    $body(&db).await;
                }
            }
        }
    };
}

use aip_aat::clock::{Clock as _, FixedClock};
use aip_aat::keys::{Algorithm, KeyPair, Signer};
use aip_aat::request_proof::add_request_proof;
use aip_api::registry::Role;
use aip_registry::ca::{CertificateAuthority, create_ca_certificates};
use aip_registry::config::{AgentSettings, CertificateSettings, RegistryConfig, RegistrySettings};
use aip_registry::service::Registry;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt as _;

/// 2026-02-02T02:40:00Z.
pub(crate) const NOW: i64 = 1_770_000_000;

/// An initialized authority over a test database, served in-process.
pub(crate) struct TestRegistry {
    pub(crate) registry: Arc<Registry>,
    pub(crate) store: Arc<SqlStore>,
    pub(crate) router: axum::Router,
    pub(crate) admin: String,
    pub(crate) clock: Arc<FixedClock>,
    pub(crate) dir: tempfile::TempDir,
    _db: Option<TestDb>,
}

/// A response, read whole.
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub(crate) fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl TestRegistry {
    /// A registry as `aip-ca init` makes one (a new CA, registry key and admin token, default
    /// settings, public URL `http://registry.test`), over `db`, served in-process.
    pub(crate) async fn new(db: TestDb) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(FixedClock::new(NOW));
        let (certificates, agents) = (CertificateSettings::default(), AgentSettings::default());
        let settings = RegistrySettings::from_config(RegistryConfig {
            trust_domain: "aip.test",
            registry_id: "http://registry.test",
            public_url: "http://registry.test",
            certificates: &certificates,
            agents: &agents,
        })
        .unwrap();
        let issuing = Arc::new(key());
        let ca_certificates = create_ca_certificates("aip.test", Arc::new(key()), issuing.clone(), NOW).unwrap();
        let ca = CertificateAuthority::new("aip.test", issuing, ca_certificates).unwrap();
        let store = db.store().await;
        let registry = Arc::new(Registry::new(
            store.clone(),
            ca,
            Arc::new(key()),
            settings,
            clock.clone(),
        ));
        let (admin, _) = registry
            .issue_access_token(Role::Admin, Some("initial admin".into()), None, "system:init".into())
            .await
            .unwrap();
        let router = aip_registry::http::router(registry.clone());
        Self {
            registry,
            store,
            router,
            admin: admin.expose().to_owned(),
            clock,
            dir,
            _db: Some(db),
        }
    }

    pub(crate) async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<&Value>) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => request
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
            None => request.body(Body::empty()).unwrap(),
        };
        self.send(request).await
    }

    pub(crate) async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        Reply { status, headers, body }
    }

    /// The body of a registration request for `key`, with a valid proof.
    pub(crate) fn registration(&self, key: &KeyPair, name: &str) -> Value {
        let mut body = json!({"name": name, "public_key": key.public_key().to_jwk(), "capabilities": ["read_file", "list_directory"]});
        sign_body(key, &mut body, "/v1/agents", self.clock.now());
        body
    }

    /// A new reader access token.
    pub(crate) async fn reader_token(&self) -> String {
        let reply = self
            .call(
                Method::POST,
                "/v1/access-tokens",
                Some(&self.admin),
                Some(&json!({"role": "reader"})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
        reply.json()["token"].as_str().unwrap().to_owned()
    }

    /// Registers an agent with the admin token; returns the response JSON.
    pub(crate) async fn register(&self, key: &KeyPair, name: &str) -> Value {
        let body = self.registration(key, name);
        let reply = self
            .call(Method::POST, "/v1/agents", Some(&self.admin), Some(&body))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        reply.json()
    }
}

/// Adds `proof` (by `key`, over the body without it) to `body`.
pub(crate) fn sign_body(key: &dyn Signer, body: &mut Value, path: &str, now: i64) {
    add_request_proof(key, "POST", path, body, "proof", &["proof"], now).unwrap();
}

/// A rotate-key body for `new`: `new_key_proof` by `new_key_signer` over the body without both
/// proofs, `proof` by `current` over the body without `proof`. (Pass `new` twice for a valid
/// rotation; other signers make invalid ones.)
pub(crate) fn rotation(
    current: &dyn Signer,
    new_key_signer: &dyn Signer,
    new: &KeyPair,
    path: &str,
    now: i64,
) -> Value {
    let mut body = json!({"new_public_key": new.public_key().to_jwk()});
    add_request_proof(
        new_key_signer,
        "POST",
        path,
        &mut body,
        "new_key_proof",
        &["proof", "new_key_proof"],
        now,
    )
    .unwrap();
    sign_body(current, &mut body, path, now);
    body
}

/// A fresh Ed25519 key.
pub(crate) fn key() -> KeyPair {
    KeyPair::generate(Algorithm::EdDSA).unwrap()
}

/// A Unix time as RFC 3339 text.
pub(crate) fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// `both_backends!`, for tests that take a [`TestRegistry`].
#[macro_export]
macro_rules! with_registry {
    ($name:ident, $body:path) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                if let Some(db) = common::TestDb::new(common::Backend::Sqlite).await {
                    $body(common::TestRegistry::new(db).await).await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(db) = common::TestDb::new(common::Backend::Postgres).await {
                    $body(common::TestRegistry::new(db).await).await;
                }
            }
        }
    };
}
