//! Registry benchmarks over real HTTP on loopback (in-process server, axum over tokio):
//!
//! 1. agent registrations (with certificate) per second, with concurrent clients;
//! 2. the time of one revocation with no other revoked agents, and with 100 000;
//! 3. CRL generation time with 100 000 entries.
//!
//! ```text
//! cargo bench -p aip-authority --bench registry                       # SQLite
//! AIP_BENCH_BACKEND=postgres AIP_TEST_POSTGRES_URL=postgres://… cargo bench -p aip-authority --bench registry
//! ```
//! `AIP_BENCH_CLIENTS` (default 16), `AIP_BENCH_SECONDS` (default 10) and
//! `AIP_BENCH_REVOKED` (default 100000) tune the run. Results: docs/benchmarks.md.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use aip_aat::clock::{Clock as _, SystemClock};
use aip_aat::keys::{Algorithm, KeyPair};
use aip_registry::service::Registry;
use serde_json::json;
use support::{BenchAuthority, env_or, ms, p50_p99, percentile, throughput};

#[path = "support/mod.rs"]
mod support;

fn registration_body(key: &KeyPair, n: u64) -> serde_json::Value {
    let fields = json!({"name": format!("bench agent {n}"), "capabilities": ["read_file"]});
    aip_api::registry::registration_body(key, fields, SystemClock.now()).unwrap()
}

/// Inserts `count` revoked agents, each with one certificate on the CRL, in bulk (a trigger
/// adds their key rows).
async fn bulk_revoked(database_url: &str, count: u64) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(database_url)
        .await
        .unwrap();
    let now = SystemClock.now();
    let mut tx = pool.begin().await.unwrap();
    for chunk_start in (0..count).step_by(500) {
        let end = (chunk_start + 500).min(count);
        let mut agents = Vec::new();
        let mut certs = Vec::new();
        for i in chunk_start..end {
            let id = format!("ag_00000000-0000-4000-8000-{i:012x}");
            let thumb = format!("bench-key-{i:012}");
            agents.push(format!(
                "('{id}', 'revoked agent {i}', NULL, NULL, '[]', 0, NULL, 'revoked', 'bulk', {now}, {now}, '{thumb}', '{{}}')"
            ));
            certs.push(format!(
                "('{i:032x}', '{id}', '{thumb}', {now}, {}, X'00', {now}, 5, NULL)",
                now + 86_400
            ));
        }
        let blob = if database_url.starts_with("postgres") {
            "'\\x00'::bytea"
        } else {
            "X'00'"
        };
        let statements = [
            format!(
                "INSERT INTO agents (agent_id, name, description, owner, capabilities, autonomous, metadata, status, status_reason, \
                 status_changed_at, created_at, key_thumbprint, public_key) VALUES {}",
                agents.join(",")
            ),
            format!(
                "INSERT INTO certificates (serial, agent_id, key_thumbprint, not_before, not_after, der, revoked_at, revocation_reason, \
                 superseded_at) VALUES {}",
                certs.join(",").replace("X'00'", blob)
            ),
        ];
        for sql in statements {
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await.unwrap();
        }
    }
    tx.commit().await.unwrap();
    pool.close().await;
}

struct Bench {
    registry: Arc<Registry>,
    base: String,
    admin: String,
    http: reqwest::Client,
    database_url: String,
}

impl Bench {
    async fn revoke_many(&self, ids: &[String]) -> Vec<Duration> {
        let mut times = Vec::with_capacity(ids.len());
        for id in ids {
            let started = Instant::now();
            let response = self
                .http
                .post(format!("{}/v1/agents/{id}/revoke", self.base))
                .bearer_auth(&self.admin)
                .send()
                .await
                .unwrap();
            assert!(
                response.status().is_success(),
                "{}",
                response.text().await.unwrap_or_default()
            );
            times.push(started.elapsed());
        }
        times.sort();
        times
    }

