//! `aip-agent` end to end with the real binaries: a running authority (`aip-ca serve`), a
//! registered agent with an encrypted key, a user's API key, and a fake MCP server in Python
//! (`fakes/mcp_echo.py`) as the wrapped command. Checks that tools/call and tools/list carry an
//! AAT the issuer's keys verify and a fresh proof bound to the call, that everything else is
//! relayed byte for byte both ways, that the AAT is renewed before it expires, that a failed
//! start runs nothing and leaks nothing, and that exit statuses and signals reach through.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aip_aat::keys::{JwkSet, Jwks};
use aip_aat::proof::Call;
use aip_aat::replay::InMemoryReplayCache;
use aip_aat::token::Validation;
use aip_aat::verifier::CallVerifier;
use aip_tests::{Server, aip_agent, init_authority, isolated, ok, run};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const AUDIENCE: &str = "files-proxy";
const TOOLS: &str = "read_file,list_directory";
/// How long to wait for one answer from aip-agent.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// An authority with one agent (encrypted key) and one user who may delegate [`TOOLS`].
struct Authority {
    tmp: tempfile::TempDir,
    server: Server,
    agent_dir: PathBuf,
    passphrase_file: PathBuf,
    agent_id: String,
    api_key: String,
}

impl Authority {
    /// `token_ttl` replaces the issuer's AAT lifetime in aip.toml.
    fn start(token_ttl: Option<&str>) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("aip");
        let dir_arg = dir.to_str().unwrap();
        let admin = init_authority(&dir, &[]);
        if let Some(ttl) = token_ttl {
            let config = std::fs::read_to_string(dir.join("aip.toml")).unwrap();
            assert!(config.contains("token_ttl = \"15m\""), "{config}");
            let config = config.replace("token_ttl = \"15m\"", &format!("token_ttl = \"{ttl}\""));
            std::fs::write(dir.join("aip.toml"), config).unwrap();
        }
        let server = Server::start(&["--dir", dir_arg, "--insecure-no-passphrase"]);
        let remote = |args: &[&str]| -> Value {
            let mut all = args.to_vec();
            all.extend(["--registry", &server.url, "--token", &admin, "--json"]);
            serde_json::from_str(&ok(run(&all))).unwrap()
        };
        let passphrase_file = tmp.path().join("passphrase");
        std::fs::write(&passphrase_file, "correct horse battery staple\n").unwrap();
        let agent_dir = tmp.path().join("agent");
        let registered = remote(&[
            "register-agent",
            "--name",
            "files agent",
            "--capabilities",
            TOOLS,
            "--out-dir",
            agent_dir.to_str().unwrap(),
            "--passphrase-file",
            passphrase_file.to_str().unwrap(),
        ]);
        let key_file = std::fs::read_to_string(agent_dir.join("agent.key")).unwrap();
        assert!(!key_file.contains("PRIVATE KEY"), "the agent key should be encrypted");
        let user = remote(&["users", "create", "--id", "alice", "--delegatable", TOOLS]);
        Self {
            agent_id: registered["agent_id"].as_str().unwrap().to_owned(),
            api_key: user["api_key"].as_str().unwrap().to_owned(),
            tmp,
            server,
            agent_dir,
            passphrase_file,
        }
    }

    /// The flags that let aip-agent fetch an AAT for the agent, with the user's key given in
    /// `AIP_USER_API_KEY` (see [`Agent::start`]).
    fn agent_flags(&self) -> Vec<String> {
        [
            "--agent-dir",
            self.agent_dir.to_str().unwrap(),
            "--issuer",
            &self.server.url,
            "--audience",
            AUDIENCE,
            "--tools",
            TOOLS,
            "--passphrase-file",
            self.passphrase_file.to_str().unwrap(),
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// A fresh log file for the fake server.
    fn log(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// The issuer's keys, as a proxy would fetch them.
    fn verifier(&self) -> CallVerifier {
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "30"])
            .arg(format!("{}/v1/jwks", self.server.url))
            .output()
            .expect("curl");
        let jwks: Jwks = serde_json::from_slice(&ok(out).into_bytes()).unwrap();
        CallVerifier::new(
            Validation::new(AUDIENCE).with_leeway(0),
            Arc::new(JwkSet::from_jwks(&jwks).unwrap()),
            Arc::new(InMemoryReplayCache::new(10_000)),
        )
    }
}

/// The fake MCP server writing what it receives to `log`.
fn fake_server(log: &Path) -> Vec<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fakes/mcp_echo.py");
    vec![
        "python3".into(),
        script.to_str().unwrap().into(),
        log.to_str().unwrap().into(),
    ]
}

