//! The proxy's registry link (`aip_proxy_verifier::registry::RegistryLink`) against a real
//! `aip-ca serve`: issuer keys from `/v1/jwks` verifying a real AAT, unknown `kid`s refreshing
//! the keys at most once per gap, `cached` mode following the event stream (also across a
//! restart of the authority on the same port), 304 answers keeping the data fresh and a
//! vanished registry making it stale, `online` mode asking on every check and failing fast,
//! and `crl` mode reading signed lists fetched from `/v1/revocations.jws`, refusing tampered
//! and older files, with keys from a JWKS file and no network at all. And the real `aip-proxy`
//! refusing, once the rotation's grace period has ended, an AAT bound to a rotated-out key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aip_aat::clock::SystemClock;
use aip_aat::ids::{AgentId, KeyId};
use aip_aat::keys::KeyResolver as _;
use aip_aat::token::Validation;
use aip_aat::validate::{RevocationView as _, ValidationContext, validate_aat};
use aip_proxy_verifier::policy::{Policy, RegistrySettings, SignaturePolicy};
use aip_proxy_verifier::registry::{KID_REFRESH_GAP, RegistryEvent, RegistryLink, UpdateSource};
use aip_tests::{command, init_authority, ok, run};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

const AUDIENCE: &str = "files-proxy";

fn json(output: std::process::Output) -> Value {
    serde_json::from_str(&ok(output)).unwrap()
}

/// Replaces `path` the way an updater should: a new file renamed into place.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

/// An authority created with `aip-ca init` on a fixed loopback port, so that it can be
/// stopped and served again at the same address.
struct Authority {
    tmp: tempfile::TempDir,
    dir: PathBuf,
    url: String,
    port: u16,
    admin: String,
    reader: String,
    serve: Option<Child>,
    runs: u32,
}