    async fn crl_generation(&self, spare: &str, rounds: usize) -> Vec<Duration> {
        let mut times = Vec::new();
        for _ in 0..rounds {
            // A status change bumps the revocation version, so the next CRL is made anew.
            for verb in ["suspend", "reactivate"] {
                let r = self
                    .http
                    .post(format!("{}/v1/agents/{spare}/{verb}", self.base))
                    .bearer_auth(&self.admin)
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success());
            }
            let started = Instant::now();
            let crl = self.registry.crl().await.unwrap();
            times.push(started.elapsed());
            assert!(!crl.der.is_empty());
        }
        times.sort();
        times
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let clients = env_or("AIP_BENCH_CLIENTS", 16);
    let seconds = env_or("AIP_BENCH_SECONDS", 10);
    let revoked = env_or("AIP_BENCH_REVOKED", 100_000);
    let aip = BenchAuthority::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = aip_registry::http::router(aip.opened.registry.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    let bench = Bench {
        registry: aip.opened.registry.clone(),
        base: base.clone(),
        admin: aip.init.admin_token.expose().to_owned(),
        http,
        database_url: aip.database_url.clone(),
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "# registry benchmark: backend {}, {clients} concurrent clients, {cores} cores, {seconds} s\n",
        aip.backend
    );

    // 1. Registrations per second.
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let http = bench.http.clone();
        let url = format!("{base}/v1/agents");
        let admin = bench.admin.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut ids = Vec::new();
            let mut n = c * 1_000_000;
            while Instant::now() < deadline {
                n += 1;
                let key = KeyPair::generate(Algorithm::EdDSA).unwrap();
                let body = registration_body(&key, n);
                let sent = Instant::now();
                let response = http.post(&url).bearer_auth(&admin).json(&body).send().await.unwrap();
                let status = response.status();
                let reply: serde_json::Value = response.json().await.unwrap();
                assert_eq!(status, 201, "{reply}");
                latencies.push(sent.elapsed());
                ids.push(reply["agent_id"].as_str().unwrap().to_owned());
            }
            (latencies, ids)
        }));
    }
    let mut latencies = Vec::new();
    let mut ids = Vec::new();
    for task in tasks {
        let (l, i) = task.await.unwrap();
        latencies.extend(l);
        ids.extend(i);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    println!("| measurement | result |");
    println!("|---|---|");
    println!(
        "| registrations with certificate | {} |",
        throughput(&latencies, elapsed)
    );

    // 2. One revocation, with (almost) no revoked agents, then with `revoked` more.
    let spare = ids.pop().unwrap();
    let sample = 200.min(ids.len() / 2);
    let early = bench.revoke_many(&ids[..sample]).await;
    println!(
        "| revoke one agent, 0–{} already revoked | {} (n = {sample}) |",
        sample - 1,
        p50_p99(&early)
    );
    let load_started = Instant::now();
    bulk_revoked(&bench.database_url, revoked).await;
    eprintln!(
        "loaded {revoked} revoked agents in {:.1} s",
        load_started.elapsed().as_secs_f64()
    );
    // Publish once so the published list and CRL reflect the load before timing revocations.
    let _ = bench.registry.published_list().await.unwrap();
    let late = bench.revoke_many(&ids[sample..2 * sample]).await;
    println!(
        "| revoke one agent, {revoked} already revoked | {} (n = {sample}) |",
        p50_p99(&late)
    );

    // 3. CRL generation with `revoked` + 2·sample entries.
    let crl = bench.crl_generation(&spare, 5).await;
    let entries = revoked + 2 * sample as u64;
    println!(
        "| CRL generation, {entries} entries (query, sign, store) | median {}, max {} (n = 5) |",
        ms(percentile(&crl, 0.5)),
        ms(crl[crl.len() - 1])
    );
    let started = Instant::now();
    let list = bench.registry.published_list().await.unwrap();
    println!(
        "| revocation list JSON + JWS, {} bytes | {} |",
        list.json.len(),
        ms(started.elapsed())
    );

    aip.finish().await;
}
