//! Revocation-to-refusal latency, end to end with real processes: a real `aip-ca serve`
//! (SQLite), a real `aip-proxy` in `cached` revocation mode (it follows the registry's event
//! stream) in front of a fake MCP server, and one autonomous agent per revocation.
//!
//! For each agent: one call is allowed; `aip-ca agents revoke` runs, and t0 is the instant it
//! returns (the revocation is committed); then calls with a fresh proof each go through the
//! proxy one at a time, with no pause, until one is refused with -32016 `aat_revoked`. The
//! latency is that refusal's arrival minus t0. Calls still allowed after t0 are counted; a
//! refusal that does not come within 10 s fails the run. One warm-up revocation, not counted,
//! comes first, so the first sample does not include connecting the event stream.
//!
//! ```text
//! cargo bench -p aip-tests --bench revocation
//! AIP_BENCH_REVOCATIONS=1000 cargo bench -p aip-tests --bench revocation
//! ```
//! Prints two lines: the latency figures, then how long the revoke command itself took
//! (process start included; the commit happens within it, before t0).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::time::{Duration, Instant};

use aip_aat::clock::{Clock as _, SystemClock};
use aip_aat::keys::KeyPair;
use aip_aat::proof::{Call, create_proof};
use aip_tests::{Server, aip_proxy, isolated, ok, run};
use serde_json::{Value, json};

/// The proxy's audience (`metadata.name`), which every AAT names.
const AUDIENCE: &str = "bench-revocation";
const TOOL: &str = "read_file";
/// Longest wait for the refusal after a revocation.
const GIVE_UP: Duration = Duration::from_secs(10);

/// A registered agent with its AAT and its key, to sign a proof for every call.
struct Agent {
    id: String,
    key: KeyPair,
    aat: String,
}

/// What the proxy answered to a call.
enum Answer {
    Allowed,
    Revoked,
}

/// `aip-proxy` with its stdin and stdout piped, sent one call at a time.
struct Proxy {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
    next_id: u64,
}

