//! Helpers shared by the benchmarks (included with `#[path]`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aip_aat::clock::SystemClock;
use aip_aat::keyfile::Protection;
use aip_aat::keys::Algorithm;
use aip_registry::authority::{self, InitOptions, Initialized, Opened, Overrides};

pub(crate) fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// A fresh PostgreSQL database on the server named by `AIP_TEST_POSTGRES_URL`:
/// `(admin URL, database name, database URL)`.
pub(crate) async fn create_postgres_database() -> (String, String, String) {
    let admin_url = std::env::var("AIP_TEST_POSTGRES_URL").expect("AIP_TEST_POSTGRES_URL for the postgres backend");
    let name = format!("aip_bench_{}", std::process::id());
    sqlx::any::install_default_drivers();
    let admin = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&admin_url)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}")))
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let base = admin_url.rsplit_once('/').unwrap().0.to_owned();
    (admin_url, name.clone(), format!("{base}/{name}"))
}

/// Drops a database made by [`create_postgres_database`].
pub(crate) async fn drop_postgres_database(admin_url: &str, name: &str) {
    let admin = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(admin_url)
        .await
        .unwrap();
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&admin)
    .await;
}

/// A new authority in `dir` (keys unencrypted), opened: on SQLite, or on `database_url`.
pub(crate) async fn authority(dir: &Path, database_url: Option<String>) -> (Initialized, Opened) {
    let options = InitOptions {
        dir: dir.join("aip"),
        trust_domain: "bench.local".into(),
        algorithm: Algorithm::EdDSA,
        listen: None,
        public_url: Some("http://127.0.0.1:8443".into()),
        database_url,
    };
    let init = authority::init(&options, Protection::InsecureNone, Arc::new(SystemClock))
        .await
        .unwrap();
    let opened = authority::open(&init.dir, None, &Overrides::default(), Arc::new(SystemClock))
        .await
        .unwrap();
    (init, opened)
}