impl Authority {
    fn create() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("aip");
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let listen = format!("127.0.0.1:{port}");
        let admin = init_authority(&dir, &["--listen", &listen]);
        let mut authority = Self {
            tmp,
            dir,
            url: format!("http://{listen}"),
            port,
            admin,
            reader: String::new(),
            serve: None,
            runs: 0,
        };
        authority.start();
        let reader = authority.remote(&["access-token", "create", "--role", "reader", "--json"]);
        assert_eq!(reader["role"], "reader", "{reader}");
        authority.reader = reader["token"].as_str().unwrap().to_owned();
        authority
    }

    /// `aip-ca serve` on the authority's address, once it answers `/health`.
    fn start(&mut self) {
        assert!(self.serve.is_none());
        self.runs += 1;
        let log = self.tmp.path().join(format!("serve-{}.log", self.runs));
        let child = command()
            .args(["serve", "--dir", self.dir.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        self.serve = Some(child);
        let up = aip_tests::within(Duration::from_secs(60), || {
            if let Some(status) = self.serve.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "aip-ca serve exited with {status}:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            self.get("/health", None).0 == 200
        });
        assert!(up, "aip-ca serve did not answer on {}", self.url);
    }

    /// SIGTERM, and wait for the exit.
    fn stop(&mut self) {
        let mut child = self.serve.take().unwrap();
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let stopped = aip_tests::within(Duration::from_secs(15), || child.try_wait().unwrap().is_some());
        if !stopped {
            let _ = child.kill();
            let _ = child.wait();
            panic!("aip-ca serve did not stop within 15 s of SIGTERM");
        }
    }

    /// `aip-ca args… --registry URL --token ADMIN`, its JSON output.
    fn remote(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--registry", &self.url, "--token", &self.admin]);
        json(run(&all))
    }

    /// Registers an agent; its id and directory.
    fn register(&self, name: &str, autonomous: bool) -> (AgentId, PathBuf) {
        let out = self.tmp.path().join(name);
        let mut args = vec![
            "register-agent",
            "--name",
            name,
            "--capabilities",
            "read_file",
            "--out-dir",
            out.to_str().unwrap(),
            "--insecure-no-passphrase",
            "--json",
        ];
        if autonomous {
            args.push("--autonomous");
        }
        let registered = self.remote(&args);
        (registered["agent_id"].as_str().unwrap().parse().unwrap(), out)
    }

    /// `aip-ca agents revoke ID`.
    fn revoke(&self, agent: &AgentId) {
        self.remote(&["agents", "revoke", agent.as_str(), "--reason", "test", "--json"]);
    }

    /// An AAT for the (autonomous) agent in `agent_dir`.
    fn token(&self, agent_dir: &Path) -> String {
        let agent_dir = agent_dir.to_str().unwrap();
        let args = [
            "token",
            "--json",
            "--issuer",
            &self.url,
            "--audience",
            AUDIENCE,
            "--agent-dir",
            agent_dir,
        ];
        json(run(&args))["aat"].as_str().unwrap().to_owned()
    }

    /// `GET path` with curl: (status, body); status 0 when nothing answers.
    fn get(&self, path: &str, bearer: Option<&str>) -> (u16, String) {
        aip_tests::http_get(&format!("{}{path}", self.url), bearer)
    }

    /// The sum of the Prometheus samples whose line contains every needle.
    fn metric(&self, needles: &[&str]) -> f64 {
        let (status, body) = self.get("/metrics", None);
        assert_eq!(status, 200, "{body}");
        body.lines()
            .filter(|l| !l.starts_with('#') && needles.iter().all(|n| l.contains(n)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Requests of `route` the authority has answered (with `status`, when given).
    fn requests(&self, route: &str, status: Option<&str>) -> f64 {
        let route = format!("route=\"{route}\"");
        let status = status.map(|s| format!("status=\"{s}\""));
        let mut needles = vec!["aip_http_requests_total{", route.as_str()];
        needles.extend(status.as_deref());
        self.metric(&needles)
    }

    /// Open event streams.
    fn subscribers(&self) -> f64 {
        self.metric(&["aip_registry_event_subscribers"])
    }
}

impl Drop for Authority {
    fn drop(&mut self) {
        if let Some(mut child) = self.serve.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The `spec.registry` settings of a policy whose registry section ends with `extra` (lines
/// indented by four spaces), loaded as the proxy loads its policy.
fn settings(endpoint: &str, extra: &str) -> RegistrySettings {
    let text = format!(
        "apiVersion: aip.io/v1alpha3\nkind: AgentPolicy\nmetadata:\n  name: registry-test\nspec:\n  registry:\n    \
         enabled: true\n    endpoint: \"{endpoint}\"\n{extra}"
    );
    let policy = Policy::parse(&text, None, SignaturePolicy::NoKey).unwrap();
    policy.registry().cloned().unwrap()
}

fn reader_auth(token: &str) -> String {
    format!("    auth:\n      type: bearer\n      token: \"{token}\"\n")
}

type Events = Arc<Mutex<Vec<RegistryEvent>>>;

fn recorder() -> (Events, Box<dyn Fn(RegistryEvent) + Send + Sync>) {
    let events = Events::default();
    let sink = Arc::clone(&events);
    (events, Box::new(move |e| sink.lock().unwrap().push(e)))
}

fn keys_refreshed(events: &Events) -> usize {
    events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, RegistryEvent::KeysRefreshed { .. }))
        .count()
}

fn updates_from(events: &Events, from: UpdateSource) -> Vec<u64> {
    events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            RegistryEvent::ListUpdated { version, source, .. } if *source == from => Some(*version),
            _ => None,
        })
        .collect()
}

fn failures(events: &Events) -> Vec<String> {
    events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            RegistryEvent::CheckFailed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

/// The `kid` of a compact JWS, read without verification.
fn kid_of(token: &str) -> KeyId {
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap()).unwrap();
    header["kid"].as_str().unwrap().parse().unwrap()
}

fn validate(link: &RegistryLink, aat: &str) -> Result<Value, String> {
    let validation = Validation::new(AUDIENCE);
    let context = ValidationContext {
        revocation: Some(link),
        ..ValidationContext::new(link, &SystemClock)
    };
    validate_aat(aat, &validation, &context)
        .map(|verified| serde_json::to_value(verified.claims()).unwrap())
        .map_err(|e| e.to_string())
}

#[test]
fn issuer_keys_come_from_the_registry_and_unknown_kids_refresh_at_most_once_per_gap() {
    let authority = Authority::create();
    let (bot, bot_dir) = authority.register("nightly-bot", true);
    let aat = authority.token(&bot_dir);
    let (events, sink) = recorder();
    let link = RegistryLink::start(&settings(&authority.url, &reader_auth(&authority.reader)), sink).unwrap();
    assert_eq!(keys_refreshed(&events), 1);
    // The registry key and the issuer key.
    assert_eq!(link.status().keys, 2);
    assert!(link.resolve("any issuer", &kid_of(&aat)).is_some());
    let claims = validate(&link, &aat).unwrap();
    assert_eq!(claims["sub"], bot.as_str());

    // An unknown kid refreshes the keys once; a burst of them within the gap does not.
    let fetches = authority.requests("/v1/jwks", None);
    let forced = Instant::now();
    assert!(link.resolve("any issuer", &"unknown-kid-0".parse().unwrap()).is_none());
    assert_eq!(keys_refreshed(&events), 2);
    assert_eq!(authority.requests("/v1/jwks", None), fetches + 1.0);
    let burst: Vec<std::thread::JoinHandle<()>> = (0..4)
        .map(|t| {
            let link = Arc::clone(&link);
            std::thread::spawn(move || {
                for i in 0..50 {
                    let kid: KeyId = format!("unknown-kid-{t}-{i}").parse().unwrap();
                    assert!(link.resolve("any issuer", &kid).is_none());
                }
            })
        })
        .collect();
    for thread in burst {
        thread.join().unwrap();
    }
    assert!(
        forced.elapsed() < KID_REFRESH_GAP,
        "the burst was too slow to prove anything"
    );
    assert_eq!(keys_refreshed(&events), 2);
    assert_eq!(authority.requests("/v1/jwks", None), fetches + 1.0);

    // A key rotated in on the running authority: its kid is found by one refresh.
    let rotated = json(run(&[
        "keys",
        "rotate",
        "--dir",
        authority.dir.to_str().unwrap(),
        "--insecure-no-passphrase",
        "--json",
    ]));
    let new_kid: KeyId = rotated["kid"].as_str().unwrap().parse().unwrap();
    let published = aip_tests::within(Duration::from_secs(60), || {
        authority.get("/v1/jwks", None).1.contains(new_kid.as_str())
    });
    assert!(published, "the running authority never published {new_kid:?}");
    std::thread::sleep(KID_REFRESH_GAP.saturating_sub(forced.elapsed()));
    let fetches = authority.requests("/v1/jwks", None);
    assert!(link.resolve("any issuer", &new_kid).is_some());
    assert_eq!(authority.requests("/v1/jwks", None), fetches + 1.0);
    assert_eq!(link.status().keys, 3);
    assert_eq!(keys_refreshed(&events), 3);
}

#[test]
fn cached_mode_follows_the_event_stream_across_a_restart() {
    let mut authority = Authority::create();
    let (bot, bot_dir) = authority.register("stream-bot", true);
    let (other, _) = authority.register("other-agent", false);
    let aat = authority.token(&bot_dir);
    // Polls every minute: only the stream can explain a revocation seen within a second.
    let extra = format!(
        "    revocation:\n      mode: cached\n      check_interval: 60s\n{}",
        reader_auth(&authority.reader)
    );
    let (events, sink) = recorder();
    let link = RegistryLink::start(&settings(&authority.url, &extra), sink).unwrap();
    assert_eq!(link.status().mode, "cached");
    validate(&link, &aat).unwrap();
    assert!(aip_tests::within(Duration::from_secs(10), || authority.subscribers() >= 1.0));

    let version = link.status().version;
    authority.revoke(&bot);
    let revoked = Instant::now();
    assert!(aip_tests::within(Duration::from_secs(1), || link.is_agent_revoked(&bot)));
    eprintln!("revocation seen after {:?}", revoked.elapsed());
    assert!(link.status().version > version);
    assert_eq!(updates_from(&events, UpdateSource::Stream), [link.status().version]);
    let refused = validate(&link, &aat).unwrap_err();
    assert!(refused.contains("revoked"), "{refused}");

    // The same authority, stopped and served again on the same address: the link reconnects
    // (with Last-Event-ID) and the next revocation arrives as fast.
    authority.stop();
    authority.start();
    assert!(
        aip_tests::within(Duration::from_secs(30), || authority.subscribers() >= 1.0),
        "the link did not reconnect to the event stream"
    );
    assert!(!link.is_agent_revoked(&other));
    authority.revoke(&other);
    let revoked = Instant::now();
    assert!(aip_tests::within(Duration::from_secs(1), || link.is_agent_revoked(&other)));
    eprintln!("revocation after the restart seen after {:?}", revoked.elapsed());
    assert!(link.is_agent_revoked(&bot));
    assert_eq!(updates_from(&events, UpdateSource::Stream).len(), 2);
    link.ensure_fresh().unwrap();
}

#[test]
fn cached_mode_stays_fresh_on_304_and_goes_stale_without_the_registry() {
    let mut authority = Authority::create();

    // The revocation list needs a token that can read it; the error names the endpoint and
    // the fix, never the token.
    let (_, sink) = recorder();
    let error = RegistryLink::start(&settings(&authority.url, ""), sink)
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        format!(
            "registry {}/v1/revocations: HTTP 401 (check spec.registry.auth: the registry refused the token)",
            authority.url
        )
    );
    let wrong = "aip_at_not-a-real-token-0123456789";
    let (_, sink) = recorder();
    let error = RegistryLink::start(&settings(&authority.url, &reader_auth(wrong)), sink)
        .unwrap_err()
        .to_string();
    assert!(error.contains("HTTP 401") && !error.contains(wrong), "{error}");

    let extra = format!(
        "    revocation:\n      check_interval: 1s\n      max_staleness: 2s\n{}",
        reader_auth(&authority.reader)
    );
    let (events, sink) = recorder();
    let link = RegistryLink::start(&settings(&authority.url, &extra), sink).unwrap();
    let not_modified = authority.requests("/v1/revocations", Some("304"));
    std::thread::sleep(Duration::from_millis(3500));
    link.ensure_fresh().unwrap();
    assert!(link.status().age < Duration::from_millis(1500), "{:?}", link.status());
    assert!(authority.requests("/v1/revocations", Some("304")) >= not_modified + 2.0);
    assert_eq!(
        updates_from(&events, UpdateSource::Poll).len(),
        1,
        "unchanged lists are no news"
    );
    assert!(failures(&events).is_empty(), "{:?}", failures(&events));

    // Stopping takes a while (open streams are given time to finish): count from SIGTERM.
    link.ensure_fresh().unwrap();
    let stopping = Instant::now();
    authority.stop();
    assert!(
        aip_tests::within(Duration::from_secs(6), || link.ensure_fresh().is_err()),
        "still fresh {:?} after the registry stopped",
        stopping.elapsed()
    );
    // Fresh data (at most a poll old) lasts max_staleness.
    assert!(stopping.elapsed() >= Duration::from_secs(1), "{:?}", stopping.elapsed());
    let stale = link.ensure_fresh().unwrap_err().to_string();
    assert!(stale.starts_with("revocation data is stale"), "{stale}");
    let failed = failures(&events);
    assert!(!failed.is_empty());
    for reason in &failed {
        assert!(
            reason.starts_with(&format!("registry {}/v1/revocations", authority.url)),
            "{reason}"
        );
        assert!(!reason.contains(&authority.reader), "{reason}");
    }
    // The registry is back: fresh again within a poll.
    authority.start();
    assert!(aip_tests::within(Duration::from_secs(5), || link
        .ensure_fresh()
        .is_ok()));
}

/// `ensure_fresh` fails, within 2.5 s; its error.
fn fails_fast(link: &RegistryLink) -> String {
    let started = Instant::now();
    let error = link.ensure_fresh().unwrap_err().to_string();
    assert!(
        started.elapsed() <= Duration::from_millis(2500),
        "{:?}: {error}",
        started.elapsed()
    );
    error
}

#[test]
fn online_mode_asks_the_registry_on_every_check() {
    let mut authority = Authority::create();
    let (agent, _) = authority.register("online-agent", false);
    let extra = format!(
        "    revocation:\n      mode: online\n{}",
        reader_auth(&authority.reader)
    );
    let (events, sink) = recorder();
    let link = RegistryLink::start(&settings(&authority.url, &extra), sink).unwrap();
    link.ensure_fresh().unwrap();
    assert!(!link.is_agent_revoked(&agent));

    authority.revoke(&agent);
    link.ensure_fresh().unwrap();
    assert!(
        link.is_agent_revoked(&agent),
        "the revocation must count at the next check"
    );
    assert_eq!(updates_from(&events, UpdateSource::Online).len(), 2);
    let not_modified = authority.requests("/v1/revocations", Some("304"));
    link.ensure_fresh().unwrap();
    assert_eq!(authority.requests("/v1/revocations", Some("304")), not_modified + 1.0);

    // Nothing listens: refused at once.
    authority.stop();
    let error = fails_fast(&link);
    assert!(
        error.starts_with(&format!("registry {}/v1/revocations: ", authority.url)),
        "{error}"
    );

    // Something accepts connections (the kernel does, into the backlog) and never answers:
    // refused within the call timeout.
    let silent = TcpListener::bind(("127.0.0.1", authority.port)).unwrap();
    for _ in 0..2 {
        let error = fails_fast(&link);
        assert!(error.contains("within 2000 ms"), "{error}");
    }
    // The data last loaded still answers lookups.
    assert!(link.is_agent_revoked(&agent));
    drop(link);
    drop(silent);
}

#[test]
fn crl_mode_loads_signed_lists_from_files_without_network() {
    let authority = Authority::create();
    let (bot, bot_dir) = authority.register("offline-bot", true);
    let aat = authority.token(&bot_dir);
    let files = authority.tmp.path();
    let jwks = files.join("jwks.json");
    let (status, body) = authority.get("/v1/jwks", None);
    assert_eq!(status, 200, "{body}");
    std::fs::write(&jwks, body).unwrap();
    let signed = |label: &str| {
        let (status, body) = authority.get("/v1/revocations.jws", Some(&authority.reader));
        assert_eq!(status, 200, "{label}: {body}");
        body
    };
    let first = signed("first");
    let crl = files.join("revocations.jws");
    replace(&crl, &first);

    // Nothing listens at the endpoint: keys and revocations come from files only.
    let extra = format!(
        "    jwks_file: \"{}\"\n    revocation:\n      mode: crl\n      crl_path: \"{}\"\n      check_interval: 1s\n      \
         max_staleness: 30s\n",
        jwks.display(),
        crl.display()
    );
    let (events, sink) = recorder();
    let link = RegistryLink::start(&settings("http://127.0.0.1:9", &extra), sink).unwrap();
    let first_version = link.status().version;
    assert_eq!(updates_from(&events, UpdateSource::File), [first_version]);
    validate(&link, &aat).unwrap();
    link.ensure_fresh().unwrap();

    // A tampered list (a higher version, the original signature) is refused.
    let parts: Vec<&str> = first.trim().split('.').collect();
    let mut payload: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    payload["version"] = (first_version + 100).into();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap()),
        parts[2]
    );
    replace(&crl, &forged);
    assert!(aip_tests::within(Duration::from_secs(5), || {
        failures(&events).iter().any(|r| r.contains("signature is invalid"))
    }));
    assert_eq!(link.status().version, first_version);

    // A newer list is picked up at the next re-read.
    authority.revoke(&bot);
    replace(&crl, &signed("after the revocation"));
    assert!(aip_tests::within(Duration::from_secs(3), || link.is_agent_revoked(&bot)));
    let second_version = link.status().version;
    assert!(second_version > first_version);
    let refused = validate(&link, &aat).unwrap_err();
    assert!(refused.contains("revoked"), "{refused}");

    // The older, genuine list is refused: no rollback.
    replace(&crl, &first);
    assert!(aip_tests::within(Duration::from_secs(5), || {
        failures(&events).iter().any(|r| r.contains("rollback refused"))
    }));
    assert_eq!(link.status().version, second_version);
    assert!(link.is_agent_revoked(&bot));
    assert_eq!(
        updates_from(&events, UpdateSource::File),
        [first_version, second_version]
    );
    for reason in failures(&events) {
        assert!(reason.starts_with(&crl.display().to_string()), "{reason}");
    }
}

