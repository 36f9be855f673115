#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]
//! What the people who run the authority and the proxy watch: `/metrics` read by an
//! independent parser of the Prometheus text format, every latency a histogram whose series
//! add up across replicas; and the authority's `/ready`, on SQLite and PostgreSQL, before and
//! after its database is taken away.

use std::process::Stdio;
use std::time::Duration;

use aip_tests::exposition::Exposition;
use aip_tests::{Authority, PostgresDb, aip_proxy, free_port, http_get, isolated, piped, within};
use serde_json::{Value, json};

/// The latency metrics of the authority, all of them histograms.
const AUTHORITY_LATENCIES: &[&str] = &[
    "aip_http_request_duration_seconds",
    "aip_registry_crl_generation_seconds",
];

/// The latency metrics of the proxy.
const PROXY_LATENCIES: &[&str] = &["aip_request_duration_seconds"];

/// Parses `/metrics` at `url`, and checks that nothing in it is a summary (quantiles cannot be
/// summed across replicas) and that every histogram can be summed.
fn scrape(url: &str, bearer: Option<&str>) -> Exposition {
    let (status, text) = http_get(&format!("{url}/metrics"), bearer);
    assert_eq!(status, 200, "{text}");
    let exposition = Exposition::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for (family, kind) in &exposition.types {
        assert_ne!(kind, "summary", "{family} is a summary:\n{text}");
        if kind == "histogram" {
            exposition
                .check_histogram(family)
                .unwrap_or_else(|e| panic!("{e}\n{text}"));
        }
    }
    assert!(
        exposition.samples.iter().all(|s| !s.labels.contains_key("quantile")),
        "quantiles served:\n{text}"
    );
    exposition
}

#[test]
fn authority_latencies_are_histograms() {
    let authority = Authority::start(None);
    // Traffic on several routes, and a CRL made after a revocation.
    let agent = authority.register("metered", "ed25519", "read_file");
    authority.remote(&["agents", "revoke", &agent.id, "--json"]);
    for path in [
        "/v1/jwks",
        "/v1/crl.pem",
        "/.well-known/aip-configuration",
        "/health",
        "/ready",
    ] {
        let (status, body) = http_get(&format!("{}{path}", authority.url), None);
        assert_eq!(status, 200, "{path}: {body}");
    }
    assert_eq!(http_get(&format!("{}/no/such/route", authority.url), None).0, 404);

    let metrics = scrape(&authority.url, None);
    for family in AUTHORITY_LATENCIES {
        let series = metrics.check_histogram(family).unwrap();
        assert!(series >= 1, "{family}");
    }
    // One series per route, with the same buckets in each.
    let routes: Vec<&str> = metrics
        .named("aip_http_request_duration_seconds_count")
        .map(|s| s.labels["route"].as_str())
        .collect();
    for route in [
        "/v1/agents",
        "/v1/jwks",
        "/v1/crl.pem",
        "/health",
        "/ready",
        "unmatched",
    ] {
        assert!(routes.contains(&route), "no series for {route}: {routes:?}");
    }
    let buckets = |route: &str| -> Vec<String> {
        metrics
            .named("aip_http_request_duration_seconds_bucket")
            .filter(|s| s.labels["route"] == route)
            .map(|s| s.labels["le"].clone())
            .collect()
    };
    assert_eq!(buckets("/health"), buckets("/v1/crl.pem"));
    assert_eq!(
        buckets("/health"),
        [
            "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10",
            "+Inf"
        ]
    );
    // A series counts its requests: the five /health answers made below all land in it.
    let count = |m: &Exposition| {
        m.named("aip_http_request_duration_seconds_count")
            .find(|s| s.labels["route"] == "/health")
            .map_or(0.0, |s| s.value)
    };
    let before = count(&metrics);
    for _ in 0..5 {
        assert_eq!(http_get(&format!("{}/health", authority.url), None).0, 200);
    }
    assert_eq!(count(&scrape(&authority.url, None)), before + 5.0);
}

