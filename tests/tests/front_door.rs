//! `aip-proxy`'s Streamable HTTP front door (`--serve … --upstream …`) between unmodified MCP
//! SDK clients and a remote MCP server, nothing of ours on either side of it:
//! - a real `aip-ca serve` (SQLite) that registered the agent (for `echo`, `read_secret` and
//!   `delete_everything`) and exported its key;
//! - the remote server, built with the official MCP Python SDK and run as its own process
//!   (`tests/python/mcp_upstream_server.py`: Streamable HTTP, stateful sessions, SSE answers,
//!   no authorization of its own);
//! - `aip-proxy` with a policy allowing `echo`, `read_secret` and `admin_tool`, blocking
//!   `delete_everything`, redacting AWS keys, requiring AATs of the authority as Bearer tokens
//!   (`aat.require_proof: false`: the SDKs do not do DPoP) and following its revocations;
//! - as the client, the official Python SDK (`PrivateKeyJWTOAuthProvider`) or TypeScript SDK
//!   (`PrivateKeyJwtProvider`), driven one command at a time (`tests/python/front_door_client.py`,
//!   `tests/mcp/front-door-client.mjs`). Given the front door's URL and nothing about the
//!   authority's endpoints, each finds the authority from the 401, gets an AAT for the front
//!   door's resource URI and initializes a session.
//!
//! In that session `tools/list` shows policy ∩ AAT, an allowed call works, a blocked tool and a
//! tool outside the AAT are refused with JSON-RPC errors (and never reach the server), the
//! secret in an SSE answer arrives redacted, the server sees its own credential
//! (`--upstream-header`) and never the client's token, and once `aip-ca agents revoke` has returned the
//! next call is refused within a second, inside the session, which goes on answering. The audit
//! chain verifies, names the agent in the validation, the decisions and the revocation, and
//! holds neither the AAT nor the secret.
//!
//! Two more sessions: proofs required, with the Python SDK's stdio client in front of
//! `aip-agent --upstream` (every call bound by its DPoP proof); and a stdio server (the official
//! filesystem server) served over HTTP, one process per session, with a call held for approval.
//! And the resource URI: `--public-url` in the metadata and the challenge, TLS off loopback, a
//! conflicting `spec.aat.audience` refused.
//!
//! Peers: `python3 -m pip install -r tests/python/requirements.txt` and
//! `npm ci --prefix tests/mcp`. Without them a test reports itself skipped, naming what is
//! missing; under `CI` a missing peer fails it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aip_aat::jsonrpc::ErrorCode;
use aip_tests::{Agent, Authority, FrontDoor, Listening, Peer, aip_proxy, peers_ready, python, tests_dir};
use serde_json::{Value, json};

/// The AWS access key id `read_secret` answers with.
const SECRET: &str = "AKIAIOSFODNN7EXAMPLE";

/// The upstream's own credential, configured with `--upstream-header`.
const UPSTREAM_KEY: &str = "upstream-credential-of-the-proxy";

/// The tools the agent is registered for; `admin_tool` is not among them.
const CAPABILITIES: &str = "echo,read_secret,delete_everything";

/// An SDK client process, driven one JSON command per line.
struct Driver {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Driver {
    /// Runs `cmd` (stdin and stdout piped, stderr inherited).
    fn start(cmd: &mut Command) -> Self {
        let aip_tests::Piped { child, stdin, lines } = aip_tests::piped(cmd);
        Self { child, stdin, lines }
    }

    /// Sends `command`; the client's answer.
    fn ask(&mut self, command: &Value) -> Value {
        self.send(command);
        self.receive(command)
    }