/// A `tools/call` line for `read_file` carrying `aat` and a fresh proof by `key`.
fn read_file_call(id: u64, aat: &str, key: &aip_aat::keys::KeyPair) -> String {
    let args = serde_json::json!({"path": "notes.txt"});
    let call = aip_aat::proof::Call::tools_call("read_file", Some(&args));
    let now = aip_aat::clock::Clock::now(&SystemClock);
    let proof = aip_aat::proof::create_proof(key, aat, &call, AUDIENCE, now).unwrap();
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "tools/call",
        "params": {"name": "read_file", "arguments": args, "_aip_aat": aat, "_aip_proof": proof},
    })
    .to_string()
}

/// A real `aip-proxy` over the fake MCP server, answering one line at a time.
struct StdioProxy {
    child: Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

impl StdioProxy {
    fn start(policy: &Path, server_log: &Path) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fakes/mcp_echo.py");
        let aip_tests::Piped { child, stdin, lines } = aip_tests::piped(
            aip_tests::isolated(aip_tests::aip_proxy())
                .args(["--policy", policy.to_str().unwrap(), "--target"])
                .arg(format!("python3 {} {}", script.display(), server_log.display())),
        );
        Self { child, stdin, lines }
    }

    fn call(&mut self, line: &str) -> Value {
        use std::io::Write as _;
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
        let answer = self
            .lines
            .recv_timeout(Duration::from_secs(30))
            .expect("no answer from aip-proxy");
        serde_json::from_str(&answer).unwrap()
    }
}