/// A running `aip-agent`, its stdio piped to the test.
struct Agent {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

impl Agent {
    /// `aip-agent flags… -- command…`, with `api_key` in `AIP_USER_API_KEY`.
    fn start(flags: &[String], api_key: &str, command: &[String]) -> Self {
        let mut child = isolated(aip_agent())
            .args(flags)
            .arg("--")
            .args(command)
            .env("AIP_USER_API_KEY", api_key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (out_tx, stdout) = mpsc::channel();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                let _ = out_tx.send(String::from_utf8(std::mem::take(&mut line)).unwrap());
            }
        });
        let (err_tx, stderr) = mpsc::channel();
        let errors = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in errors.lines().map_while(Result::ok) {
                eprintln!("[aip-agent] {line}");
                let _ = err_tx.send(line);
            }
        });
        Self {
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    /// The next line aip-agent writes, newline included.
    fn next_line(&self) -> String {
        self.stdout
            .recv_timeout(ANSWER_TIMEOUT)
            .unwrap_or_else(|e| panic!("no line from aip-agent: {e}"))
    }

    /// Sends a request and returns the answer.
    fn request(&mut self, line: &str) -> Value {
        self.send(line);
        serde_json::from_str(&self.next_line()).unwrap()
    }

    /// Waits for aip-agent to exit (closing its stdin first when `close`): its status and
    /// everything it wrote on stderr.
    fn finish(mut self, close: bool) -> (ExitStatus, String) {
        if close {
            drop(self.stdin.take());
        }
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "aip-agent did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr: Vec<String> =
            std::iter::from_fn(|| self.stderr.recv_timeout(Duration::from_secs(5)).ok()).collect();
        (status, stderr.join("\n"))
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines the fake server received, newline included.
fn received(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap()
        .split_inclusive('\n')
        .map(str::to_owned)
        .collect()
}

/// The claims of a compact JWS, decoded without verification.
fn jws_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// The AAT and proof a rewritten message carries, checked against its call: the proof
/// verifies as a proxy checks it (agent key = AAT `cnf.jkt`, signature, `ath`, `tool`,
/// `args_hash`, fresh `jti`), and its claims say so explicitly. Returns (AAT, proof claims).
fn check_credentials(verifier: &CallVerifier, params: &Value, call: &Call<'_>) -> (String, Value) {
    let aat = params["_aip_aat"].as_str().expect("no _aip_aat").to_owned();
    let proof = params["_aip_proof"].as_str().expect("no _aip_proof");
    if let Err(e) = verifier.verify(Some(&aat), Some(proof), call) {
        panic!("a proxy would refuse {} {:?}: {e}", call.method, call.tool);
    }
    let claims = jws_claims(proof);
    assert_eq!(claims["method"], call.method, "{claims}");
    assert_eq!(claims["tool"], call.tool, "{claims}");
    assert_eq!(claims["aud"], AUDIENCE, "{claims}");
    assert_eq!(
        claims["ath"],
        URL_SAFE_NO_PAD.encode(Sha256::digest(aat.as_bytes())),
        "{claims}"
    );
    assert_eq!(claims["args_hash"], call.args_hash().unwrap(), "{claims}");
    (aat, claims)
}

const TOOLS_LIST: Call<'static> = Call {
    method: "tools/list",
    tool: "",
    arguments: None,
};

#[test]
fn tool_calls_and_lists_carry_the_aat_and_a_fresh_proof() {
    let authority = Authority::start(None);
    let log = authority.log("received.log");
    let mut agent = Agent::start(&authority.agent_flags(), &authority.api_key, &fake_server(&log));

    let initialize = r#"{"jsonrpc":"2.0", "id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"test client","version":"1.0"}}}"#;
    let answer = agent.request(initialize);
    assert_eq!(
        answer["result"]["seen"]["clientInfo"]["name"], "test client",
        "{answer}"
    );
    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    let malformed = "this is { not json \u{e9}";
    let not_a_request = r#"{"jsonrpc":"2.0","id":"srv-1","result":{"method":"tools/call"}}"#;
    for line in [initialized, malformed, not_a_request] {
        agent.send(line);
    }
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let call = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/srv/docs/a.txt","range":{"to":10,"from":1},"big":123456789012345678901234567890}}}"#;
    let again = call.replace(r#""id":2"#, r#""id":3"#);
    let forged = r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"_aip_aat":"forged.aat.x","name":"list_directory","_aip_proof":"forged.proof.x"}}"#;
    let nameless = r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"arguments":{"path":"/"}}}"#;
    let server_lines = [
        r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info",  "data":"caf\u00e9"}}"#,
        "not json from the server  ",
    ];
    let emit = json!({"jsonrpc": "2.0", "id": 6, "method": "test/emit", "params": {"lines": server_lines}}).to_string();
    let env =
        r#"{"jsonrpc":"2.0","id":7,"method":"test/env","params":{"names":["AIP_USER_API_KEY","AIP_PASSPHRASE"]}}"#;
    for (id, line) in [(1, list), (2, call), (3, &again), (4, forged), (5, nameless)] {
        let answer = agent.request(line);
        assert_eq!(answer["id"], id, "{answer}");
        assert!(answer["error"].is_null(), "{answer}");
    }
    // The server's own lines reach the client exactly as written, then its answer.
    agent.send(&emit);
    for line in server_lines {
        assert_eq!(agent.next_line(), format!("{line}\n"));
    }
    let answer: Value = serde_json::from_str(&agent.next_line()).unwrap();
    assert_eq!(answer["id"], 6, "{answer}");
    // The wrapped command does not inherit the user's credential.
    let answer = agent.request(env);
    assert_eq!(
        answer["result"]["env"],
        json!({"AIP_USER_API_KEY": null, "AIP_PASSPHRASE": null})
    );

    let (status, stderr) = agent.finish(true);
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(stderr.is_empty(), "aip-agent should say nothing: {stderr}");

    let lines = received(&log);
    assert_eq!(lines.len(), 11, "{lines:#?}");
    // Everything but tools/call and tools/list arrives byte for byte.
    for (at, sent) in [
        (0, initialize),
        (1, initialized),
        (2, malformed),
        (3, not_a_request),
        (8, nameless),
        (9, emit.as_str()),
        (10, env),
    ] {
        assert_eq!(lines[at], format!("{sent}\n"), "line {at}");
    }

    // tools/list and tools/call: the message as sent, plus the AAT and a proof of this call.
    let verifier = authority.verifier();
    let mut aats = Vec::new();
    let mut jtis = Vec::new();
    for (at, sent) in [(4, list), (5, call), (6, again.as_str()), (7, forged)] {
        let line = &lines[at];
        assert!(
            line.ends_with('\n') && line.matches('\n').count() == 1,
            "not one line: {line}"
        );
        let mut got: Value = serde_json::from_str(line).unwrap();
        let mut expected: Value = serde_json::from_str(sent).unwrap();
        let params = got["params"].take();
        let method = expected["method"].as_str().unwrap().to_owned();
        let (aat, claims) = if method == "tools/list" {
            check_credentials(&verifier, &params, &TOOLS_LIST)
        } else {
            let name = params["name"].as_str().unwrap();
            check_credentials(&verifier, &params, &Call::tools_call(name, params.get("arguments")))
        };
        assert_ne!(aat, "forged.aat.x");
        jtis.push(claims["jti"].as_str().unwrap().to_owned());
        aats.push(aat);
        // Apart from the credentials, nothing changed.
        let mut rest = params.as_object().unwrap().clone();
        rest.remove("_aip_aat");
        rest.remove("_aip_proof");
        let mut sent_params = expected["params"].take();
        if let Some(sent_params) = sent_params.as_object_mut() {
            sent_params.remove("_aip_aat");
            sent_params.remove("_aip_proof");
        }
        assert_eq!(
            Value::Object(rest),
            sent_params.as_object().cloned().map_or(json!({}), Value::Object)
        );
        assert_eq!(got, expected, "the envelope changed");
    }
    // The arguments' values are copied as written, even where a JSON number parser would round.
    assert!(
        lines[5].contains("\"big\":123456789012345678901234567890"),
        "{}",
        lines[5]
    );
    let mut unique = jtis.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), jtis.len(), "proof jtis repeat: {jtis:?}");

    // The AAT is the agent's, for the user, for this audience, as `aip-ca verify` sees it.
    let claims: Value = serde_json::from_str(&ok(run(&[
        "verify",
        "--aat",
        &aats[0],
        "--issuer-url",
        &authority.server.url,
        "--audience",
        AUDIENCE,
    ])))
    .unwrap();
    assert_eq!(claims["sub"], authority.agent_id.as_str(), "{claims}");
    assert_eq!(claims["user_binding"]["user_id"], "alice", "{claims}");
    assert_eq!(
        claims["capabilities"]["tools"],
        json!(["read_file", "list_directory"]),
        "{claims}"
    );
    assert!(!stderr.contains(&authority.api_key) && !stderr.contains(&aats[0]));
}

