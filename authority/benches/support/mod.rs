//! Helpers shared by the benchmarks (included with `#[path]`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aip_aat::clock::SystemClock;
use aip_aat::keyfile::Protection;
use aip_aat::keys::Algorithm;
use aip_authority::{Authority, InitOptions, Initialized, Overrides};

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

/// `p50 …, p99 …` of sorted latencies.
pub(crate) fn p50_p99(sorted: &[Duration]) -> String {
    format!(
        "p50 {}, p99 {}",
        ms(percentile(sorted, 0.5)),
        ms(percentile(sorted, 0.99))
    )
}

/// `N in T s = **R/s** (p50 …, p99 …)` of the sorted latencies of the operations done in
/// `elapsed`.
pub(crate) fn throughput(sorted: &[Duration], elapsed: Duration) -> String {
    format!(
        "{} in {:.1} s = **{:.0}/s** ({})",
        sorted.len(),
        elapsed.as_secs_f64(),
        sorted.len() as f64 / elapsed.as_secs_f64(),
        p50_p99(sorted)
    )
}

/// A fresh PostgreSQL database on the server named by `AIP_TEST_POSTGRES_URL`.
struct PostgresDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PostgresDatabase {
    async fn create() -> Self {
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
        let base = admin_url.rsplit_once('/').unwrap().0;
        let url = format!("{base}/{name}");
        Self { admin_url, name, url }
    }

    async fn drop(self) {
        let admin = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(&self.admin_url)
            .await
            .unwrap();
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&admin)
        .await;
    }
}

/// A new authority (keys unencrypted), opened with the registry and the token issuer wired
/// together, on the backend `AIP_BENCH_BACKEND` names: `sqlite` (the default, in a temporary
/// directory) or `postgres` (a fresh database on `AIP_TEST_POSTGRES_URL`).
pub(crate) struct BenchAuthority {
    /// `sqlite` or `postgres`.
    pub(crate) backend: String,
    pub(crate) init: Initialized,
    pub(crate) opened: Authority,
    /// The database the authority runs on.
    pub(crate) database_url: String,
    postgres: Option<PostgresDatabase>,
    _dir: tempfile::TempDir,
}

impl BenchAuthority {
    pub(crate) async fn start() -> Self {
        let backend = std::env::var("AIP_BENCH_BACKEND").unwrap_or_else(|_| "sqlite".into());
        let dir = tempfile::tempdir().unwrap();
        let postgres = if backend == "postgres" {
            Some(PostgresDatabase::create().await)
        } else {
            None
        };
        let options = InitOptions {
            dir: dir.path().join("aip"),
            trust_domain: "bench.local".into(),
            algorithm: Algorithm::EdDSA,
            listen: None,
            public_url: Some("http://127.0.0.1:8443".into()),
            database_url: postgres.as_ref().map(|p| p.url.clone()),
        };
        let init = aip_authority::init(&options, Protection::InsecureNone, Arc::new(SystemClock))
            .await
            .unwrap();
        let opened = aip_authority::open(
            &init.dir,
            Protection::InsecureNone,
            &Overrides::default(),
            Arc::new(SystemClock),
        )
        .await
        .unwrap();
        let database_url = aip_authority::init::database_url(&init.dir, init.config.database_url.as_deref());
        Self {
            backend,
            init,
            opened,
            database_url,
            postgres,
            _dir: dir,
        }
    }

    /// Closes the database; drops it on PostgreSQL.
    pub(crate) async fn finish(self) {
        self.opened.database.close().await;
        if let Some(postgres) = self.postgres {
            postgres.drop().await;
        }
    }
}

/// CPU time used so far, in seconds: by this process's threads whose name starts with
/// `client_prefix`, and by everything else — the rest of this process and every `postgres`
/// process on the machine (the database server, when there is one).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CpuSplit {
    pub(crate) clients: f64,
    pub(crate) server: f64,
    pub(crate) database: f64,
}

impl CpuSplit {
    pub(crate) fn now(client_prefix: &str) -> Self {
        let mut split = Self::default();
        for (name, seconds) in cpu_of_children(Path::new("/proc/self/task")) {
            if name.starts_with(client_prefix) {
                split.clients += seconds;
            } else {
                split.server += seconds;
            }
        }
        split.database = cpu_of_children(Path::new("/proc"))
            .filter(|(name, _)| name == "postgres")
            .map(|(_, seconds)| seconds)
            .sum();
        split
    }

    pub(crate) fn since(self, earlier: Self) -> Self {
        Self {
            clients: self.clients - earlier.clients,
            server: self.server - earlier.server,
            database: self.database - earlier.database,
        }
    }
}

/// `(name, user + system CPU seconds)` of every numbered entry of `dir` (`/proc` or a task
/// directory); entries that vanish while being read are skipped.
fn cpu_of_children(dir: &Path) -> impl Iterator<Item = (String, f64)> {
    // utime and stime are in clock ticks, USER_HZ = 100 on Linux.
    const TICKS: f64 = 100.0;
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let name = head.split_once('(')?.1.to_owned();
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // After the name: state is field 3, utime 14, stime 15.
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((name, (utime + stime) / TICKS))
        })
}
