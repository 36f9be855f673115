//! Logs for machines, from the real processes with stderr a pipe:
//! - `aip-ca serve --log-format json` (at `AIP_LOG=debug`, everything it logs): every line
//!   is one JSON object; each request's lines carry its request id — the client's
//!   `X-Request-Id` when it is a short visible-ASCII one, echoed in the response, else one the
//!   authority made — and a refused request is logged with its status; no line holds an ESC
//!   byte, a wrong bearer token, the admin token that worked, or a secret from a query string
//!   or a body. The same authority with text logs writes no ESC either, and names the request
//!   id.
//! - `aip-proxy --serve` with `AIP_LOG_FORMAT=json`: every line, its start notice and its
//!   last words at SIGTERM included, is a JSON object without ESC, and neither the wrong token
//!   sent to it nor the registry credential of its policy appears.
//! - `aip-agent --log-format json` that cannot start: its one error line is a JSON `ERROR`
//!   event, where text logs have `error:` and `hint:` lines.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aip_tests::{Authority, aip_agent, aip_proxy, command, free_port, init_authority, isolated, within};
use serde_json::Value;

/// A bearer token that is not the authority's (shaped like one).
const WRONG_TOKEN: &str = "aip_at_wrongsecret7f3c9e2b41d8a6050";
/// A secret in a query string.
const QUERY_SECRET: &str = "querysecret9d41c0a7";
/// A secret in a request body.
const BODY_SECRET: &str = "bodysecret5be2f81c";

/// A child whose stderr lines are collected as they come.
struct Logged {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Logged {
    fn spawn(cmd: &mut Command, name: &'static str) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let collected = Arc::clone(&lines);
        std::thread::spawn(move || {
            // Bytes, not text: an ESC or invalid UTF-8 must reach the checks as it was.
            for line in BufReader::new(stderr).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8(line).unwrap_or_else(|e| panic!("{name}: not UTF-8: {e}"));
                eprintln!("[{name}] {line}");
                collected.lock().unwrap().push(line);
            }
        });
        Self { child, lines }
    }

    fn has_line(&self, needle: &str) -> bool {
        self.lines.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// Sends SIGTERM, waits for the exit and for the last lines; every line.
    fn stop(mut self) -> Vec<String> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let exited = within(Duration::from_secs(15), || self.child.try_wait().unwrap().is_some());
        if !exited {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        assert!(exited, "did not stop within 15 s of SIGTERM");
        // The reader thread ends at the pipe's end, shortly after the exit.
        std::thread::sleep(Duration::from_millis(200));
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer: status, headers (names in lower case), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Sends a request with curl: `args` are curl's (method, headers, data), then the URL.
fn curl(url: &str, args: &[&str]) -> Answer {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "/dev/null", "-D", "-"])
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    let head = String::from_utf8(output.stdout).unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no answer from {url}: {head}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer { status, headers }
}

/// Every line parsed as a JSON object (a panic naming the first that is not), after checking
/// that none holds an ESC byte or any of `secrets`.
fn json_lines(lines: &[String], secrets: &[&str]) -> Vec<Value> {
    assert!(!lines.is_empty(), "nothing was logged");
    clean(lines, secrets);
    lines
        .iter()
        .map(|line| {
            let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            assert!(value.is_object(), "not an object: {line}");
            assert!(value["level"].is_string() && value["timestamp"].is_string(), "{line}");
            value
        })
        .collect()
}

/// No line holds an ESC byte or any of `secrets`.
fn clean(lines: &[String], secrets: &[&str]) {
    for line in lines {
        assert!(!line.contains('\u{1b}'), "an ESC byte: {line:?}");
        for secret in secrets {
            assert!(!line.contains(secret), "a secret was logged: {line}");
        }
    }
}

/// The lines logged in the `request` span whose id is `id`.
fn of_request<'a>(lines: &'a [Value], id: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| {
            l["span"]["request_id"] == id
                || l["spans"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| s["request_id"] == id))
        })
        .collect()
}

