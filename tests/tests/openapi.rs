//! The OpenAPI 3.1 descriptions of the authority and of `aip-proxy`'s two listeners (the front
//! door of `--serve` and the HTTP API of `--listen`, in one document): every route the routers
//! register is described and nothing else is; the committed copies
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
fn every_route_of_both_proxy_listeners_is_described_and_nothing_else() {
    let doc = serde_json::to_value(aip_proxy_verifier::openapi::description()).unwrap();
    let front_door = routed(aip_proxy_verifier::front::openapi::route_table());
    let http_api = routed(aip_proxy_verifier::server::openapi::route_table());
    // The tables are the routers' own: each listener's routes are all there.
    for method in ["get", "post", "delete"] {
        assert!(
            front_door.contains(&(method.to_owned(), "/mcp".to_owned())),
            "{method} /mcp"
        );
    }
    for (method, path) in [
        ("get", "/health"),
        ("get", "/metrics"),
        ("post", "/v1/validate"),
        ("get", "/v1/hitl"),
        ("post", "/v1/hitl/{hold_id}/approve"),
        ("post", "/v1/hitl/{hold_id}/deny"),
        ("post", "/v1/tools/{tool}/accept"),
    ] {
        assert!(
            http_api.contains(&(method.to_owned(), path.to_owned())),
            "{method} {path} is not in the HTTP API's route table"
        );
    }
    // One document for both: their paths must not collide.
    let shared: Vec<_> = front_door.intersection(&http_api).collect();
    assert!(shared.is_empty(), "both listeners route {shared:?}");
    let mut both = front_door.clone();
    both.extend(http_api.iter().cloned());
    assert_same_routes("aip-proxy", &doc, both);
    // Each operation's tag names its listener, and the tags say which one that is.
    let tag_of = |listener: &str| -> BTreeSet<String> {
        doc["tags"]
            .as_array()
            .expect("tags")
            .iter()
            .filter(|tag| tag["description"].as_str().is_some_and(|d| d.starts_with(listener)))
            .map(|tag| tag["name"].as_str().expect("a tag name").to_owned())
            .collect()
    };
    for (listener, routes) in [("`--serve`", &front_door), ("`--listen`", &http_api)] {
        let tags = tag_of(listener);
        assert!(!tags.is_empty(), "no tag for {listener}");
        for (method, path) in routes {
            let operation_tags = doc["paths"][path][method]["tags"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert!(
                !operation_tags.is_empty()
                    && operation_tags
                        .iter()
                        .all(|t| t.as_str().is_some_and(|t| tags.contains(t))),
                "{method} {path} is not tagged as {listener}'s: {operation_tags:?}"
            );
        }
    }
}

#[test]
fn the_proxy_s_admin_routes_require_the_admin_token_in_the_description() {
    let doc = serde_json::to_value(aip_proxy_verifier::openapi::description()).unwrap();
    for (method, path) in routed(aip_proxy_verifier::server::openapi::route_table()) {
        let operation = &doc["paths"][&path][&method];
        let security = operation["security"].as_array().cloned().unwrap_or_default();
        let admin = security.iter().any(|s| s.get("adminToken").is_some());
        let open = path == "/health" || path == "/metrics";
        assert_eq!(admin, !open, "{method} {path}: security {security:?}");
        assert_eq!(
            operation["responses"].get("401").is_some(),
            !open,
            "{method} {path}: a 401 is described exactly where the token is required"
        );
    }
}

#[test]
fn the_committed_descriptions_are_the_generated_ones() {
    for (name, generated) in [
        ("authority.json", aip_authority::openapi::description_json()),
        ("proxy.json", aip_proxy_verifier::openapi::description_json()),
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
    let proxy_description = ok(run(&["openapi", "--proxy"]));
    let proxy = Command::new(aip_proxy()).arg("--openapi").output().unwrap();
    assert!(proxy.status.success(), "{}", String::from_utf8_lossy(&proxy.stderr));
    let printed = String::from_utf8(proxy.stdout).unwrap();
    assert_eq!(printed, proxy_description);
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
