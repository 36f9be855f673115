//! Cross-replica visibility of revocations: two real `aip-ca serve` processes (replicas A and
//! B) over one real PostgreSQL database. For each agent, t0 is the instant replica A
//! acknowledges `POST /v1/agents/{id}/revoke` (committed); the benchmark then measures when
//! B's event stream (`GET /v1/revocations/stream`, opened once before the first revocation)
//! delivers the `agent_revoked` event, and when B's `GET /v1/revocations` first answers a list
//! version at least the revocation's (asked back to back from t0). An event that arrives before
//! A's answer counts as 0. One warm-up revocation, not counted, comes first.
//!
//! ```text
//! AIP_TEST_POSTGRES_URL=postgres://… cargo bench -p aip-tests --bench replicas
//! AIP_BENCH_REVOCATIONS=500 AIP_TEST_POSTGRES_URL=postgres://… cargo bench -p aip-tests --bench replicas
//! ```
//! Prints one line per measurement (stream, list, and the revoke's own round trip). Without
//! `AIP_TEST_POSTGRES_URL` it says so and measures nothing. Results: docs/benchmarks.md.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aip_aat::clock::{Clock as _, SystemClock};
use aip_aat::ids::AgentId;
use aip_aat::keys::{Algorithm, KeyPair};
use aip_api::client::{Client, ClientOptions, Fetched};
use aip_api::registry::{StatusKind, StatusRequest};
use aip_tests::{PostgresDb, Replicas};
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Longest wait for B to show one revocation.
const GIVE_UP: Duration = Duration::from_secs(10);

fn quantile_ms(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1e3
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let mean = samples.iter().sum::<Duration>().as_secs_f64() * 1e3 / samples.len() as f64;
    println!(
        "{name} revocations={} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2} mean_ms={mean:.2}",
        samples.len(),
        quantile_ms(&samples, 0.5),
        quantile_ms(&samples, 0.9),
        quantile_ms(&samples, 0.99),
        quantile_ms(&samples, 1.0),
    );
}

/// The list version B answers now.
async fn list_version(b: &Client) -> u64 {
    match b.revocations_since(None, GIVE_UP, 1 << 26).await.unwrap() {
        Fetched::Body { bytes, .. } => serde_json::from_slice::<Value>(&bytes).unwrap()["version"]
            .as_u64()
            .unwrap(),
        Fetched::NotModified => panic!("an unconditional request answered 304"),
    }
}

/// One revocation on A: (A's round trip, B's stream, B's list), both B figures from A's answer.
async fn revoke_one(
    a: &Client,
    b: &Client,
    agent: &AgentId,
    arrivals: &mut mpsc::UnboundedReceiver<(String, Instant)>,
    early: &mut HashMap<String, Instant>,
) -> (Duration, Duration, Duration) {
    let sent = Instant::now();
    let changed = a
        .change_status(agent, StatusKind::Revoke, &StatusRequest::default())
        .await
        .unwrap();
    let acknowledged = Instant::now();
    while list_version(b).await < changed.revocation_version {
        assert!(acknowledged.elapsed() < GIVE_UP, "B's list did not show the revocation");
    }
    let listed = acknowledged.elapsed();
    let arrived = match early.remove(agent.as_str()) {
        Some(at) => at,
        None => loop {
            let (id, at) = tokio::time::timeout(GIVE_UP, arrivals.recv())
                .await
                .expect("B's stream did not show the revocation")
                .expect("B's stream ended");
            if id == agent.as_str() {
                break at;
            }
            early.insert(id, at);
        },
    };
    (
        acknowledged - sent,
        arrived.saturating_duration_since(acknowledged),
        listed,
    )
}

async fn run(url: &str, revocations: usize) {
    let replicas = Replicas::start(url);
    let admin = Some(replicas.admin_token.clone());
    let a = Client::new(&replicas.a.url, admin.clone()).unwrap();
    let b = Client::new(&replicas.b.url, admin).unwrap();
    let mut agents = Vec::new();
    for n in 0..=revocations {
        let key = KeyPair::generate(Algorithm::EdDSA).unwrap();
        let fields = json!({"name": format!("bench agent {n}"), "capabilities": ["read_file"]});
        let body = aip_api::registry::registration_body(&key, fields, SystemClock.now()).unwrap();
        agents.push(a.register_agent(&body).await.unwrap().agent_id);
    }

    // B's stream, read on its own task: each agent_revoked event's agent and arrival.
    let start = list_version(&b).await;
    // No time limit for the whole exchange: the stream stays open for the whole run.
    let mut options = ClientOptions::default();
    options.timeout = None;
    let follower = Client::with_options(&replicas.b.url, Some(replicas.admin_token.clone()), &options).unwrap();
    let mut events = follower.revocation_events(start, GIVE_UP).await.unwrap();
    let (tx, mut arrivals) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(event)) = events.next().await {
            let at = Instant::now();
            if event.event == "agent_revoked" {
                let data: Value = serde_json::from_str(&event.data).unwrap();
                let id = data["subject"].as_str().unwrap().to_owned();
                if tx.send((id, at)).is_err() {
                    return;
                }
            }
        }
    });

    let mut early = HashMap::new();
    let (mut round_trips, mut streamed, mut listed) = (Vec::new(), Vec::new(), Vec::new());
    for (n, agent) in agents.iter().enumerate() {
        let (round_trip, stream, list) = revoke_one(&a, &b, agent, &mut arrivals, &mut early).await;
        if n == 0 {
            continue;
        }
        round_trips.push(round_trip);
        streamed.push(stream);
        listed.push(list);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("# cross-replica visibility: two aip-ca serve over one PostgreSQL, {cores} cores");
    report("b_stream_after_a_ack", streamed);
    report("b_list_after_a_ack", listed);
    report("a_revoke_round_trip", round_trips);
}

fn main() {
    let revocations = std::env::var("AIP_BENCH_REVOCATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let Some(db) = PostgresDb::create() else {
        println!("SKIPPED: the cross-replica benchmark needs {}", aip_tests::POSTGRES_ENV);
        return;
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(&db.url, revocations));
}