#[test]
fn an_expiring_aat_is_renewed_without_the_client_noticing() {
    // The shortest lifetime the issuer accepts is one minute; the calls span more than two.
    const TTL: f64 = 60.0;
    let authority = Authority::start(Some("60s"));
    let log = authority.log("received.log");
    let mut agent = Agent::start(&authority.agent_flags(), &authority.api_key, &fake_server(&log));
    let verifier = authority.verifier();
    let started = now();
    let mut aats: Vec<String> = Vec::new();
    let mut id = 0;
    while now() - started < 2.0 * TTL + 15.0 {
        id += 1;
        let line = if id % 3 == 0 {
            json!({"jsonrpc": "2.0", "id": id, "method": "tools/list"})
        } else {
            json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                   "params": {"name": "read_file", "arguments": {"path": format!("/srv/{id}")}}})
        };
        let answer = agent.request(&line.to_string());
        assert_eq!(answer["id"], id, "{answer}");
        assert!(answer["error"].is_null(), "call {id} failed: {answer}");
        let params = &answer["result"]["seen"];
        let (aat, _) = if id % 3 == 0 {
            check_credentials(&verifier, params, &TOOLS_LIST)
        } else {
            check_credentials(
                &verifier,
                params,
                &Call::tools_call("read_file", params.get("arguments")),
            )
        };
        let exp = jws_claims(&aat)["exp"].as_f64().unwrap();
        let received_at = answer["result"]["at"].as_f64().unwrap();
        assert!(
            exp > received_at,
            "call {id} carried an expired AAT (exp {exp}, received {received_at})"
        );
        if aats.last() != Some(&aat) {
            aats.push(aat);
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    assert!(aats.len() >= 2, "the AAT was never renewed in {id} calls");
    let (status, stderr) = agent.finish(true);
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(!stderr.contains("warning"), "a renewal failed: {stderr}");
    eprintln!("{id} calls, {} AATs", aats.len());
}

