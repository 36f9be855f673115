//! The proxy's HTTP server and hold queue, over real HTTP on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use aip_proxy_verifier::engine::{Engine, SchemaBook};
use aip_proxy_verifier::hitl::{Hitl, HoldOutcome, HoldRequest, PromptMode};
use aip_proxy_verifier::metrics;
use aip_proxy_verifier::policy::{Policy, SignaturePolicy};
use aip_proxy_verifier::server::{self, AdminToken, ServerHandle, ServerState};
use aip_proxy_verifier::state::PolicyHandle;
use serde_json::{Value, json};
use support::{Reply, http_request};

const POLICY: &str = r#"
apiVersion: aip.io/v1alpha1
kind: AgentPolicy
metadata:
  name: server-test
spec:
  mode: enforce
  allowed_tools: [read_file]
  tool_rules:
    - tool: write_file
      action: ask
    - tool: exec_command
      action: block
    - tool: fetch
      allow_args:
        url: "https://.*"
    - tool: limited
      rate_limit: "1/minute"
  hitl:
    timeout_seconds: 1
    on_timeout: deny
    approvers: [alice@example.com]
"#;

struct Server {
    handle: ServerHandle,
    token: String,
    hitl: Arc<Hitl>,
    hash: String,
}

impl Server {
    fn start(yaml: &str) -> Self {
        Self::start_with(yaml, PromptMode::None)
    }

