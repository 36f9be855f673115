//! Test databases: a fresh SQLite file, or a fresh PostgreSQL database on the server named by
//! `AIP_TEST_POSTGRES_URL` (created per test, dropped afterwards). Without that variable,
//! PostgreSQL tests report themselves skipped — except under `CI`, where they fail.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

use std::sync::Arc;

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
                let url = SqlStore::sqlite_url(&dir.path().join("aip.db"));
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