/// `aip-ca serve` of the authority in `dir`, with `AIP_LOG=debug` and `extra` flags; returns
/// once `/health` answers.
fn serve(dir: &Path, url: &str, extra: &[&str]) -> Logged {
    let server = Logged::spawn(
        command()
            .args(["serve", "--dir", dir.to_str().unwrap()])
            .args(extra)
            .env("AIP_LOG", "debug"),
        "aip-ca serve",
    );
    let up = within(Duration::from_secs(60), || {
        Command::new("curl")
            .args(["-sf", "--max-time", "2", "-o", "/dev/null"])
            .arg(format!("{url}/health"))
            .status()
            .is_ok_and(|s| s.success())
    });
    assert!(up, "aip-ca serve did not answer on {url}");
    server
}

#[test]
fn the_authoritys_json_logs_are_one_object_a_line_with_request_ids_and_no_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("aip");
    let listen = format!("127.0.0.1:{}", free_port());
    let url = format!("http://{listen}");
    let admin = init_authority(&dir, &["--listen", &listen]);
    let secrets = [WRONG_TOKEN, admin.as_str(), QUERY_SECRET, BODY_SECRET];

    let server = serve(&dir, &url, &["--log-format", "json"]);
    let health = curl(&format!("{url}/health"), &["-H", "X-Request-Id: ops-health-1"]);
    assert_eq!(health.status, 200);
    assert_eq!(health.header("x-request-id"), Some("ops-health-1"));

    let bearer = format!("Authorization: Bearer {WRONG_TOKEN}");
    let refused = curl(
        &format!("{url}/v1/agents"),
        &["-H", &bearer, "-H", "X-Request-Id: ops-refused-2"],
    );
    assert_eq!(refused.status, 401);
    assert_eq!(refused.header("x-request-id"), Some("ops-refused-2"));

    let admin_bearer = format!("Authorization: Bearer {admin}");
    let listed = curl(&format!("{url}/v1/agents"), &["-H", &admin_bearer]);
    assert_eq!(listed.status, 200);
    let made = listed.header("x-request-id").unwrap().to_owned();
    assert!(
        made.len() == 32 && made.bytes().all(|b| b.is_ascii_hexdigit()),
        "{made}"
    );

    let body = format!(r#"{{"user_id":"mallory","api_key":"{BODY_SECRET}"}}"#);
    let posted = curl(
        &format!("{url}/v1/users"),
        &[
            "-H",
            &bearer,
            "-H",
            "Content-Type: application/json",
            "-H",
            "X-Request-Id: ops-body-3",
            "--data",
            &body,
        ],
    );
    assert!(matches!(posted.status, 400 | 401), "{}", posted.status);

    let callback = curl(
        &format!("{url}/oauth/callback?code={QUERY_SECRET}&state=x"),
        &["-H", "X-Request-Id: not visible ascii"],
    );
    let replaced = callback.header("x-request-id").unwrap().to_owned();
    assert_eq!(replaced.len(), 32, "an id with spaces is replaced: {replaced}");

    let lines = server.stop();
    let logged = json_lines(&lines, &secrets);
    assert!(
        logged
            .iter()
            .any(|l| l["message"] == "listening" && l["address"] == url.as_str()),
        "no listening line"
    );
    for (id, status) in [
        ("ops-health-1", 200),
        ("ops-refused-2", 401),
        (made.as_str(), 200),
        ("ops-body-3", posted.status),
    ] {
        let request = of_request(&logged, id);
        assert!(
            request.iter().any(|l| l["status"] == status),
            "no line of request {id} with status {status}: {request:?}"
        );
    }
    let refused_line = of_request(&logged, "ops-refused-2")
        .into_iter()
        .find(|l| l["status"] == 401)
        .unwrap();
    assert_eq!(refused_line["level"], "INFO", "{refused_line}");
    assert_eq!(refused_line["span"]["path"], "/v1/agents", "{refused_line}");
    assert_eq!(refused_line["span"]["method"], "GET", "{refused_line}");
    let callback_lines = of_request(&logged, &replaced);
    assert!(
        !callback_lines.is_empty(),
        "the callback's lines carry the id it was given"
    );
    assert!(
        callback_lines.iter().all(|l| l["span"]["path"] == "/oauth/callback"),
        "{callback_lines:?}"
    );
    assert!(logged.iter().any(|l| l["message"] == "stopped"), "no last line");

    // Text logs through a pipe: no colours, the request id named.
    let server = serve(&dir, &url, &[]);
    let refused = curl(
        &format!("{url}/v1/agents"),
        &["-H", &bearer, "-H", "X-Request-Id: ops-text-4"],
    );
    assert_eq!(refused.status, 401);
    assert!(within(Duration::from_secs(5), || server.has_line("ops-text-4")));
    let lines = server.stop();
    clean(&lines, &secrets);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("request_id=ops-text-4") && l.contains("status=401")),
        "{lines:?}"
    );
    assert!(
        lines.iter().all(|l| serde_json::from_str::<Value>(l).is_err()),
        "text, not JSON"
    );
}