#[test]
fn proxy_latency_is_a_histogram() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = tmp.path().join("agent.yaml");
    std::fs::write(
        &policy,
        "apiVersion: aip.io/v1alpha1\nkind: AgentPolicy\nmetadata:\n  name: metered\n\
         spec:\n  allowed_tools: [read_file]\n",
    )
    .unwrap();
    let token = "metrics-test-token-0123456789abcdef0123";
    let listen = format!("127.0.0.1:{}", free_port());
    let mut proxy = piped(
        isolated(aip_proxy())
            .args([
                "--policy",
                policy.to_str().unwrap(),
                "--target",
                "cat",
                "--listen",
                &listen,
            ])
            .env("AIP_PROXY_TOKEN", token),
    );
    let url = format!("http://{listen}");
    assert!(
        within(Duration::from_secs(30), || http_get(&format!("{url}/health"), None).0
            == 200),
        "aip-proxy --listen did not answer"
    );
    for (tool, decision) in [("read_file", "allow"), ("exec", "block"), ("read_file", "allow")] {
        let answer = post_json(
            &format!("{url}/v1/validate"),
            token,
            &json!({"tool": tool, "arguments": {}}),
        );
        assert_eq!(answer["decision"], decision, "{answer}");
    }
    let metrics = scrape(&url, None);
    for family in PROXY_LATENCIES {
        assert_eq!(metrics.check_histogram(family), Ok(1), "{family}");
    }
    let count = metrics
        .named("aip_request_duration_seconds_count")
        .next()
        .unwrap()
        .value;
    assert!(count >= 3.0, "{count}");
    let le: Vec<&str> = metrics
        .named("aip_request_duration_seconds_bucket")
        .map(|s| s.labels["le"].as_str())
        .collect();
    assert_eq!(le.first(), Some(&"0.00001"), "{le:?}");
    assert_eq!(le.len(), 23, "{le:?}");
    drop(proxy.stdin);
    let _ = proxy.child.kill();
    let _ = proxy.child.wait();
}

/// `POST url` with a JSON body and a bearer token, through curl; the JSON answer.
fn post_json(url: &str, bearer: &str, body: &Value) -> Value {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-H", "Content-Type: application/json"])
        .args(["-H", &format!("Authorization: Bearer {bearer}")])
        .args(["--data-binary", &body.to_string(), url])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// `GET /ready`: the status and the JSON body.
fn ready(authority: &Authority) -> (u16, Value) {
    let (status, body) = http_get(&format!("{}/ready", authority.url), None);
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")),
    )
}

fn assert_ready(authority: &Authority) {
    let (status, body) = ready(authority);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"status": "ready", "checks": {"database": "ok", "migrations": "ok", "keys": "ok"}})
    );
}

/// After the database went away: 503 naming the database, and `/health` still the process's.
fn assert_database_not_ready(authority: &Authority, secrets: &[&str]) {
    let mut last = (0, Value::Null);
    let gone = within(Duration::from_secs(20), || {
        last = ready(authority);
        last.0 == 503
    });
    let (status, body) = last;
    assert!(gone, "still {status}: {body}");
    assert_eq!(body["status"], "not_ready", "{body}");
    assert_eq!(body["not_ready"][0], "database", "{body}");
    assert_ne!(body["checks"]["database"], "ok", "{body}");
    assert_eq!(body["checks"]["keys"], "ok", "{body}");
    let text = body.to_string();
    for secret in secrets {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
}

#[test]
fn ready_on_sqlite_until_the_database_file_is_gone() {
    let authority = Authority::start(None);
    assert_ready(&authority);
    let dir = authority.dir().join("aip");
    let database = dir.join("aip.db");
    assert!(database.is_file());
    // Still served from the open file, but nothing it writes would survive a restart.
    std::fs::rename(&database, authority.dir().join("aside.db")).unwrap();
    assert_database_not_ready(&authority, &[dir.to_str().unwrap()]);
    let (status, body) = ready(&authority);
    assert_eq!(status, 503);
    assert_eq!(
        body["checks"]["database"], "the database file was removed or replaced",
        "{body}"
    );
    // Back in place: ready again.
    std::fs::rename(authority.dir().join("aside.db"), &database).unwrap();
    assert_ready(&authority);
}

#[test]
fn ready_on_postgres_until_the_database_is_dropped() {
    let Some(db) = PostgresDb::create() else {
        return;
    };
    let authority = Authority::start(Some(&db.url));
    assert_ready(&authority);
    db.drop_now();
    let user_info = db
        .url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('@').next())
        .unwrap();
    assert_database_not_ready(&authority, &[&db.url, user_info]);
    let (_, body) = ready(&authority);
    assert_eq!(body["checks"]["database"], "cannot be queried", "{body}");
    assert_eq!(
        body["checks"]["migrations"], "not checked: the database cannot be queried",
        "{body}"
    );
}
