//! `GET /ready`: whether this replica should be sent traffic. `/health` answers whether the
//! process is up; `/ready` answers 200 only when
//!
//! - **database**: the database answers a real query (the migration table, read on the
//!   readers' pool within [`CHECK_TIMEOUT`]) and, on SQLite, the file opened is still the one
//!   at its path;
//! - **migrations**: every migration this build embeds is recorded as applied, unchanged;
//! - **keys**: the token issuer's signing key is loaded and published in `GET /v1/jwks`
//!   beside the registry's key, so verifiers can check what this replica signs.
//!
//! Otherwise 503, with a body naming each check that failed and why, in fixed words: never a
//! URL, a path or a database message (those go to the log). docs/registry.md, "Readiness".

use std::sync::Arc;
use std::time::Duration;

use aip_db::{Database, DbError};
use aip_http::routes::Routes;
use aip_issuer::service::Issuer;
use aip_registry::service::Registry;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// How long the database checks may take before the replica is reported not ready: a probe
/// should wait longer than this.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// What `/ready` looks at.
#[derive(Clone, Debug)]
pub struct Readiness {
    database: Database,
    registry: Arc<Registry>,
    issuer: Arc<Issuer>,
}

/// The outcome of one check: `Ok`, or why not, in words safe to send.
type Check = Result<(), String>;

impl Readiness {
    /// Readiness over an opened authority's parts.
    pub fn new(database: Database, registry: Arc<Registry>, issuer: Arc<Issuer>) -> Self {
        Self {
            database,
            registry,
            issuer,
        }
    }

    /// The `/ready` route.
    pub fn routes(self) -> Routes {
        own_routes().with_state(self)
    }

    /// Runs every check: (database, migrations, keys).
    pub async fn check(&self) -> (Check, Check, Check) {
        let (database, migrations) =
            match tokio::time::timeout(CHECK_TIMEOUT, self.database.unapplied_migrations()).await {
                Err(_) => (
                    Err(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
                    Err("not checked: the database did not answer".to_owned()),
                ),
                Ok(Err(e)) => {
                    tracing::warn!(error = ?e, "readiness: the database cannot be queried");
                    let why = match e {
                        DbError::Unavailable(why) => why.to_owned(),
                        _ => "cannot be queried".to_owned(),
                    };
                    (Err(why), Err("not checked: the database cannot be queried".to_owned()))
                }
                Ok(Ok(missing)) if missing.is_empty() => (Ok(()), Ok(())),
                Ok(Ok(missing)) => {
                    let versions: Vec<String> = missing.iter().map(i64::to_string).collect();
                    (Ok(()), Err(format!("not applied: {}", versions.join(", "))))
                }
            };
        (database, migrations, self.keys())
    }

    /// Whether the issuer's signing key is published in the registry's JWKS.
    fn keys(&self) -> Check {
        let kid = self.issuer.keys().signer().key_id().to_string();
        let published = self
            .registry
            .jwks()
            .keys
            .iter()
            .any(|jwk| jwk.kid.as_deref() == Some(kid.as_str()));
        if published {
            Ok(())
        } else {
            Err("the token signing key is not published in the JWKS".to_owned())
        }
    }
}

/// The `/ready` route, before its state is given.
pub(crate) fn own_routes() -> Routes<Readiness> {
    Routes::new().get("/ready", ready)
}

/// `GET /ready`: `{"status": "ready"|"not_ready", "checks": {name: "ok"|why}, "not_ready":
/// [names]}` (the last only on 503).
#[utoipa::path(
    get,
    path = "/ready",
    tag = "service",
    summary = "Readiness",
    description = "Whether this replica should be sent traffic: the database answers, every migration is applied, and the issuer's signing key is loaded and published. Never cached.",
    responses(
        (status = 200, description = "Ready.", body = Object, example = json!({"status": "ready", "checks": {"database": "ok", "migrations": "ok", "keys": "ok"}})),
        (status = 503, description = "Not ready: the checks that failed, and why in fixed words.", body = Object, example = json!({"status": "not_ready", "not_ready": ["database"], "checks": {"database": "no answer within 3 s", "migrations": "not checked: the database did not answer", "keys": "ok"}})),
    )
)]
pub(crate) async fn ready(State(readiness): State<Readiness>) -> Response {
    let (database, migrations, keys) = readiness.check().await;
    let mut checks = Map::new();
    let mut failed = Vec::new();
    for (name, check) in [("database", database), ("migrations", migrations), ("keys", keys)] {
        match check {
            Ok(()) => {
                checks.insert(name.into(), json!("ok"));
            }
            Err(why) => {
                checks.insert(name.into(), Value::String(why));
                failed.push(name);
            }
        }
    }
    let (status, body) = if failed.is_empty() {
        (StatusCode::OK, json!({"status": "ready", "checks": checks}))
    } else {
        tracing::warn!(not_ready = ?failed, "readiness check failed");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "not_ready", "not_ready": failed, "checks": checks}),
        )
    };
    (status, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}