    fn start_with(yaml: &str, prompt: PromptMode) -> Self {
        let policy = Policy::parse(yaml, None, SignaturePolicy::NoKey).unwrap();
        let hash = policy.hash().to_owned();
        let hitl = Arc::new(Hitl::new(policy.hitl().clone(), prompt).unwrap());
        let (token, secret) = AdminToken::generate().unwrap();
        let state = ServerState::new(
            Arc::new(PolicyHandle::new(Engine::new(policy))),
            Arc::new(SchemaBook::default()),
            Arc::clone(&hitl),
            token,
            metrics::install_metrics(),
        );
        let handle = server::spawn("127.0.0.1:0".parse().unwrap(), state).unwrap();
        Self {
            handle,
            token: secret,
            hitl,
            hash,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    fn get(&self, path: &str, auth: bool) -> Reply {
        request(self.addr(), "GET", path, auth.then_some(self.token.as_str()), None)
    }

    fn post(&self, path: &str, body: Option<&str>) -> Reply {
        request(self.addr(), "POST", path, Some(&self.token), body)
    }

    fn validate(&self, body: Value) -> Value {
        let reply = self.post("/v1/validate", Some(&body.to_string()));
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()
    }

    fn hold(&self, tool: &str) -> (String, Receiver<HoldOutcome>) {
        let (tx, rx) = mpsc::channel();
        let id = self.hitl.submit(
            HoldRequest {
                tool: tool.into(),
                arguments_preview: r#"{"path":"/tmp/x"}"#.into(),
                policy_name: "server-test".into(),
                rule: format!("tool_rules[{tool}].action=ask"),
                agent_id: Some("agent-1".into()),
            },
            Box::new(move |outcome| tx.send(outcome).unwrap()),
        );
        (id.as_str().to_owned(), rx)
    }
}

/// A hand-written HTTP/1.1 exchange over a real socket.
fn request(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Reply {
    request_raw(
        addr,
        method,
        path,
        token,
        body.map(|b| ("application/json", b.as_bytes())),
    )
}

fn request_raw(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: Option<(&str, &[u8])>) -> Reply {
    http_request(addr, method, path, token, &[], body)
}

fn outcome(rx: &Receiver<HoldOutcome>) -> HoldOutcome {
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the hold callback was not called")
}

fn no_second_call(rx: &Receiver<HoldOutcome>) {
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "the callback ran twice"
    );
}

#[test]
fn health_needs_no_token_and_names_the_policy() {
    let server = Server::start(POLICY);
    let reply = server.get("/health", false);
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["policy"], "server-test");
    assert_eq!(body["policy_hash"], server.hash.as_str());
    assert_eq!(body["policy_hash"].as_str().unwrap().len(), 64);
    assert_eq!(body["mode"], "enforce");

    let missing = server.get("/nope", false);
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"], "not_found");
    let wrong_method = request(server.addr(), "DELETE", "/health", None, None);
    assert_eq!(wrong_method.status, 405);
    server.handle.shutdown();
}

#[test]
fn metrics_use_the_spec_names() {
    let server = Server::start(POLICY);
    metrics::record_decision("ALLOW", None, Duration::from_micros(120));
    metrics::record_decision("block", Some("forbidden"), Duration::from_micros(300));
    let reply = server.get("/metrics", false);
    assert_eq!(reply.status, 200);
    assert!(reply.header("content-type").unwrap().starts_with("text/plain"));
    let text = reply.body;
    for needle in [
        "# HELP aip_requests_total",
        "aip_requests_total ",
        "aip_decisions_total{decision=\"allow\"}",
        "aip_decisions_total{decision=\"block\"}",
        "aip_violations_total{type=\"forbidden\"}",
        "aip_request_duration_seconds_bucket",
        "aip_request_duration_seconds_count",
        "# TYPE aip_policy_hash gauge",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    let hash_line = format!("aip_policy_hash{{policy=\"server-test\",hash=\"{}\"}} 1", server.hash);
    let hash_line_other_order = format!("aip_policy_hash{{hash=\"{}\",policy=\"server-test\"}} 1", server.hash);
    assert!(
        text.contains(&hash_line) || text.contains(&hash_line_other_order),
        "{text}"
    );
    server.handle.shutdown();
}

#[test]
fn validate_answers_allow_block_and_ask() {
    let server = Server::start(POLICY);

    let allow = server.validate(json!({"tool": "read_file", "arguments": {"path": "/tmp/a"}}));
    assert_eq!(allow["decision"], "allow");
    assert_eq!(allow["violations"], json!([]));
    assert!(allow["reason"].is_string());
    assert!(allow.get("aat_status").is_none());

    let blocked = server.validate(json!({"tool": "exec_command", "arguments": {}}));
    assert_eq!(blocked["decision"], "block");
    assert_eq!(blocked["reason"], "Tool is blocked by policy");
    assert_eq!(blocked["violations"][0]["type"], "forbidden");
    assert_eq!(blocked["violations"][0]["field"], "tool");
    assert_eq!(blocked["violations"][0]["message"], "Tool is blocked by policy");

    let unknown = server.validate(json!({"tool": "rm_rf", "arguments": {}}));
    assert_eq!(unknown["decision"], "block");
    assert_eq!(unknown["reason"], "Tool not in allowed_tools list");

    let bad_arg = server.validate(json!({"tool": "fetch", "arguments": {"url": "http://plain"}}));
    assert_eq!(bad_arg["decision"], "block");
    assert_eq!(bad_arg["violations"][0]["type"], "argument_invalid");
    assert_eq!(bad_arg["violations"][0]["field"], "url");
    let good_arg = server.validate(json!({"tool": "fetch", "arguments": {"url": "https://example.com"}}));
    assert_eq!(good_arg["decision"], "allow");

    let ask = server.validate(json!({"tool": "write_file", "arguments": {"path": "/tmp/b"}}));
    assert_eq!(ask["decision"], "ask");
    assert_eq!(ask["violations"], json!([]));

    // Validation counts against the rate limit like a relayed call.
    let first = server.validate(json!({"tool": "limited", "arguments": {}}));
    assert_eq!(first["decision"], "allow");
    let second = server.validate(json!({"tool": "limited", "arguments": {}}));
    assert_eq!(second["decision"], "block");
    assert_eq!(second["violations"][0]["type"], "rate_limited");
    server.handle.shutdown();
}

#[test]
fn validate_in_monitor_mode_allows_and_lists_the_violation() {
    let server = Server::start(&POLICY.replace("mode: enforce", "mode: monitor"));
    let reply = server.validate(json!({"tool": "exec_command", "arguments": {}}));
    assert_eq!(reply["decision"], "allow");
    assert_eq!(reply["violations"][0]["type"], "forbidden");
    assert!(reply["reason"].as_str().unwrap().starts_with("Monitor mode"));
    server.handle.shutdown();
}

#[test]
fn validate_needs_the_admin_token() {
    let server = Server::start(POLICY);
    let body = json!({"tool": "read_file", "arguments": {}}).to_string();

    let none = request(server.addr(), "POST", "/v1/validate", None, Some(&body));
    assert_eq!(none.status, 401);
    assert!(none.header("www-authenticate").unwrap().starts_with("Bearer"));
    assert_eq!(none.json()["error"], "invalid_token");
    assert!(none.json()["error_description"].is_string());

    let wrong = request(
        server.addr(),
        "POST",
        "/v1/validate",
        Some(&"0".repeat(64)),
        Some(&body),
    );
    assert_eq!(wrong.status, 401);
    assert!(wrong.header("www-authenticate").unwrap().contains("invalid_token"));
    assert!(!wrong.body.contains(&server.token));

    // Auth comes before the body: a bad body without a token is still 401.
    let unauthenticated_garbage = request(server.addr(), "POST", "/v1/validate", None, Some("{"));
    assert_eq!(unauthenticated_garbage.status, 401);

    let hitl = server.get("/v1/hitl", false);
    assert_eq!(hitl.status, 401);
    let approve = request(server.addr(), "POST", "/v1/hitl/hold_x/approve", None, None);
    assert_eq!(approve.status, 401);
    server.handle.shutdown();
}

#[test]
fn validate_refuses_bad_bodies() {
    let server = Server::start(POLICY);
    for body in [
        r#"{"tool": "read_file", "arguments": {}, "extra": 1}"#,
        r#"{"tool": "read_file"}"#,
        r#"{"tool": "read_file", "arguments": []}"#,
        r#"{"tool": 7, "arguments": {}}"#,
        r#"{"tool": "a", "tool": "b", "arguments": {}}"#,
        "not json",
        "",
    ] {
        let reply = server.post("/v1/validate", Some(body));
        assert_eq!(reply.status, 400, "{body}: {}", reply.body);
        assert_eq!(reply.json()["error"], "invalid_request");
    }
    let text = request_raw(
        server.addr(),
        "POST",
        "/v1/validate",
        Some(&server.token),
        Some(("text/plain", br#"{"tool":"read_file","arguments":{}}"#)),
    );
    assert_eq!(text.status, 415);
    let huge = format!(
        r#"{{"tool":"read_file","arguments":{{"x":"{}"}}}}"#,
        "a".repeat(server::MAX_BODY_BYTES)
    );
    let too_large = server.post("/v1/validate", Some(&huge));
    assert_eq!(too_large.status, 413);
    server.handle.shutdown();
}

/// The proxy's OpenAPI description, as JSON.
fn description() -> Value {
    serde_json::to_value(aip_proxy_verifier::openapi::description()).unwrap()
}

/// Asserts that `value` has the shape of the description's schema `name`: an object with every
/// required member, and no member the schema does not describe.
fn assert_shape(doc: &Value, name: &str, value: &Value) {
    let schema = &doc["components"]["schemas"][name];
    let properties = schema["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("the schema {name} has no properties"));
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("{name}: {value} is not an object"));
    for required in schema["required"].as_array().into_iter().flatten() {
        let required = required.as_str().unwrap();
        assert!(object.contains_key(required), "{name}: {required} missing from {value}");
    }
    for key in object.keys() {
        assert!(properties.contains_key(key), "{name}: {key} is not described ({value})");
    }
}

/// Asserts that the description has `reply`'s status for the operation, and that an error
/// answer is the described error body.
fn assert_described(doc: &Value, method: &str, path: &str, reply: &Reply) {
    let responses = &doc["paths"][path][method]["responses"];
    assert!(
        responses.get(reply.status.to_string()).is_some(),
        "{method} {path} answered {} which is not described: {}",
        reply.status,
        reply.body
    );
    if reply.status >= 400 {
        assert_shape(doc, "ErrorBody", &reply.json());
    }
}

#[test]
fn the_answers_are_the_described_ones() {
    let doc = description();
    let server = Server::start(POLICY);

    let health = server.get("/health", false);
    assert_described(&doc, "get", "/health", &health);
    assert_shape(&doc, "Health", &health.json());
    let metrics = server.get("/metrics", false);
    assert_described(&doc, "get", "/metrics", &metrics);

    let validate = "/v1/validate";
    for body in [
        json!({"tool": "read_file", "arguments": {"path": "/tmp/x"}}),
        json!({"tool": "fetch", "arguments": {"url": "http://plain.example"}}),
        json!({"tool": "write_file", "arguments": {}}),
    ] {
        let reply = server.post(validate, Some(&body.to_string()));
        assert_described(&doc, "post", validate, &reply);
        let answer = reply.json();
        assert_shape(&doc, "ValidateResponse", &answer);
        for violation in answer["violations"].as_array().unwrap() {
            assert_shape(&doc, "Violation", violation);
        }
    }
    let unauthenticated = request(server.addr(), "POST", validate, None, Some("{}"));
    assert_eq!(unauthenticated.status, 401);
    assert_described(&doc, "post", validate, &unauthenticated);
    let wrong_token = request(server.addr(), "POST", validate, Some(&"x".repeat(64)), Some("{}"));
    assert_eq!(wrong_token.status, 401);
    assert_described(&doc, "post", validate, &wrong_token);
    let malformed = server.post(validate, Some(r#"{"tool": "read_file"}"#));
    assert_eq!(malformed.status, 400);
    assert_described(&doc, "post", validate, &malformed);
    let not_json = request_raw(
        server.addr(),
        "POST",
        validate,
        Some(&server.token),
        Some(("text/plain", b"{}")),
    );
    assert_eq!(not_json.status, 415);
    assert_described(&doc, "post", validate, &not_json);

    let (id, rx) = server.hold("write_file");
    let list = server.get("/v1/hitl", true);
    assert_described(&doc, "get", "/v1/hitl", &list);
    let list = list.json();
    assert_shape(&doc, "HoldList", &list);
    assert_shape(&doc, "PendingHold", &list["holds"][0]);
    let approve = "/v1/hitl/{hold_id}/approve";
    let approved = server.post(&format!("/v1/hitl/{id}/approve"), None);
    assert_described(&doc, "post", approve, &approved);
    assert_shape(&doc, "HoldAnswer", &approved.json());
    assert_eq!(outcome(&rx), HoldOutcome::Approved);
    let again = server.post(&format!("/v1/hitl/{id}/deny"), None);
    assert_eq!(again.status, 409);
    assert_described(&doc, "post", "/v1/hitl/{hold_id}/deny", &again);
    let unknown = server.post("/v1/hitl/hold_unknown/approve", None);
    assert_eq!(unknown.status, 404);
    assert_described(&doc, "post", approve, &unknown);

    let unchanged = server.post("/v1/tools/read_file/accept", None);
    assert_eq!(unchanged.status, 404);
    assert_described(&doc, "post", "/v1/tools/{tool}/accept", &unchanged);
    server.handle.shutdown();
}

#[test]
fn a_hold_is_listed_then_approved_once() {
    let server = Server::start(POLICY);
    let (id, rx) = server.hold("write_file");
    assert!(id.starts_with("hold_") && id.len() == 37, "{id}");

    let list = server.get("/v1/hitl", true);
    assert_eq!(list.status, 200);
    let list = list.json();
    assert_eq!(list["approvers"], json!(["alice@example.com"]));
    let holds = list["holds"].as_array().unwrap();
    assert_eq!(holds.len(), 1);
    let hold = &holds[0];
    assert_eq!(hold["hold_id"], id.as_str());
    assert_eq!(hold["tool"], "write_file");
    assert_eq!(hold["arguments_preview"], r#"{"path":"/tmp/x"}"#);
    assert_eq!(hold["policy"], "server-test");
    assert_eq!(hold["rule"], "tool_rules[write_file].action=ask");
    assert_eq!(hold["agent_id"], "agent-1");
    assert!(hold["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(hold["expires_at"].is_string());

    // Approve right away: well within the 1 s timeout.
    let approved = server.post(&format!("/v1/hitl/{id}/approve"), None);
    assert_eq!(approved.status, 200, "{}", approved.body);
    assert_eq!(approved.json()["outcome"], "approved");
    assert_eq!(outcome(&rx), HoldOutcome::Approved);
    no_second_call(&rx);

    let again = server.post(&format!("/v1/hitl/{id}/approve"), None);
    assert_eq!(again.status, 409);
    assert_eq!(again.json()["error"], "hold_already_resolved");
    let deny_after = server.post(&format!("/v1/hitl/{id}/deny"), None);
    assert_eq!(deny_after.status, 409);

    let unknown = server.post("/v1/hitl/hold_00000000000000000000000000000000/approve", None);
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"], "hold_not_found");
    assert_eq!(server.get("/v1/hitl", true).json()["holds"], json!([]));
    server.handle.shutdown();
}

#[test]
fn a_denied_hold_reports_denied() {
    let server = Server::start(POLICY);
    let (id, rx) = server.hold("write_file");
    let denied = server.post(&format!("/v1/hitl/{id}/deny"), None);
    assert_eq!(denied.status, 200);
    assert_eq!(denied.json()["outcome"], "denied");
    assert_eq!(outcome(&rx), HoldOutcome::Denied);
    no_second_call(&rx);
    assert_eq!(server.post(&format!("/v1/hitl/{id}/approve"), None).status, 409);
    server.handle.shutdown();
}

#[test]
fn an_unanswered_hold_times_out() {
    let server = Server::start(POLICY);
    assert!(!server.hitl.settings().allow_on_timeout);
    let started = Instant::now();
    let (id, rx) = server.hold("write_file");
    assert_eq!(outcome(&rx), HoldOutcome::TimedOut);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    no_second_call(&rx);
    let late = server.post(&format!("/v1/hitl/{id}/approve"), None);
    assert_eq!(late.status, 409);
    assert!(late.json()["error_description"].as_str().unwrap().contains("timed_out"));
    server.handle.shutdown();
}

#[test]
fn shutdown_denies_every_pending_hold() {
    let server = Server::start(&POLICY.replace("timeout_seconds: 1", "timeout_seconds: 600"));
    let (_, first) = server.hold("write_file");
    let (_, second) = server.hold("write_file");
    assert_eq!(server.hitl.pending().len(), 2);
    server.hitl.shutdown();
    // Shutdown returns after the callbacks ran.
    assert_eq!(first.try_recv().unwrap(), HoldOutcome::Denied);
    assert_eq!(second.try_recv().unwrap(), HoldOutcome::Denied);
    assert!(server.hitl.pending().is_empty());
    // After shutdown, a new hold is denied at once.
    let (_, late) = server.hold("write_file");
    assert_eq!(outcome(&late), HoldOutcome::Denied);
    server.handle.shutdown();
}

#[test]
fn a_non_loopback_address_is_refused() {
    let policy = Policy::parse(POLICY, None, SignaturePolicy::NoKey).unwrap();
    let hitl = Arc::new(Hitl::new(policy.hitl().clone(), PromptMode::None).unwrap());
    let state = ServerState::new(
        Arc::new(PolicyHandle::new(Engine::new(policy))),
        Arc::new(SchemaBook::default()),
        hitl,
        AdminToken::from_secret(&"s".repeat(40)).unwrap(),
        None,
    );
    let error = server::spawn("0.0.0.0:0".parse().unwrap(), state.clone()).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    assert!(error.to_string().contains("TLS"), "{error}");

    // Without a recorder handle, /metrics says so; the configured token works.
    let handle = server::spawn("127.0.0.1:0".parse().unwrap(), state).unwrap();
    assert_eq!(request(handle.local_addr(), "GET", "/metrics", None, None).status, 503);
    let list = request(handle.local_addr(), "GET", "/v1/hitl", Some(&"s".repeat(40)), None);
    assert_eq!(list.status, 200);
    handle.shutdown();
}

#[test]
fn admin_tokens_are_strong_and_compared_by_digest() {
    assert!(AdminToken::from_secret("short").is_err());
    assert!(AdminToken::from_secret(&format!("{} x", "a".repeat(40))).is_err());
    let (token, secret) = AdminToken::generate().unwrap();
    assert_eq!(secret.len(), 64);
    assert!(token.verify(&secret));
    assert!(!token.verify(&secret[1..]));
    assert!(!format!("{token:?}").contains(&secret));
}

#[cfg(unix)]
mod dialog {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use aip_proxy_verifier::hitl::{DialogKind, DialogProgram};

    use super::*;

    fn fake_zenity(dir: &Path, script: &str) -> PromptMode {
        let path = dir.join("zenity");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        PromptMode::Dialog(DialogProgram {
            kind: DialogKind::Zenity,
            path,
        })
    }

    #[test]
    fn the_dialog_answers_yes_and_no() {
        let dir = tempfile::tempdir().unwrap();
        let args = dir.path().join("args");
        let yes = Server::start_with(
            &POLICY.replace("timeout_seconds: 1", "timeout_seconds: 30"),
            fake_zenity(
                dir.path(),
                &format!("printf '%s\\n' \"$@\" > {}\nexit 0", args.display()),
            ),
        );
        let (id, rx) = yes.hold("write_file");
        assert_eq!(outcome(&rx), HoldOutcome::Approved);
        let shown = std::fs::read_to_string(&args).unwrap();
        assert!(shown.contains("--question") && shown.contains("--no-markup"), "{shown}");
        assert!(shown.contains("Tool: write_file") && shown.contains(&id), "{shown}");
        assert!(shown.contains("Agent: agent-1"), "{shown}");
        yes.handle.shutdown();

        let no_dir = tempfile::tempdir().unwrap();
        let no = Server::start_with(POLICY, fake_zenity(no_dir.path(), "exit 1"));
        let (_, rx) = no.hold("write_file");
        assert_eq!(outcome(&rx), HoldOutcome::Denied);
        no.handle.shutdown();
    }

    #[test]
    fn a_failed_dialog_leaves_the_hold_to_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start_with(POLICY, fake_zenity(dir.path(), "exit 3"));
        let (_, rx) = server.hold("write_file");
        assert_eq!(outcome(&rx), HoldOutcome::TimedOut);
        server.handle.shutdown();
    }

    #[test]
    fn an_http_answer_closes_the_dialog() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let server = Server::start_with(
            &POLICY.replace("timeout_seconds: 1", "timeout_seconds: 30"),
            fake_zenity(dir.path(), &format!("echo $$ > {}\nexec sleep 30", pid_file.display())),
        );
        let (id, rx) = server.hold("write_file");
        let deadline = Instant::now() + Duration::from_secs(5);
        let pid = loop {
            if let Ok(pid) = std::fs::read_to_string(&pid_file)
                && !pid.trim().is_empty()
            {
                break pid.trim().to_owned();
            }
            assert!(Instant::now() < deadline, "the dialog did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(server.post(&format!("/v1/hitl/{id}/approve"), None).status, 200);
        assert_eq!(outcome(&rx), HoldOutcome::Approved);
        let proc_entry = Path::new("/proc").join(&pid);
        if Path::new("/proc/self").exists() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while proc_entry.exists() {
                assert!(Instant::now() < deadline, "the dialog {pid} was not killed");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        server.handle.shutdown();
    }
}