impl Drop for StdioProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_aat_bound_to_a_rotated_out_key_is_refused_once_the_grace_period_ends() {
    const GRACE_SECS: i64 = 6;
    let mut authority = Authority::create();
    // A short grace period: `[agents] key_grace_period` in aip.toml, read at start.
    authority.stop();
    let config = authority.dir.join("aip.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let short = text.replace(
        "key_grace_period = \"1h\"",
        &format!("key_grace_period = \"{GRACE_SECS}s\""),
    );
    assert_ne!(short, text, "no key_grace_period in {text}");
    std::fs::write(&config, short).unwrap();
    authority.start();

    let (_, bot_dir) = authority.register("rotor", true);
    let old_aat = authority.token(&bot_dir);
    let old_key = aip_aat::keyfile::read(&bot_dir.join("agent.key"), None).unwrap();

    let policy = authority.tmp.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: aip.io/v1alpha3\nkind: AgentPolicy\nmetadata:\n  name: {AUDIENCE}\nspec:\n  allowed_tools: \
             [read_file]\n  registry:\n    enabled: true\n    endpoint: \"{}\"\n{}    revocation:\n      mode: \
             cached\n      check_interval: 1s\n  aat:\n    enabled: true\n    require: true\n",
            authority.url,
            reader_auth(&authority.reader),
        ),
    )
    .unwrap();
    let mut proxy = StdioProxy::start(&policy, &authority.tmp.path().join("server.log"));
    let forwarded = |answer: &Value| answer.get("result").is_some();
    let answer = proxy.call(&read_file_call(1, &old_aat, &old_key));
    assert!(forwarded(&answer), "{answer}");

    // The rotation: the old key stays valid for the grace period.
    let rotated = json(run(&[
        "agents",
        "rotate-key",
        "--agent-dir",
        bot_dir.to_str().unwrap(),
        "--registry",
        &authority.url,
        "--insecure-no-passphrase",
        "--json",
    ]));
    assert!(rotated["previous_key_valid_until"].is_string(), "{rotated}");
    // The revocation list names the old key and the end of its grace period.
    let (status, body) = authority.get("/v1/revocations", Some(&authority.reader));
    assert_eq!(status, 200, "{body}");
    let list: aip_aat::revocation::RevocationList = serde_json::from_str(&body).unwrap();
    let superseded = &list.superseded_keys[..];
    assert_eq!(superseded.len(), 1, "{body}");
    assert_eq!(&superseded[0].key_thumbprint, old_key.key_id());
    let grace_end = superseded[0].valid_until.unix_timestamp();
    let now = || aip_aat::clock::Clock::now(&SystemClock);

    // During the grace period the proxy, which has the new list (the stream announced the
    // rotation), still accepts the old key's AAT.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(now() < grace_end, "the grace period ran out before the check");
    let answer = proxy.call(&read_file_call(2, &old_aat, &old_key));
    assert!(forwarded(&answer), "{answer}");

    // Once it has ended: refused, though the AAT has not expired.
    while now() <= grace_end {
        std::thread::sleep(Duration::from_millis(200));
    }
    let answer = proxy.call(&read_file_call(3, &old_aat, &old_key));
    assert_eq!(answer["error"]["code"], -32016, "{answer}");
    assert_eq!(answer["error"]["data"]["aat_error"], "agent_key_mismatch", "{answer}");

    // An AAT for the new key passes.
    let new_aat = authority.token(&bot_dir);
    let new_key = aip_aat::keyfile::read(&bot_dir.join("agent.key"), None).unwrap();
    assert_ne!(new_key.key_id(), old_key.key_id());
    let answer = proxy.call(&read_file_call(4, &new_aat, &new_key));
    assert!(forwarded(&answer), "{answer}");
}