/// Asserts exit status 1, exactly one `error:` line, no secret, and that the command never ran.
fn assert_failed_start(authority: &Authority, flags: &[String], api_key: &str, needle: &str) {
    let marker = authority.log("the command ran");
    let output: Output = isolated(aip_agent())
        .args(flags)
        .args(["--", "touch", marker.to_str().unwrap()])
        .env("AIP_USER_API_KEY", api_key)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("[aip-agent, failing] {stderr}");
    assert_eq!(output.status.code(), Some(1), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line expected in: {stderr}");
    assert!(errors[0].contains(needle), "expected {needle:?} in: {stderr}");
    assert!(!stderr.contains(api_key), "the API key leaked: {stderr}");
    assert!(!marker.exists(), "the command ran although aip-agent could not start");
}

#[test]
fn a_failed_start_exits_1_and_runs_nothing() {
    let authority = Authority::start(None);
    let wrong_key = "aip_uk_not-alices-key-0123456789abcdefghijklmnop";
    assert_failed_start(&authority, &authority.agent_flags(), wrong_key, "HTTP 401");

    let mut unreachable = authority.agent_flags();
    let at = unreachable.iter().position(|f| f == "--issuer").unwrap();
    unreachable[at + 1] = "http://127.0.0.1:9".into();
    assert_failed_start(&authority, &unreachable, &authority.api_key, "cannot reach the issuer");

    let mut no_passphrase = authority.agent_flags();
    no_passphrase.truncate(no_passphrase.len() - 2);
    assert_failed_start(&authority, &no_passphrase, &authority.api_key, "no passphrase");
}

#[test]
fn exit_status_and_signals_reach_through() {
    let authority = Authority::start(None);
    let flags = authority.agent_flags();

    let log = authority.log("exit.log");
    let mut agent = Agent::start(&flags, &authority.api_key, &fake_server(&log));
    agent.send(r#"{"jsonrpc":"2.0","id":1,"method":"test/exit","params":{"code":3}}"#);
    let (status, stderr) = agent.finish(false);
    assert_eq!(status.code(), Some(3), "{stderr}");

    for (signal, number) in [("TERM", 15), ("INT", 2)] {
        let log = authority.log(&format!("{signal}.log"));
        let mut agent = Agent::start(&flags, &authority.api_key, &fake_server(&log));
        let answer = agent.request(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#);
        assert_eq!(answer["id"], 1, "{answer}");
        agent.signal(signal);
        let (status, stderr) = agent.finish(false);
        assert_eq!(status.code(), Some(128 + number), "SIG{signal}: {status:?} {stderr}");
        assert_eq!(
            received(&log).last().unwrap(),
            &format!("SIG{signal}\n"),
            "the command did not get SIG{signal}"
        );
    }
}