impl Proxy {
    fn start(policy: &Path, target: &str) -> Self {
        let mut child = isolated(aip_proxy())
            .arg("--policy")
            .arg(policy)
            .args(["--target", target])
            .env("AIP_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let input = child.stdin.take().unwrap();
        let output = BufReader::new(child.stdout.take().unwrap());
        Self {
            child,
            input,
            output,
            next_id: 0,
        }
    }

    /// One `tools/call` of `agent`, with a fresh proof; whether it was allowed or refused as
    /// revoked (anything else fails the run).
    fn call(&mut self, agent: &Agent) -> Answer {
        self.next_id += 1;
        let id = self.next_id;
        let arguments = json!({"path": "/tmp/bench-revocation"});
        let proof = create_proof(
            &agent.key,
            &agent.aat,
            &Call::tools_call(TOOL, Some(&arguments)),
            AUDIENCE,
            SystemClock.now(),
        )
        .unwrap();
        let request = json!({
            "jsonrpc": "2.0",
            "id": id,
            "method": "tools/call",
            "params": {"name": TOOL, "arguments": arguments, "_aip_aat": agent.aat, "_aip_proof": proof},
        });
        writeln!(self.input, "{request}").unwrap();
        self.input.flush().unwrap();
        let answer = self.answer_to(id);
        if answer.get("result").is_some() {
            return Answer::Allowed;
        }
        let error = &answer["error"];
        assert!(
            error["code"] == -32016 && error["data"]["aat_error"] == "aat_revoked",
            "agent {}: unexpected answer {answer}",
            agent.id
        );
        Answer::Revoked
    }

    /// The next message with `id`, skipping anything else the proxy writes.
    fn answer_to(&mut self, id: u64) -> Value {
        loop {
            let mut line = String::new();
            let read = self.output.read_line(&mut line).unwrap();
            assert!(read > 0, "aip-proxy exited before answering call {id}");
            let message: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            if message["id"] == id {
                return message;
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Registers an autonomous agent that may call [`TOOL`], fetches its AAT and loads its key.
fn register(server: &Server, admin: &str, dir: &Path, n: u64) -> Agent {
    let agent_dir = dir.join(format!("agent-{n}"));
    let agent_dir_str = agent_dir.to_str().unwrap();
    let registered: Value = serde_json::from_str(&ok(run(&[
        "register-agent",
        "--name",
        &format!("bench agent {n}"),
        "--capabilities",
        TOOL,
        "--autonomous",
        "--out-dir",
        agent_dir_str,
        "--insecure-no-passphrase",
        "--json",
        "--registry",
        &server.url,
        "--token",
        admin,
    ])))
    .unwrap();
    let issued: Value = serde_json::from_str(&ok(run(&[
        "token",
        "--agent-dir",
        agent_dir_str,
        "--audience",
        AUDIENCE,
        "--tools",
        TOOL,
        "--issuer",
        &server.url,
        "--json",
    ])))
    .unwrap();
    Agent {
        id: registered["agent_id"].as_str().unwrap().to_owned(),
        key: aip_aat::keyfile::read(&agent_dir.join("agent.key"), None).unwrap(),
        aat: issued["aat"].as_str().unwrap().to_owned(),
    }
}

/// One revocation: (revoke command's duration, revocation-to-refusal latency, calls allowed
/// after the commit).
fn revoke_and_wait(proxy: &mut Proxy, server: &Server, admin: &str, agent: &Agent) -> (Duration, Duration, u64) {
    assert!(
        matches!(proxy.call(agent), Answer::Allowed),
        "agent {} refused before its revocation",
        agent.id
    );
    let started = Instant::now();
    ok(run(&[
        "agents",
        "revoke",
        &agent.id,
        "--reason",
        "revocation benchmark",
        "--registry",
        &server.url,
        "--token",
        admin,
    ]));
    let committed = Instant::now();
    let mut allowed = 0;
    loop {
        match proxy.call(agent) {
            Answer::Revoked => return (committed - started, committed.elapsed(), allowed),
            Answer::Allowed => allowed += 1,
        }
        assert!(
            committed.elapsed() < GIVE_UP,
            "agent {} still allowed {:?} after its revocation ({allowed} calls)",
            agent.id,
            committed.elapsed()
        );
    }
}

/// The nearest-rank `p`-quantile of `sorted`, in milliseconds.
fn quantile_ms(sorted: &[Duration], p: f64) -> f64 {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1e3
}

fn main() {
    let revocations: u64 = std::env::var("AIP_BENCH_REVOCATIONS")
        .ok()
        .map_or(100, |v| v.parse().expect("AIP_BENCH_REVOCATIONS must be a count"));
    assert!(revocations > 0, "AIP_BENCH_REVOCATIONS must be at least 1");
    let tmp = tempfile::tempdir().unwrap();
    let authority = tmp.path().join("aip");
    let server = Server::start(&["--dir", authority.to_str().unwrap(), "--insecure-no-passphrase"]);
    let admin = server.admin_token();
    let reader: Value = serde_json::from_str(&ok(run(&[
        "access-token",
        "create",
        "--role",
        "reader",
        "--json",
        "--registry",
        &server.url,
        "--token",
        &admin,
    ])))
    .unwrap();
    let reader_token = reader["token"].as_str().unwrap();

    // Agent 0 is the warm-up.
    let agents: Vec<Agent> = (0..=revocations)
        .map(|n| register(&server, &admin, tmp.path(), n))
        .collect();

    let policy = tmp.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: aip.io/v1alpha3\nkind: AgentPolicy\nmetadata:\n  name: {AUDIENCE}\nspec:\n  mode: enforce\n  \
             allowed_tools: [{TOOL}]\n  registry:\n    enabled: true\n    endpoint: \"{url}\"\n    revocation:\n      \
             mode: cached\n      check_interval: 30s\n    auth:\n      type: bearer\n      token: \"{reader_token}\"\n  \
             aat:\n    enabled: true\n    require: true\n",
            url = server.url,
        ),
    )
    .unwrap();
    let echo = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fakes/mcp_echo.py");
    let target = format!(
        "python3 -u '{}' '{}'",
        echo.display(),
        tmp.path().join("mcp.log").display()
    );
    let mut proxy = Proxy::start(&policy, &target);

    let (warm_up, measured) = agents.split_first().unwrap();
    revoke_and_wait(&mut proxy, &server, &admin, warm_up);
    let mut commands = Vec::new();
    let mut latencies = Vec::new();
    let mut allowed_after_commit = 0;
    for agent in measured {
        let (command, latency, allowed) = revoke_and_wait(&mut proxy, &server, &admin, agent);
        commands.push(command);
        latencies.push(latency);
        allowed_after_commit += allowed;
    }
    drop(proxy);
    drop(server);

    latencies.sort();
    commands.sort();
    let mean_ms = latencies.iter().sum::<Duration>().as_secs_f64() * 1e3 / latencies.len() as f64;
    println!(
        "revocations={revocations} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2} mean_ms={mean_ms:.2} \
         calls_allowed_after_commit={allowed_after_commit}",
        quantile_ms(&latencies, 0.50),
        quantile_ms(&latencies, 0.90),
        quantile_ms(&latencies, 0.99),
        quantile_ms(&latencies, 1.0),
    );
    println!(
        "revoke_command p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        quantile_ms(&commands, 0.50),
        quantile_ms(&commands, 0.99),
        quantile_ms(&commands, 1.0),
    );
}