#[test]
fn the_proxys_json_logs_are_one_object_a_line_without_secrets() {
    let authority = Authority::start(None);
    let policy = authority.dir().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: aip.io/v1alpha3
kind: AgentPolicy
metadata:
  name: machine-logs
spec:
  allowed_tools: [echo]
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
    require_proof: false
    trusted_issuers: [\"{url}\"]
",
            url = authority.url,
            reader = authority.reader,
        ),
    )
    .unwrap();
    let port = free_port();
    let proxy = Logged::spawn(
        isolated(aip_proxy())
            .arg("--policy")
            .arg(&policy)
            .args(["--serve", &format!("127.0.0.1:{port}"), "--target", "cat", "--verbose"])
            .env("AIP_LOG_FORMAT", "json")
            .env("AIP_LOG", "debug"),
        "aip-proxy",
    );
    assert!(
        within(Duration::from_secs(60), || proxy.has_line("MCP front door at")),
        "the front door did not start"
    );
    let mcp = format!("http://127.0.0.1:{port}/mcp");
    let bearer = format!("Authorization: Bearer {WRONG_TOKEN}");
    let initialize = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#;
    for _ in 0..2 {
        let refused = curl(
            &mcp,
            &[
                "-H",
                &bearer,
                "-H",
                "Content-Type: application/json",
                "-H",
                "Accept: application/json, text/event-stream",
                "--data",
                initialize,
            ],
        );
        assert_eq!(refused.status, 401);
    }
    let lines = proxy.stop();
    let logged = json_lines(&lines, &[WRONG_TOKEN, authority.reader.as_str()]);
    let notice = logged
        .iter()
        .find(|l| l["message"].as_str().is_some_and(|m| m.contains("MCP front door at")))
        .unwrap();
    assert_eq!(notice["target"], "aip::notice", "{notice}");
    assert!(notice["message"].as_str().unwrap().contains(&mcp), "{notice}");
}

#[test]
fn aip_agents_error_is_a_json_line_in_json_logs() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-agent");
    let run = |format: &str| {
        isolated(aip_agent())
            .arg("--agent-dir")
            .arg(&missing)
            .args(["--audience", "files-proxy", "--log-format", format, "--", "cat"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let json = run("json");
    assert_eq!(json.status.code(), Some(1));
    let lines: Vec<String> = String::from_utf8(json.stderr)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let logged = json_lines(&lines, &[]);
    assert_eq!(logged.len(), 1, "{lines:?}");
    assert_eq!(logged[0]["level"], "ERROR", "{lines:?}");
    assert_eq!(logged[0]["target"], "aip::notice", "{lines:?}");
    assert!(
        logged[0]["message"].as_str().unwrap().contains("no-such-agent"),
        "{lines:?}"
    );

    let text = run("text");
    assert_eq!(text.status.code(), Some(1));
    let text = String::from_utf8(text.stderr).unwrap();
    assert!(text.starts_with("error: ") && text.contains("no-such-agent"), "{text}");
}