    /// Sends `command` without waiting for its answer.
    fn send(&mut self, command: &Value) {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The answer to `command`, sent before.
    fn receive(&mut self, command: &Value) -> Value {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("no answer to {command} ({e}): did the client exit?"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// The tools `tools/list` shows, sorted.
    fn list(&mut self) -> Vec<String> {
        let answer = self.ask(&json!({"op": "list"}));
        assert_eq!(answer["ok"], true, "tools/list failed: {answer}");
        let mut names: Vec<String> = answer["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    }

    /// A `tools/call` of `tool` with `args`: the client's answer.
    fn call(&mut self, tool: &str, args: &Value) -> Value {
        self.ask(&json!({"op": "call", "tool": tool, "args": args}))
    }

    /// Ends the session; the client must then exit successfully.
    fn quit(mut self) {
        let answer = self.ask(&json!({"op": "quit"}));
        assert_eq!(answer["quit"], true, "{answer}");
        let exited = aip_tests::within(Duration::from_secs(20), || self.child.try_wait().unwrap().is_some());
        assert!(exited, "the client did not exit after quit");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the client exited with {status}");
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The texts of a call that succeeded (a tool result that is not an error).
fn texts(answer: &Value) -> Vec<String> {
    assert_eq!(answer["ok"], true, "the call failed: {answer}");
    assert_eq!(answer["is_error"], false, "the tool reported an error: {answer}");
    answer["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect()
}

/// The JSON-RPC error of a refused call.
fn refusal(answer: &Value) -> ErrorCode {
    assert_eq!(answer["ok"], false, "the call was not refused: {answer}");
    let code = answer["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("not a JSON-RPC error: {answer}"));
    i32::try_from(code)
        .ok()
        .and_then(ErrorCode::from_code)
        .unwrap_or_else(|| panic!("not one of the proxy's error codes: {answer}"))
}

/// Which SDK plays the client.
#[derive(Clone, Copy)]
enum Sdk {
    Python,
    TypeScript,
}

impl Sdk {
    /// Its driver, connecting to `url` as `agent`, expecting `issuer`.
    fn connect(self, url: &str, issuer: &str, agent: &Agent) -> Driver {
        let mut cmd = match self {
            Self::Python => {
                let mut cmd = Command::new(python());
                cmd.arg(tests_dir().join("python/front_door_client.py"));
                cmd
            }
            Self::TypeScript => {
                let mut cmd = Command::new("node");
                cmd.arg(tests_dir().join("mcp/front-door-client.mjs"));
                cmd
            }
        };
        cmd.args([url, issuer, agent.id.as_str()])
            .arg(&agent.pem)
            .arg(agent.alg);
        Driver::start(&mut cmd)
    }
}

/// The front door's policy: AATs of `authority` required (with DPoP proofs when `proofs`, else
/// as Bearer tokens), revocations followed through the event stream, `echo`, `read_secret` and
/// `admin_tool` allowed, `delete_everything` blocked, AWS keys redacted.
fn write_policy(authority: &Authority, path: &Path, proofs: bool) {
    std::fs::write(
        path,
        format!(
            "apiVersion: aip.io/v1alpha3
kind: AgentPolicy
metadata:
  name: front-door
spec:
  mode: enforce
  allowed_tools: [echo, read_secret, admin_tool]
  tool_rules:
    - tool: delete_everything
      action: block
  dlp:
    enabled: true
    patterns:
      - name: AWS Key
        regex: \"(AKIA)[A-Z0-9]{{16}}\"
  registry:
    enabled: true
    endpoint: \"{url}\"
    auth:
      type: bearer
      token: \"{reader}\"
    revocation:
      mode: cached
      check_interval: 1s
  aat:
    enabled: true
    require: true
    require_proof: {proofs}
    trusted_issuers: [\"{url}\"]
",
            url = authority.url,
            reader = authority.reader,
        ),
    )
    .unwrap();
}

/// The tools the upstream server was called for, in order.
fn upstream_calls(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// An authority with a registered agent (`CAPABILITIES`, its key exported), the upstream server
/// (its tool calls and the credentials of its requests logged) and the front door before it,
/// with the policy of [`write_policy`] and the upstream's own credential from a file.
struct Scene {
    authority: Authority,
    agent: Agent,
    /// The upstream's log of tool calls.
    calls: PathBuf,
    /// The upstream's log of the credentials of each request.
    headers: PathBuf,
    audit: PathBuf,
    upstream: Listening,
    proxy: FrontDoor,
}

impl Scene {
    fn start(agent_name: &str, alg: &str, proofs: bool) -> Self {
        let authority = Authority::start(None);
        let agent = authority.register(agent_name, alg, CAPABILITIES);
        let calls = authority.dir().join("upstream-calls.log");
        let headers = authority.dir().join("upstream-headers.log");
        let upstream = Listening::start(
            Command::new(python())
                .arg(tests_dir().join("python/mcp_upstream_server.py"))
                .arg(&calls)
                .arg(&headers),
        );
        let policy = authority.dir().join("front-door.yaml");
        write_policy(&authority, &policy, proofs);
        let audit = authority.dir().join("audit.jsonl");
        // The upstream's own credential, from a file: the one credential it may see.
        let key_file = authority.dir().join("upstream-key");
        std::fs::write(&key_file, format!("{UPSTREAM_KEY}\n")).unwrap();
        let proxy = FrontDoor::start(&[
            "--policy",
            policy.to_str().unwrap(),
            "--serve",
            "127.0.0.1:0",
            "--upstream",
            &upstream.url,
            "--upstream-header",
            &format!("X-Upstream-Key=file:{}", key_file.display()),
            "--audit",
            audit.to_str().unwrap(),
        ]);
        Self {
            authority,
            agent,
            calls,
            headers,
            audit,
            upstream,
            proxy,
        }
    }
}

/// The whole scenario, with `sdk` as the client and the agent's key of `alg`.
fn front_door_session(sdk: Sdk, alg: &str) {
    let Scene {
        authority,
        agent,
        calls,
        headers,
        audit,
        upstream: _upstream,
        proxy,
    } = Scene::start("front-door-agent", alg, false);

    // What the client discovers from: the metadata names the authority, character for
    // character as its issuer, and the front door's URL as the resource.
    let metadata_url = proxy
        .url
        .replacen("/mcp", "/.well-known/oauth-protected-resource/mcp", 1);
    let (status, body) = aip_tests::http_get(&metadata_url, None);
    assert_eq!(status, 200, "{metadata_url}: {body}");
    let metadata: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(metadata["resource"], proxy.url.as_str(), "{metadata}");
    assert_eq!(metadata["authorization_servers"], json!([authority.url]), "{metadata}");

    let mut client = sdk.connect(&proxy.url, &authority.url, &agent);

    // The AAT the SDK obtained by itself: a Bearer token of the authority, for this agent and
    // key, its audience the front door's resource URI, without `admin_tool`.
    let token = client.ask(&json!({"op": "token"}));
    assert_eq!(token["ok"], true, "{token}");
    assert!(
        token["token_type"].as_str().unwrap().eq_ignore_ascii_case("bearer"),
        "{token}"
    );
    let claims = &token["claims"];
    assert_eq!(claims["aud"], proxy.url.as_str(), "{claims}");
    assert_eq!(claims["iss"], authority.url.as_str(), "{claims}");
    assert_eq!(claims["sub"], agent.id.as_str(), "{claims}");
    assert_eq!(claims["cnf"]["jkt"], agent.key_id.as_str(), "{claims}");
    let granted: BTreeSet<&str> = claims["capabilities"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(
        granted.contains("echo") && granted.contains("read_secret") && !granted.contains("admin_tool"),
        "{claims}"
    );

    // tools/list: what the policy allows ∩ what the AAT grants.
    assert_eq!(client.list(), ["echo", "read_secret"]);

    // An allowed call.
    let said = "hello through the front door";
    assert_eq!(texts(&client.call("echo", &json!({"text": said}))), [said]);

    // A tool the policy blocks. The Python SDK asks for the scopes the challenge lists (the
    // tools the policy allows), so its AAT lacks the tool and that is checked first; the
    // TypeScript SDK asks for no scope and gets every tool of the agent, so the block refuses it.
    let blocked = client.call("delete_everything", &json!({}));
    let expected = if granted.contains("delete_everything") {
        ErrorCode::Forbidden
    } else {
        ErrorCode::CapabilityDenied
    };
    assert_eq!(refusal(&blocked), expected, "{blocked}");

    // A tool the policy allows but the AAT does not grant.
    let outside = client.call("admin_tool", &json!({}));
    assert_eq!(refusal(&outside), ErrorCode::CapabilityDenied, "{outside}");

    // The secret in the server's SSE answer arrives redacted, in the text and the structured
    // content alike.
    let secret = client.call("read_secret", &json!({}));
    let text = texts(&secret).join("\n");
    assert!(text.contains("[REDACTED:AWS Key]"), "{secret}");
    assert!(
        !secret.to_string().contains(SECRET),
        "the secret reached the client: {secret}"
    );

    // Only the allowed calls reached the server, with its own credential and never the AAT.
    assert_eq!(upstream_calls(&calls), ["echo", "read_secret"]);
    let seen: Vec<Value> = std::fs::read_to_string(&headers)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!seen.is_empty());
    for request in &seen {
        assert_eq!(
            request,
            &json!({"authorization": null, "dpop": null, "x-upstream-key": UPSTREAM_KEY}),
            "what the upstream received"
        );
    }

    // Revoked: the next call is refused within a second of the revocation, inside the session.
    authority.remote(&["agents", "revoke", &agent.id, "--reason", "end of the test", "--json"]);
    let revoked = Instant::now();
    let refused = loop {
        let answer = client.call("echo", &json!({"text": "still there?"}));
        if answer["ok"] == false {
            break answer;
        }
        assert!(
            revoked.elapsed() <= Duration::from_secs(1),
            "calls still pass {:?} after the revocation: {answer}",
            revoked.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = revoked.elapsed();
    eprintln!("the revocation refused the next call after {took:?}");
    assert!(took <= Duration::from_secs(1), "refused only after {took:?}: {refused}");
    assert_eq!(refusal(&refused), ErrorCode::AatInvalid, "{refused}");
    assert_eq!(refused["error"]["data"]["aat_error"], "aat_revoked", "{refused}");

    // The session survived: the client still gets answers, and its calls stay refused.
    let listed = client.ask(&json!({"op": "list"}));
    assert!(listed["ok"].is_boolean(), "{listed}");
    let again = client.call("echo", &json!({"text": "and now?"}));
    assert_eq!(refusal(&again), ErrorCode::AatInvalid, "{again}");
    client.quit();
    assert!(
        !upstream_calls(&calls)
            .iter()
            .any(|t| t == "delete_everything" || t == "admin_tool"),
        "{:?}",
        upstream_calls(&calls)
    );

    // The audit log: records naming the agent, a chain that verifies, no AAT and no secret.
    assert!(proxy.stop().is_some(), "aip-proxy did not stop on SIGTERM");
    let verified = Command::new(aip_proxy())
        .args(["audit", "verify", "--allow-unsigned"])
        .arg(&audit)
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    let log = std::fs::read_to_string(&audit).unwrap();
    for forbidden in ["eyJ", SECRET] {
        assert!(!log.contains(forbidden), "the audit log contains {forbidden:?}");
    }
    let records: Vec<Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let of_agent: Vec<&Value> = records.iter().filter(|r| r["agent_id"] == agent.id.as_str()).collect();
    let recorded = |what: &str, found: &dyn Fn(&Value) -> bool| {
        assert!(
            of_agent.iter().any(|r| found(r)),
            "no audit record of {what} names the agent:\n{log}"
        );
    };
    recorded("the validated AAT", &|r| r["event"] == "AAT_VALIDATED");
    recorded("the allowed read", &|r| {
        r["tool"] == "read_secret" && r["decision"] == "ALLOW"
    });
    for tool in ["delete_everything", "admin_tool"] {
        recorded(tool, &|r| r["tool"] == tool && r["decision"] == "BLOCK");
    }
    recorded("the revocation", &|r| {
        r["event"] == "AAT_REJECTED" && r["aat_error"] == "aat_revoked"
    });
    assert!(
        records.iter().any(|r| r["event"] == "DLP_TRIGGERED"),
        "no DLP record:\n{log}"
    );
}

#[test]
fn the_mcp_python_sdk_calls_a_remote_server_through_the_front_door() {
    if peers_ready(
        "the_mcp_python_sdk_calls_a_remote_server_through_the_front_door",
        &[Peer::Python],
    ) {
        front_door_session(Sdk::Python, "ed25519");
    }
}

#[test]
fn the_mcp_typescript_sdk_calls_a_remote_server_through_the_front_door() {
    if peers_ready(
        "the_mcp_typescript_sdk_calls_a_remote_server_through_the_front_door",
        &[Peer::Python, Peer::Node],
    ) {
        front_door_session(Sdk::TypeScript, "p256");
    }
}

/// Proofs required, and a client that only speaks stdio: the Python SDK's stdio client runs
/// `aip-agent --upstream`, which gets the AAT from the authority and sends every request to the
/// front door with `Authorization: DPoP` and a DPoP proof bound to the call. The same policy
/// holds as for the SDKs' Bearer sessions, and every call the audit log records was bound by
/// its proof (`proof: dpop_call`).
#[test]
fn a_stdio_client_calls_through_aip_agent_with_call_bound_dpop_proofs() {
    if !peers_ready(
        "a_stdio_client_calls_through_aip_agent_with_call_bound_dpop_proofs",
        &[Peer::Python],
    ) {
        return;
    }
    let Scene {
        authority,
        agent,
        calls,
        audit,
        upstream: _upstream,
        proxy,
        ..
    } = Scene::start("dpop-agent", "ed25519", true);
    let metadata_url = proxy
        .url
        .replacen("/mcp", "/.well-known/oauth-protected-resource/mcp", 1);
    let metadata: Value = serde_json::from_str(&aip_tests::http_get(&metadata_url, None).1).unwrap();
    assert_eq!(metadata["dpop_bound_access_tokens_required"], true, "{metadata}");

    let mut client = Driver::start(
        Command::new(python())
            .arg(tests_dir().join("python/front_door_client.py"))
            .arg("--stdio")
            .arg(aip_tests::aip_agent())
            .arg("--agent-dir")
            .arg(&agent.dir)
            .args([
                "--issuer",
                &authority.url,
                "--audience",
                &proxy.url,
                "--upstream",
                &proxy.url,
            ]),
    );
    assert_eq!(client.list(), ["echo", "read_secret"]);
    let said = "bound to this very call";
    assert_eq!(texts(&client.call("echo", &json!({"text": said}))), [said]);
    let secret = client.call("read_secret", &json!({}));
    assert!(texts(&secret).join("\n").contains("[REDACTED:AWS Key]"), "{secret}");
    assert!(!secret.to_string().contains(SECRET), "{secret}");
    let blocked = client.call("delete_everything", &json!({}));
    assert_eq!(refusal(&blocked), ErrorCode::Forbidden, "{blocked}");
    let outside = client.call("admin_tool", &json!({}));
    assert_eq!(refusal(&outside), ErrorCode::CapabilityDenied, "{outside}");
    client.quit();
    assert_eq!(upstream_calls(&calls), ["echo", "read_secret"]);

    assert!(proxy.stop().is_some(), "aip-proxy did not stop on SIGTERM");
    let log = std::fs::read_to_string(&audit).unwrap();
    assert!(!log.contains("eyJ"), "the audit log holds a token");
    let records: Vec<Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let tool_calls: Vec<&Value> = records
        .iter()
        .filter(|r| r["method"] == "tools/call" && r["agent_id"] == agent.id.as_str())
        .collect();
    assert_eq!(tool_calls.len(), 4, "{log}");
    for record in tool_calls {
        assert_eq!(record["proof"], "dpop_call", "{record}");
    }
    assert!(
        !records.iter().any(|r| r["event"] == "AAT_REJECTED"),
        "a DPoP request was refused:\n{log}"
    );
}

/// A stdio server served over HTTP (`--serve … --target`): the official filesystem server, one
/// process per MCP session, for two Python SDK clients at once (no AATs: the policy asks for
/// none). Each session sees the filtered tool list, reads what the policy allows, gets a secret
/// redacted and a write refused; a call the policy holds for approval waits until it is
/// approved over the HTTP API; a session's process stops when its client ends the session.
#[test]
fn a_stdio_server_is_served_over_http_one_process_per_session() {
    if !peers_ready(
        "a_stdio_server_is_served_over_http_one_process_per_session",
        &[Peer::Python, Peer::Node],
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let files = tmp.path().join("files");
    std::fs::create_dir(&files).unwrap();
    std::fs::write(files.join("notes.txt"), "hello from a file").unwrap();
    std::fs::write(files.join("secret.txt"), format!("key {SECRET}")).unwrap();
    let server = tests_dir().join("mcp/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js");
    let policy = tmp.path().join("stdio.yaml");
    std::fs::write(
        &policy,
        "apiVersion: aip.io/v1alpha3
kind: AgentPolicy
metadata:
  name: stdio-over-http
spec:
  allowed_tools: [read_text_file, list_allowed_directories]
  tool_rules:
    - tool: list_directory
      action: ask
  hitl:
    timeout_seconds: 60
    on_timeout: deny
  dlp:
    enabled: true
    patterns:
      - name: AWS Key
        regex: \"(AKIA)[A-Z0-9]{16}\"
",
    )
    .unwrap();
    let token = "front-door-approvals-token-0123456789abcdef";
    let token_file = tmp.path().join("api-token");
    std::fs::write(&token_file, token).unwrap();
    let api = format!("127.0.0.1:{}", aip_tests::free_port());
    let target = format!("node {} {}", server.display(), files.display());
    let proxy = FrontDoor::start(&[
        "--policy",
        policy.to_str().unwrap(),
        "--serve",
        "127.0.0.1:0",
        "--target",
        &target,
        "--no-prompt",
        "--listen",
        &api,
        "--token-file",
        token_file.to_str().unwrap(),
    ]);
    let servers = || {
        // Anchored: the proxy's own command line holds the target too.
        let out = Command::new("pgrep")
            .args(["-f", &format!("^{target}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    let connect = || {
        Driver::start(
            Command::new(python())
                .arg(tests_dir().join("python/front_door_client.py"))
                .args(["--anonymous", &proxy.url]),
        )
    };
    let (mut first, mut second) = (connect(), connect());
    for client in [&mut first, &mut second] {
        assert_eq!(
            client.list(),
            ["list_allowed_directories", "list_directory", "read_text_file"]
        );
        let path = files.join("notes.txt");
        let notes = client.call("read_text_file", &json!({"path": path}));
        assert_eq!(texts(&notes), ["hello from a file"]);
        let secret = client.call("read_text_file", &json!({"path": files.join("secret.txt")}));
        assert!(texts(&secret).join("").contains("[REDACTED:AWS Key]"), "{secret}");
        assert!(!secret.to_string().contains(SECRET), "{secret}");
        let write = client.call("write_file", &json!({"path": files.join("new.txt"), "content": "x"}));
        assert_eq!(refusal(&write), ErrorCode::Forbidden, "{write}");
    }
    assert!(!files.join("new.txt").exists(), "a refused write reached the server");
    // The decisions are counted in the metrics of the HTTP API, as on stdio.
    let (status, metrics) = aip_tests::http_get(&format!("http://{api}/metrics"), Some(token));
    assert_eq!(status, 200, "{metrics}");
    for counted in ["aip_decisions_total", "aip_violations_total"] {
        assert!(metrics.contains(counted), "{counted} missing:\n{metrics}");
    }
    assert_eq!(servers(), 2, "one server process per session");

    // A held call waits for its approval.
    let held = json!({"op": "call", "tool": "list_directory", "args": {"path": files}});
    second.send(&held);
    let holds = format!("http://{api}/v1/hitl");
    let mut hold_id = None;
    let appeared = aip_tests::within(Duration::from_secs(20), || {
        let (_, body) = aip_tests::http_get(&holds, Some(token));
        hold_id = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["holds"][0]["hold_id"].as_str().map(str::to_owned));
        hold_id.is_some()
    });
    assert!(appeared, "the call was not held for approval");
    let approve = Command::new("curl")
        .args(["-sS", "-X", "POST", "-H", &format!("Authorization: Bearer {token}")])
        .arg(format!("http://{api}/v1/hitl/{}/approve", hold_id.unwrap()))
        .output()
        .unwrap();
    assert!(approve.status.success());
    let listed = texts(&second.receive(&held)).join("\n");
    assert!(listed.contains("notes.txt"), "{listed}");

    // Ending a session stops its server.
    first.quit();
    let stopped = aip_tests::within(Duration::from_secs(10), || servers() == 1);
    assert!(
        stopped,
        "the ended session's server is still running ({} left)",
        servers()
    );
    second.quit();
    assert!(proxy.stop().is_some(), "aip-proxy did not stop on SIGTERM");
    assert_eq!(servers(), 0, "a server outlived the proxy");
}

/// Off loopback the front door needs TLS, and fronts only https servers (or loopback ones);
/// with a certificate it serves https (here checked with curl trusting that certificate), and
/// as an upstream it is reached only by a front door told to trust its CA (`--upstream-ca`).
#[test]
fn off_loopback_the_front_door_needs_tls_and_serves_it() {
    if !peers_ready("off_loopback_the_front_door_needs_tls_and_serves_it", &[Peer::Python]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let policy = tmp.path().join("plain.yaml");
    std::fs::write(
        &policy,
        "apiVersion: aip.io/v1alpha3\nkind: AgentPolicy\nmetadata:\n  name: tls\nspec:\n  allowed_tools: [echo]\n",
    )
    .unwrap();
    let policy = policy.to_str().unwrap();
    let refused = |args: &[&str], why: &str| {
        let out = Command::new(aip_proxy())
            .args(["--policy", policy])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(why), "{args:?}: {stderr}");
    };
    let loopback_upstream = "http://127.0.0.1:9/mcp";
    refused(&["--serve", "0.0.0.0:0", "--upstream", loopback_upstream], "needs TLS");
    refused(
        &["--serve", "127.0.0.1:0", "--upstream", "http://tools.example/mcp"],
        "use https",
    );
    refused(
        &[
            "--serve",
            "127.0.0.1:0",
            "--upstream",
            loopback_upstream,
            "--public-url",
            "http://tools.example/mcp",
        ],
        "https off loopback",
    );
    refused(
        &[
            "--serve",
            "127.0.0.1:0",
            "--upstream",
            loopback_upstream,
            "--upstream-header",
            "Authorization=Bearer x",
        ],
        "never the command line",
    );

    let (cert, key) = (tmp.path().join("front.pem"), tmp.path().join("front.key"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-addext",
            // A server certificate (rustls refuses a CA certificate as one).
            "basicConstraints=critical,CA:FALSE",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let upstream = Listening::start(Command::new(python()).arg(tests_dir().join("python/mcp_upstream_server.py")));
    let proxy = FrontDoor::start(&[
        "--policy",
        policy,
        "--serve",
        "127.0.0.1:0",
        "--upstream",
        &upstream.url,
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert!(proxy.url.starts_with("https://127.0.0.1:"), "{}", proxy.url);
    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "curl", "version": "1"}}
    });
    // A client trusting the certificate initializes a session.
    let answer = curl_initialize(&proxy.url, Some(&cert), &initialize);
    assert!(answer.to_ascii_lowercase().contains("mcp-session-id:"), "{answer}");
    assert!(answer.contains("\"protocolVersion\""), "{answer}");

    // As an upstream over https, that front door is verified: against the configured CA it
    // is reached; against the system roots, which do not hold its certificate, it is not, and
    // the client gets a JSON-RPC error instead of an answer.
    let trusting = FrontDoor::start(&[
        "--policy",
        policy,
        "--serve",
        "127.0.0.1:0",
        "--upstream",
        &proxy.url,
        "--upstream-ca",
        cert.to_str().unwrap(),
    ]);
    let answer = curl_initialize(&trusting.url, None, &initialize);
    assert!(answer.contains("\"protocolVersion\""), "{answer}");
    let wary = FrontDoor::start(&["--policy", policy, "--serve", "127.0.0.1:0", "--upstream", &proxy.url]);
    let answer = curl_initialize(&wary.url, None, &initialize);
    assert!(!answer.contains("\"protocolVersion\""), "{answer}");
    assert!(answer.contains("-32603"), "{answer}");
}

/// POSTs `initialize` to `url` with curl (trusting `ca` when given): the answer's head and body.
fn curl_initialize(url: &str, ca: Option<&Path>, initialize: &Value) -> String {
    let mut curl = Command::new("curl");
    curl.args(["-sS", "--max-time", "20"]);
    if let Some(ca) = ca {
        curl.arg("--cacert").arg(ca);
    }
    let out = curl
        .args([
            "-H",
            "Content-Type: application/json",
            "-H",
            "Accept: application/json, text/event-stream",
        ])
        .args(["-D", "-", "--data-binary"])
        .arg(initialize.to_string())
        .arg(url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Behind a load balancer: `--public-url` names the resource URI — announced, named in the
/// metadata (published under its own path too) and in the 401's challenge — and a policy whose
/// `spec.aat.audience` names something else is refused at start.
#[test]
fn the_public_url_is_the_resource_and_a_conflicting_audience_is_refused() {
    let authority = Authority::start(None);
    let policy = authority.dir().join("front-door.yaml");
    write_policy(&authority, &policy, false);
    let policy = policy.to_str().unwrap();
    let port = aip_tests::free_port();
    let public = format!("http://localhost:{port}/tools/mcp");
    let serve = format!("127.0.0.1:{port}");
    let upstream = "http://127.0.0.1:9/mcp";
    let proxy = FrontDoor::start(&[
        "--policy",
        policy,
        "--serve",
        &serve,
        "--upstream",
        upstream,
        "--public-url",
        &public,
    ]);
    assert_eq!(proxy.url, public);
    let expected_metadata = format!("http://localhost:{port}/.well-known/oauth-protected-resource/tools/mcp");
    let (status, body) = aip_tests::http_get(
        &format!("http://{serve}/.well-known/oauth-protected-resource/tools/mcp"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let metadata: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(metadata["resource"], public.as_str(), "{metadata}");
    let out = Command::new("curl")
        .args([
            "-sS",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-H",
            "Content-Type: application/json",
        ])
        .args(["--data-binary", "{}"])
        .arg(format!("http://{serve}/mcp"))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(
        head.contains(&format!("Bearer resource_metadata=\"{expected_metadata}\"")),
        "{head}"
    );
    drop(proxy);

    let conflicting = authority.dir().join("conflicting.yaml");
    let text = std::fs::read_to_string(policy)
        .unwrap()
        .replace("    require: true\n", "    require: true\n    audience: files-proxy\n");
    std::fs::write(&conflicting, text).unwrap();
    let refused = Command::new(aip_proxy())
        .args(["--policy", conflicting.to_str().unwrap(), "--serve", "127.0.0.1:0"])
        .args(["--upstream", upstream])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("spec.aat.audience"), "{stderr}");
}

/// `POST` a JSON-RPC `body` to the front door at `url` with `Authorization: DPoP token` and
/// `proof`, with curl: the HTTP status and the `WWW-Authenticate` challenges, one per line.
fn post_with_dpop(url: &str, token: &str, proof: &str, body: &Value) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-o", "/dev/null", "-D", "-"])
        .args(["-X", "POST"])
        .args(["-H", &format!("Authorization: DPoP {token}")])
        .args(["-H", &format!("DPoP: {proof}")])
        .args(["-H", "Content-Type: application/json"])
        .args(["-H", "Accept: application/json, text/event-stream"])
        .args(["--data-binary", &body.to_string()])
        .arg(url)
        .output()
        .unwrap();
    let head = String::from_utf8(out.stdout).unwrap();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let challenges = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(name, _)| name.eq_ignore_ascii_case("www-authenticate"))
        .map(|(_, value)| value.trim())
        .collect::<Vec<_>>()
        .join("\n");
    (status, challenges)
}

/// A delegated AAT over HTTP: agent A asks for the delegable form of its AAT for the front
/// door, hands `echo` to sub-agent B with `aip-ca delegate`, and B's unmodified stdio client
/// (the Python SDK's) calls through `aip-agent --delegation-file … --upstream`, every request
/// carrying the chain as `Authorization: DPoP` and a proof by B's key bound to its call. B sees
/// and calls `echo` only (the chain's narrowing), a DPoP proof by A's key on B's token is
/// refused before anything reaches the server, and once `aip-ca delegations revoke` has
/// returned with the revocation id of A's step, B's next call is refused within a second. The
/// audit records name the chain, and every call was bound by its proof.
#[test]
fn a_sub_agent_calls_with_a_delegated_aat_and_dpop_proofs_by_its_own_key() {
    if !peers_ready(
        "a_sub_agent_calls_with_a_delegated_aat_and_dpop_proofs_by_its_own_key",
        &[Peer::Python],
    ) {
        return;
    }
    let Scene {
        authority,
        agent: a,
        calls,
        audit,
        upstream: _upstream,
        proxy,
        ..
    } = Scene::start("delegating-agent", "ed25519", true);
    let b = authority.register("sub-agent", "p256", "echo,read_secret");
    let held = aip_tests::ok(aip_tests::run(&[
        "token",
        "--issuer",
        &authority.url,
        "--audience",
        &proxy.url,
        "--agent-dir",
        a.dir.to_str().unwrap(),
        "--token-format",
        "aat+biscuit",
    ]));
    let held_file = authority.dir().join("a.aat");
    std::fs::write(&held_file, held.trim()).unwrap();
    let b_file = authority.dir().join("b.aat");
    aip_tests::ok(aip_tests::run(&[
        "delegate",
        "--agent-dir",
        a.dir.to_str().unwrap(),
        "--from",
        held_file.to_str().unwrap(),
        "--to",
        b.dir.join("agent.json").to_str().unwrap(),
        "--tools",
        "echo",
        "--ttl",
        "600",
        "--out",
        b_file.to_str().unwrap(),
        "--registry",
        &authority.url,
        "--token",
        &authority.admin,
    ]));
    let b_token = std::fs::read_to_string(&b_file).unwrap().trim().to_owned();

    let mut client = Driver::start(
        Command::new(python())
            .arg(tests_dir().join("python/front_door_client.py"))
            .arg("--stdio")
            .arg(aip_tests::aip_agent())
            .arg("--agent-dir")
            .arg(&b.dir)
            .args(["--audience", &proxy.url, "--upstream", &proxy.url, "--delegation-file"])
            .arg(&b_file),
    );
    assert_eq!(client.list(), ["echo"]);
    let said = "handed on by a delegator";
    assert_eq!(texts(&client.call("echo", &json!({"text": said}))), [said]);
    let outside = client.call("read_secret", &json!({}));
    assert_eq!(refusal(&outside), ErrorCode::CapabilityDenied, "{outside}");

    // A DPoP proof by A's key on B's token: refused at the door.
    let a_key = aip_aat::keys::KeyPair::from_pkcs8_pem(&std::fs::read_to_string(&a.pem).unwrap()).unwrap();
    let request = aip_aat::dpop::DpopRequest {
        method: "POST",
        uri: &proxy.url,
        access_token: Some(&b_token),
    };
    let now = aip_aat::clock::Clock::now(&aip_aat::clock::SystemClock);
    let wrong = aip_aat::dpop::create_dpop_proof(&a_key, &request, now).unwrap();
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "thief", "version": "1"}}});
    let (status, challenge) = post_with_dpop(&proxy.url, &b_token, &wrong, &initialize);
    assert_eq!(status, 401, "{challenge}");
    assert!(
        challenge.contains("error=\"invalid_dpop_proof\"") && challenge.contains("does not match this call: Key"),
        "{challenge}"
    );

    // Revoking A's step to B by its revocation id.
    let (_, jwks) = aip_tests::http_get(&format!("{}/v1/jwks", authority.url), None);
    let roots = aip_aat::delegation::issuer_roots(&serde_json::from_str(&jwks).unwrap());
    let chain = aip_aat::delegation::verify(&b_token, &roots, now, 3).unwrap();
    let step = chain.revocation_ids().nth(1).unwrap().to_owned();
    let revoked = authority.remote(&["delegations", "revoke", &step, "--json"]);
    assert_eq!(revoked["revoked"], "delegation", "{revoked}");
    let since = Instant::now();
    let refused = loop {
        let answer = client.call("echo", &json!({"text": "still?"}));
        if answer["ok"] == false {
            break answer;
        }
        assert!(
            since.elapsed() < Duration::from_secs(1),
            "still accepted after {:?}",
            since.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        since.elapsed() < Duration::from_secs(1),
        "refused after {:?}",
        since.elapsed()
    );
    assert!(refused.to_string().to_lowercase().contains("revoked"), "{refused}");
    client.quit();
    assert_eq!(upstream_calls(&calls).first().map(String::as_str), Some("echo"));
    assert!(!upstream_calls(&calls).iter().any(|c| c == "read_secret"));

    assert!(proxy.stop().is_some(), "aip-proxy did not stop on SIGTERM");
    let log = std::fs::read_to_string(&audit).unwrap();
    assert!(!log.contains(&b_token), "the audit log holds a token");
    let records: Vec<Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let first = records
        .iter()
        .find(|r| r["method"] == "tools/call" && r["agent_id"] == b.id.as_str())
        .unwrap_or_else(|| panic!("no call of B in\n{log}"));
    assert_eq!(first["delegation_chain"], json!([a.id, b.id]), "{first}");
    assert_eq!(first["proof"], "dpop_call", "{first}");
}
