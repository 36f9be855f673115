//! The OpenAPI 3.1 descriptions of the authority and of `aip-proxy --serve`'s front door:
//! every route the routers register is described and nothing else is; the committed copies
//! under `docs/openapi/` are what the code generates; a running `aip-ca serve` serves its own
//! at `/openapi.json`, unauthenticated; an independent validator (openapi-spec-validator)
//! accepts both.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use aip_http::routes::Route;
use aip_tests::{Peer, Server, aip_proxy, ok, peers_ready, python, run};

/// The command that rewrites the committed copies.
const REGENERATE: &str = "cargo run -p aip-cli --bin aip-ca -- openapi --out docs/openapi";

fn committed(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi").join(name)
}

/// The (method, path) pairs a description has operations for.
fn described(doc: &serde_json::Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "put", "post", "delete", "patch", "head", "options", "trace"] {
            if item.get(method).is_some() {
                operations.insert((method.to_owned(), path.clone()));
            }
        }
    }
    operations
}

fn routed(table: Vec<Route>) -> BTreeSet<(String, String)> {
    table
        .into_iter()
        .map(|route| (route.method.as_str().to_owned(), route.path))
        .collect()
}

fn assert_same_routes(what: &str, doc: &serde_json::Value, routes: BTreeSet<(String, String)>) {
    let described = described(doc);
    let undescribed: Vec<_> = routes.difference(&described).collect();
    let unrouted: Vec<_> = described.difference(&routes).collect();
    assert!(
        undescribed.is_empty() && unrouted.is_empty(),
        "{what}: routed but not described: {undescribed:?}; described but not routed: {unrouted:?}"
    );
}

#[test]
fn every_route_of_the_authority_is_described_and_nothing_else() {
    let doc = serde_json::to_value(aip_authority::openapi::description()).unwrap();
    let routes = routed(aip_authority::openapi::route_table());
    // The table is the routers' own: the services' routes are all there.
    for expected in [
        ("post", "/v1/agents"),
        ("post", "/v1/token"),
        ("post", "/oauth/token"),
        ("get", "/oauth/authorize"),
        ("get", "/ready"),
        ("get", "/health"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
    ] {
        assert!(
            routes.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "{expected:?} is not in the route table"
        );
    }
    assert_same_routes("authority", &doc, routes);
}

#[test]
fn every_route_of_the_front_door_is_described_and_nothing_else() {
    let doc = serde_json::to_value(aip_proxy_verifier::front::openapi::description()).unwrap();
    let routes = routed(aip_proxy_verifier::front::openapi::route_table());
    for method in ["get", "post", "delete"] {
        assert!(
            routes.contains(&(method.to_owned(), "/mcp".to_owned())),
            "{method} /mcp"
        );
    }
    assert_same_routes("front door", &doc, routes);
}

#[test]
fn the_committed_descriptions_are_the_generated_ones() {
    for (name, generated) in [
        ("authority.json", aip_authority::openapi::description_json()),
        ("proxy.json", aip_proxy_verifier::front::openapi::description_json()),
    ] {
        let path = committed(name);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == generated,
            "docs/openapi/{name} is stale or missing: regenerate it with `{REGENERATE}`"
        );
    }
}

#[test]
fn the_programs_print_the_committed_descriptions() {
    let authority = ok(run(&["openapi"]));
    assert_eq!(authority, std::fs::read_to_string(committed("authority.json")).unwrap());
    let front_door = ok(run(&["openapi", "--proxy"]));
    let proxy = Command::new(aip_proxy()).arg("--openapi").output().unwrap();
    assert!(proxy.status.success(), "{}", String::from_utf8_lossy(&proxy.stderr));
    let printed = String::from_utf8(proxy.stdout).unwrap();
    assert_eq!(printed, front_door);
    assert_eq!(printed, std::fs::read_to_string(committed("proxy.json")).unwrap());
}

#[test]
fn a_running_authority_serves_its_description_unauthenticated() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&["--dir", dir.path().to_str().unwrap(), "--insecure-no-passphrase"]);
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-D",
            "-",
            &format!("{}/openapi.json", server.url),
        ])
        .output()
        .expect("curl");
    let text = String::from_utf8(out.stdout).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.lines()
            .any(|l| l.eq_ignore_ascii_case("content-type: application/json")),
        "{head}"
    );
    assert_eq!(body, aip_authority::openapi::description_json());
    let served: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(served["openapi"], "3.1.0");
}

#[test]
fn an_independent_validator_accepts_both_descriptions() {
    if !peers_ready(
        "an_independent_validator_accepts_both_descriptions",
        &[Peer::OpenapiValidator],
    ) {
        return;
    }
    for name in ["authority.json", "proxy.json"] {
        let path = committed(name);
        let out = Command::new(python())
            .args(["-m", "openapi_spec_validator", "--schema", "3.1.0"])
            .arg(&path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("OK"),
            "{name} is not a valid OpenAPI 3.1 document: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
