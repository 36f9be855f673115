//! The Streamable HTTP front door of `aip-proxy` under load: keep-alive HTTP/1.1 on loopback,
//! 16 concurrent clients (each a task with its own connection and MCP session), `tools/call`
//! back to back for a fixed time, against one upstream MCP server, four ways:
//!
//! 1. **direct**: clients → upstream;
//! 2. **relay**: clients → a relay that looks at nothing, built the way the proxy is (an axum
//!    server and a reqwest client, its own process: this binary run again) → upstream;
//! 3. **Bearer + policy**: clients → the release `aip-proxy --serve … --upstream …` with a policy
//!    that requires AATs (`require_proof: false`) and allows `read_file`, no DLP → upstream;
//! 4. **DPoP + policy + DLP**: the same with proofs required and the stdio harness's three DLP
//!    patterns on requests and answers; every call carries `Authorization: DPoP <AAT>` and a
//!    fresh DPoP proof made before the timing starts.
//!
//! The upstream is a minimal Streamable HTTP MCP server in this binary (axum; JSON answers,
//! `Mcp-Session-Id` issued on `initialize`, a `read_file` tool answering a few hundred bytes of
//! text). The AATs are made offline: an issuer key whose JWKS the policy names as a file, a
//! signed revocation list in `crl` mode, so no authority runs. Each AAT's audience is the front
//! door's resource URI, known before the proxy starts (its port is picked first). The proxy's
//! replay store (`aat.replay_store`) is a directory on tmpfs — the front door keeps DPoP proofs
//! in its own memory, so nothing of a call is written there —, its audit log a file in the
//! temporary directory.
//!
//! Before each proxy case, 100 sessions are opened (connections held) and the proxy's peak
//! resident size (`VmHWM`) read; it is read again after the load.
//!
//! ```text
//! cargo bench -p aip-proxy-verifier --bench front_door
//! AIP_BENCH_SECS=30 AIP_BENCH_ROUNDS=3 cargo bench -p aip-proxy-verifier --bench front_door
//! ```
//!
//! Settings (environment): `AIP_BENCH_SECS` (10) measured seconds per case, after one second
//! of warm-up; `AIP_BENCH_CLIENTS` (16); `AIP_BENCH_ROUNDS` (1), each running every case in
//! turn; `AIP_BENCH_CASES` (`direct,relay,bearer,dpop`), the cases to run; `AIP_PROXY`, another
//! `aip-proxy` binary to measure (default: the one Cargo built with this benchmark);
//! `AIP_BENCH_PM_QOS=1` holds a PM QoS CPU latency request of 0 for the run (root), as the
//! stdio harness does; `AIP_BENCH_RATE` (0) paces the clients to that many calls a second in
//! all, spread evenly over them, so that latencies are measured below saturation (0: each
//! client sends its next call as soon as the last is answered).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use aip_aat::clock::{Clock as _, SystemClock};
use aip_aat::dpop::{DpopRequest, create_dpop_proof};
use aip_aat::ids::{AgentId, Jti};
use aip_aat::keys::{Algorithm, Jwks, KeyPair};
use aip_aat::revocation::{RevocationList, SignedRevocationList};
use aip_aat::token::{
    AAT_VERSION, AatClaims, AgentClaims, Audience, AuthMethod, Capabilities, Confirmation, ContextClaims,
    DelegationScope, UserBinding, encode_aat,
};
use axum::http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;

/// The environment variable that makes this binary the relay of case 2 (its value: the
/// upstream's URL).
const RELAY_ROLE: &str = "AIP_FRONT_DOOR_BENCH_RELAY";
const ISSUER: &str = "https://issuer.bench.invalid";
const TOOL: &str = "read_file";
const PROTOCOL_VERSION: &str = "2025-06-18";
const WARM_UP: Duration = Duration::from_secs(1);
/// Sessions opened before the peak resident size is read.
const IDLE_SESSIONS: usize = 100;
/// Longest wait for the proxy's "MCP front door at" line.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The file the upstream's `read_file` returns: plain prose, nothing a DLP pattern matches.
const FILE_TEXT: &str = "Quarterly notes, section 4. The build finished in eleven minutes on the shared runner \
     and the cache hit rate stayed near ninety percent. Three flaky checks were retried once each and \
     passed. Next steps: split the slow integration suite, pin the toolchain, and move the nightly job \
     to the quiet hours. Nothing here needs attention before Monday.";
/// The DLP patterns of bench/harness/policy-dlp.yaml, as YAML list items.
const DLP_PATTERNS: &str = r#"      - name: "Email"
        regex: "[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\\.[a-zA-Z]{2,}"
      - name: "AWS Key"
        regex: "(A3T[A-Z0-9]|AKIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ASIA)[A-Z0-9]{16}"
      - name: "Generic Secret"
        regex: "(?i)(password|secret|token|api_key)\\s*[:=]\\s*['\"]?[^\\s'\"]+['\"]?"
"#;

static MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
static MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
static DPOP: HeaderName = HeaderName::from_static("dpop");

fn main() {
    if let Ok(upstream) = std::env::var(RELAY_ROLE) {
        relay::serve(upstream);
        return;
    }
    let settings = Settings::from_env();
    let _pm_qos = settings.pm_qos.then(hold_pm_qos);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(&settings));
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    Direct,
    Relay,
    Bearer,
    Dpop,
}

impl Case {
    const ALL: [Self; 4] = [Self::Direct, Self::Relay, Self::Bearer, Self::Dpop];

    fn key(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Relay => "relay",
            Self::Bearer => "bearer",
            Self::Dpop => "dpop",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Self::Direct => "direct (clients → upstream)",
            Self::Relay => "relay (axum + reqwest, looks at nothing)",
            Self::Bearer => "aip-proxy, Bearer + policy",
            Self::Dpop => "aip-proxy, DPoP + policy + DLP",
        }
    }
}

struct Settings {
    secs: u64,
    clients: usize,
    rounds: usize,
    cases: Vec<Case>,
    proxy: PathBuf,
    pm_qos: bool,
    /// Calls a second in all, paced (`None`: back to back).
    rate: Option<u64>,
}

impl Settings {
    fn from_env() -> Self {
        let number = |name: &str, default: u64| -> u64 {
            std::env::var(name).map_or(default, |v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number"))
            })
        };
        let cases = std::env::var("AIP_BENCH_CASES").map_or_else(
            |_| Case::ALL.to_vec(),
            |list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|name| {
                        Case::ALL.into_iter().find(|c| c.key() == name).unwrap_or_else(|| {
                            panic!("AIP_BENCH_CASES: unknown case {name:?}: use direct, relay, bearer, dpop")
                        })
                    })
                    .collect()
            },
        );
        let settings = Self {
            secs: number("AIP_BENCH_SECS", 10),
            clients: usize::try_from(number("AIP_BENCH_CLIENTS", 16)).unwrap(),
            rounds: usize::try_from(number("AIP_BENCH_ROUNDS", 1)).unwrap(),
            cases,
            pm_qos: std::env::var("AIP_BENCH_PM_QOS").is_ok_and(|v| v == "1"),
            rate: Some(number("AIP_BENCH_RATE", 0)).filter(|r| *r > 0),
            proxy: std::env::var_os("AIP_PROXY")
                .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_aip-proxy")), PathBuf::from),
        };
        assert!(
            settings.secs > 0 && settings.clients > 0 && settings.rounds > 0,
            "settings must be positive"
        );
        settings
    }
}

async fn run(settings: &Settings) {
    let upstream = upstream::start().await;
    let scratch = tempfile::Builder::new()
        .prefix("aip-front-door-bench")
        .tempdir()
        .unwrap();
    let tmpfs_base = std::env::var_os("XDG_RUNTIME_DIR").map_or_else(|| PathBuf::from("/dev/shm"), PathBuf::from);
    let replay_base = tempfile::Builder::new()
        .prefix("aip-front-door-bench-replay")
        .tempdir_in(&tmpfs_base)
        .unwrap();
    let offline = Offline::write(scratch.path());

    println!(
        "front door benchmark: {} clients, {} s per case after {} s of warm-up, keep-alive HTTP/1.1 on loopback",
        settings.clients,
        settings.secs,
        WARM_UP.as_secs()
    );
    if let Some(rate) = settings.rate {
        println!(
            "paced: {rate} calls/s in all (each client every {} µs)",
            settings.clients as u64 * 1_000_000 / rate
        );
    }
    println!(
        "machine: {} CPUs, load average {}",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        load_average()
    );
    println!("aip-proxy: {}", settings.proxy.display());
    println!(
        "PM QoS CPU latency request of 0 (idle cores poll): {}",
        if settings.pm_qos {
            "held"
        } else {
            "not held (AIP_BENCH_PM_QOS=1 holds it)"
        }
    );
    println!(
        "replay store: under {} ({}); audit log: under {} ({})",
        replay_base.path().display(),
        filesystem_of(replay_base.path()),
        scratch.path().display(),
        filesystem_of(scratch.path())
    );
    println!("upstream: {} (in this process)", upstream.url);

    for round in 1..=settings.rounds {
        println!();
        println!("## round {round} of {}", settings.rounds);
        let mut results: Vec<Measured> = Vec::new();
        for &case in &settings.cases {
            let measured = match case {
                Case::Direct => {
                    let target = Target::new(upstream.addr);
                    measure(settings, case, &target, &Auth::None, None, &upstream, None).await
                }
                Case::Relay => {
                    let relay = RelayChild::start(&upstream.url);
                    let target = Target::new(relay.addr);
                    measure(
                        settings,
                        case,
                        &target,
                        &Auth::None,
                        None,
                        &upstream,
                        Some(relay.child.id()),
                    )
                    .await
                }
                Case::Bearer | Case::Dpop => {
                    // The Bearer case's rate, else the relay's (the proxy is not faster), else a guess.
                    let estimate = [Case::Bearer, Case::Relay]
                        .iter()
                        .find_map(|c| results.iter().find(|m| m.case == *c))
                        .map_or(20_000.0, Measured::rate);
                    let dir = scratch.path().join(format!("round{round}-{}", case.key()));
                    let replay = replay_base.path().join(format!("round{round}-{}", case.key()));
                    std::fs::create_dir_all(&dir).unwrap();
                    // The proxy wants its replay store private.
                    std::fs::DirBuilder::new().mode(0o700).create(&replay).unwrap();
                    measure_proxy(settings, case, &offline, &dir, &replay, &upstream, estimate).await
                }
            };
            println!("{}", measured.one_line());
            results.push(measured);
        }
        println!();
        print!("{}", report(settings, &results));
    }
    println!();
    println!("load average at the end: {}", load_average());
}

/// The proxy cases: start `aip-proxy` for `case`, read its peak RSS with 100 sessions open,
/// run the load, read it again.
async fn measure_proxy(
    settings: &Settings,
    case: Case,
    offline: &Offline,
    dir: &Path,
    replay: &Path,
    upstream: &upstream::Upstream,
    rate_estimate: f64,
) -> Measured {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let aat = offline.aat(&url);
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, offline.policy(case, &url, replay)).unwrap();
    let proxy = ProxyChild::start(
        &settings.proxy,
        &policy,
        &format!("127.0.0.1:{port}"),
        &upstream.url,
        &dir.join("audit.jsonl"),
    );
    assert_eq!(
        proxy.url, url,
        "aip-proxy announced another resource URI than the one its AATs name"
    );
    let target = Target::new(SocketAddr::from(([127, 0, 0, 1], port)));
    let auth = match case {
        Case::Bearer => Auth::Bearer(HeaderValue::from_str(&format!("Bearer {aat}")).unwrap()),
        _ => Auth::Dpop(Arc::new(DpopAuth {
            authorization: HeaderValue::from_str(&format!("DPoP {aat}")).unwrap(),
            aat: aat.clone(),
            key: Arc::clone(&offline.agent),
            url: url.clone(),
        })),
    };

    let mut idle = Vec::with_capacity(IDLE_SESSIONS);
    for _ in 0..IDLE_SESSIONS {
        idle.push(
            Client::open(&target, auth.clone())
                .await
                .unwrap_or_else(|e| proxy.fail(&e)),
        );
    }
    let with_sessions = proxy.memory();
    drop(idle);

    let proofs = match &auth {
        Auth::Dpop(dpop) => {
            // Twice the estimate (a DPoP call costs more than a Bearer one), warm-up included.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let per_client = (rate_estimate * 2.0 * (settings.secs as f64 + WARM_UP.as_secs_f64())
                / settings.clients as f64) as usize
                + 100;
            let started = Instant::now();
            let proofs = make_proofs(dpop, settings.clients, per_client);
            println!(
                "  {} DPoP proofs made in {:.1} s, before the timing",
                per_client * settings.clients,
                started.elapsed().as_secs_f64()
            );
            Some(proofs)
        }
        _ => None,
    };
    let mut measured = measure(settings, case, &target, &auth, proofs, upstream, Some(proxy.child.id())).await;
    if let Some(error) = &measured.transport_error {
        proxy.fail(error);
    }
    measured.memory_with_sessions = Some(with_sessions);
    measured.memory_after = Some(proxy.memory());
    measured
}

/// Opens the clients' sessions, runs them for the warm-up and the measured time, and collects
/// the latencies of the measured part.
async fn measure(
    settings: &Settings,
    case: Case,
    target: &Target,
    auth: &Auth,
    proofs: Option<Vec<Vec<HeaderValue>>>,
    upstream: &upstream::Upstream,
    server: Option<u32>,
) -> Measured {
    let mut clients = Vec::with_capacity(settings.clients);
    for _ in 0..settings.clients {
        clients.push(
            Client::open(target, auth.clone())
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", case.key())),
        );
    }
    let mut proofs = proofs.map(Vec::into_iter);
    let upstream_before = upstream.calls();
    let warm_end = Instant::now() + WARM_UP;
    let end = warm_end + Duration::from_secs(settings.secs);
    // Paced: each client calls every `clients / rate` seconds, the clients' phases spread
    // evenly over that interval.
    let interval = settings
        .rate
        .map(|rate| Duration::from_secs_f64(settings.clients as f64 / rate as f64));
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            let proofs = proofs.as_mut().map(|p| p.next().unwrap().into_iter());
            let pace = interval.map(|every| Pace {
                every,
                first: Instant::now() + every.mul_f64(i as f64 / settings.clients as f64),
            });
            tokio::spawn(drive(client, proofs, pace, warm_end, end))
        })
        .collect();
    tokio::time::sleep_until(warm_end.into()).await;
    let cpu_start = CpuSample::take(server);
    tokio::time::sleep_until(end.into()).await;
    let cpu_end = CpuSample::take(server);
    let mut measured = Measured::new(case, settings.secs);
    let mut latencies = Vec::new();
    for task in tasks {
        let run = task.await.unwrap();
        latencies.extend_from_slice(&run.latencies);
        measured.answered += run.answered;
        measured.refused += run.refused;
        measured.out_of_proofs |= run.out_of_proofs;
        if measured.first_refusal.is_none() {
            measured.first_refusal = run.first_refusal;
        }
        if measured.transport_error.is_none() {
            measured.transport_error = run.transport_error;
        }
    }
    measured.upstream_calls = upstream.calls() - upstream_before;
    latencies.sort_unstable();
    measured.calls = latencies.len() as u64;
    measured.p50 = percentile(&latencies, 0.50);
    measured.p99 = percentile(&latencies, 0.99);
    measured.max = latencies.last().copied().unwrap_or_default();
    measured.cpu = cpu_end.since(&cpu_start);
    measured
}

/// CPU time in clock ticks (`USER_HZ`, 100 per second on Linux) from `/proc`: the whole
/// machine's, this process's (clients and upstream), and the server's (relay or proxy).
#[derive(Clone, Copy, Default)]
struct CpuSample {
    machine_busy: u64,
    machine_total: u64,
    bench: u64,
    server: Option<u64>,
}

impl CpuSample {
    fn take(server: Option<u32>) -> Self {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let ticks: Vec<u64> = stat
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("cpu "))
            .map(|rest| rest.split_whitespace().filter_map(|t| t.parse().ok()).collect())
            .unwrap_or_default();
        // user nice system idle iowait irq softirq steal (guest time is already in user).
        let total: u64 = ticks.iter().take(8).sum();
        let idle = ticks.get(3).copied().unwrap_or_default() + ticks.get(4).copied().unwrap_or_default();
        Self {
            machine_busy: total - idle,
            machine_total: total,
            bench: process_ticks(std::process::id()).unwrap_or_default(),
            server: server.and_then(process_ticks),
        }
    }

    fn since(&self, start: &Self) -> Cpu {
        Cpu {
            machine_busy: self.machine_busy.saturating_sub(start.machine_busy),
            machine_total: self.machine_total.saturating_sub(start.machine_total),
            bench: self.bench.saturating_sub(start.bench),
            server: self
                .server
                .zip(start.server)
                .map(|(end, start)| end.saturating_sub(start)),
        }
    }
}

/// CPU ticks spent during the measured time.
#[derive(Clone, Copy, Default)]
struct Cpu {
    machine_busy: u64,
    machine_total: u64,
    bench: u64,
    server: Option<u64>,
}

impl Cpu {
    /// The share of all CPUs' time used by other processes than the benchmark's.
    #[allow(clippy::cast_precision_loss)]
    fn others_share(&self) -> f64 {
        let ours = self.bench + self.server.unwrap_or_default();
        self.machine_busy.saturating_sub(ours) as f64 / self.machine_total.max(1) as f64
    }
}

/// User and system CPU ticks of process `pid`, all its threads.
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After "pid (comm) ": state is field 3; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// What one client did.
struct ClientRun {
    /// Nanoseconds per answered call started after the warm-up.
    latencies: Vec<u64>,
    /// Calls answered with a result, warm-up included.
    answered: u64,
    /// Calls answered with anything else.
    refused: u64,
    first_refusal: Option<String>,
    /// A broken connection, which ends the client.
    transport_error: Option<String>,
    out_of_proofs: bool,
}

/// When a paced client sends its calls: at `first`, then every `every`.
#[derive(Clone, Copy)]
struct Pace {
    every: Duration,
    first: Instant,
}

async fn drive(
    mut client: Client,
    mut proofs: Option<std::vec::IntoIter<HeaderValue>>,
    pace: Option<Pace>,
    warm_end: Instant,
    end: Instant,
) -> ClientRun {
    let mut next = pace.map(|p| p.first);
    let mut run = ClientRun {
        latencies: Vec::with_capacity(1 << 16),
        answered: 0,
        refused: 0,
        first_refusal: None,
        transport_error: None,
        out_of_proofs: false,
    };
    loop {
        if let (Some(at), Some(pace)) = (next.as_mut(), pace) {
            tokio::time::sleep_until((*at).into()).await;
            *at += pace.every;
        }
        let start = Instant::now();
        if start >= end {
            break;
        }
        let proof = match proofs.as_mut().map(Iterator::next) {
            None => None,
            Some(Some(proof)) => Some(proof),
            Some(None) => {
                run.out_of_proofs = true;
                break;
            }
        };
        match client.call(proof).await {
            Ok(()) => {
                run.answered += 1;
                if start >= warm_end {
                    run.latencies
                        .push(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
                }
            }
            Err(CallError::Refused(why)) => {
                run.refused += 1;
                run.first_refusal.get_or_insert(why);
            }
            Err(CallError::Transport(why)) => {
                run.transport_error = Some(why);
                break;
            }
        }
    }
    run
}

/// Nearest-rank percentile of sorted nanoseconds.
fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Where clients connect.
struct Target {
    addr: SocketAddr,
    host: HeaderValue,
}

impl Target {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            host: HeaderValue::from_str(&addr.to_string()).unwrap(),
        }
    }
}

/// How requests are authorized.
#[derive(Clone)]
enum Auth {
    None,
    Bearer(HeaderValue),
    Dpop(Arc<DpopAuth>),
}

struct DpopAuth {
    authorization: HeaderValue,
    aat: String,
    key: Arc<KeyPair>,
    url: String,
}

impl DpopAuth {
    fn proof(&self) -> HeaderValue {
        let request = DpopRequest {
            method: "POST",
            uri: &self.url,
            access_token: Some(&self.aat),
        };
        HeaderValue::from_str(&create_dpop_proof(&*self.key, &request, SystemClock.now()).unwrap()).unwrap()
    }
}

/// `per_client` fresh proofs for each of `clients` clients, made on all cores.
fn make_proofs(dpop: &DpopAuth, clients: usize, per_client: usize) -> Vec<Vec<HeaderValue>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(clients);
    let mut out: Vec<Vec<HeaderValue>> = Vec::with_capacity(clients);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t..clients)
                        .step_by(threads)
                        .map(|_| (0..per_client).map(|_| dpop.proof()).collect::<Vec<_>>())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for handle in handles {
            out.extend(handle.join().unwrap());
        }
    });
    out
}

enum CallError {
    /// Answered, but not with a result.
    Refused(String),
    /// No answer: the connection failed.
    Transport(String),
}

/// One MCP client: a keep-alive HTTP/1.1 connection and a session.
struct Client {
    sender: SendRequest<Full<Bytes>>,
    host: HeaderValue,
    session: Option<HeaderValue>,
    auth: Auth,
    next_id: u64,
}

impl Client {
    /// Connects, then `initialize` and `notifications/initialized`.
    async fn open(target: &Target, auth: Auth) -> Result<Self, String> {
        let stream = TcpStream::connect(target.addr)
            .await
            .map_err(|e| format!("connect to {}: {e}", target.addr))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        tokio::spawn(connection);
        let mut client = Self {
            sender,
            host: target.host.clone(),
            session: None,
            auth,
            next_id: 0,
        };
        let initialize = json!({
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "aip-front-door-bench", "version": "1"},
            },
        });
        let proof = client.setup_proof();
        let (status, headers, body) = client.post(initialize.to_string(), proof).await?;
        if status != StatusCode::OK {
            return Err(format!("initialize: HTTP {status}: {}", String::from_utf8_lossy(&body)));
        }
        let answer = json_answer(&headers, &body).map_err(|e| format!("initialize: {e}"))?;
        if answer.get("result").is_none() {
            return Err(format!("initialize: {answer}"));
        }
        let session = headers
            .get(&MCP_SESSION_ID)
            .ok_or_else(|| "initialize: the answer has no Mcp-Session-Id".to_owned())?;
        client.session = Some(session.clone());
        let proof = client.setup_proof();
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let (status, _, body) = client.post(initialized.to_string(), proof).await?;
        if !status.is_success() {
            return Err(format!(
                "notifications/initialized: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        Ok(client)
    }

    fn setup_proof(&self) -> Option<HeaderValue> {
        match &self.auth {
            Auth::Dpop(dpop) => Some(dpop.proof()),
            Auth::None | Auth::Bearer(_) => None,
        }
    }

    async fn post(
        &mut self,
        body: String,
        proof: Option<HeaderValue>,
    ) -> Result<(StatusCode, HeaderMap, Bytes), String> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri("/mcp")
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json, text/event-stream");
        if let Some(session) = &self.session {
            request = request
                .header(&MCP_SESSION_ID, session.clone())
                .header(&MCP_PROTOCOL_VERSION, PROTOCOL_VERSION);
        }
        match &self.auth {
            Auth::None => {}
            Auth::Bearer(authorization) => request = request.header(AUTHORIZATION, authorization.clone()),
            Auth::Dpop(dpop) => request = request.header(AUTHORIZATION, dpop.authorization.clone()),
        }
        if let Some(proof) = proof {
            request = request.header(&DPOP, proof);
        }
        let request = request.body(Full::new(Bytes::from(body))).map_err(|e| e.to_string())?;
        self.sender.ready().await.map_err(|e| format!("connection: {e}"))?;
        let answer = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let (parts, body) = answer.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("answer body: {e}"))?
            .to_bytes();
        Ok((parts.status, parts.headers, body))
    }

    /// One `tools/call` of `read_file`.
    async fn call(&mut self, proof: Option<HeaderValue>) -> Result<(), CallError> {
        self.next_id += 1;
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{},"method":"tools/call","params":{{"name":"{TOOL}","arguments":{{"path":"/srv/notes/q4.txt"}}}}}}"#,
            self.next_id
        );
        let (status, headers, body) = self.post(body, proof).await.map_err(CallError::Transport)?;
        if status != StatusCode::OK {
            return Err(CallError::Refused(format!(
                "HTTP {status} {:?}: {}",
                headers.get("www-authenticate"),
                String::from_utf8_lossy(&body)
            )));
        }
        let answer = json_answer(&headers, &body).map_err(CallError::Refused)?;
        if answer.get("result").is_some() && answer["id"] == self.next_id {
            Ok(())
        } else {
            Err(CallError::Refused(answer.to_string()))
        }
    }
}

/// The JSON-RPC message of an answer, sent as JSON or as an SSE stream.
fn json_answer(headers: &HeaderMap, body: &[u8]) -> Result<Value, String> {
    let is_sse = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !is_sse {
        return serde_json::from_slice(body)
            .map_err(|e| format!("answer is not JSON ({e}): {}", String::from_utf8_lossy(body)));
    }
    let text = std::str::from_utf8(body).map_err(|e| format!("SSE answer is not UTF-8: {e}"))?;
    text.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
        .find(|message| message.get("result").is_some() || message.get("error").is_some())
        .ok_or_else(|| format!("SSE answer without a JSON-RPC answer: {text}"))
}

/// A case's figures.
struct Measured {
    case: Case,
    secs: u64,
    /// Calls answered with a result in the measured time.
    calls: u64,
    p50: u64,
    p99: u64,
    max: u64,
    answered: u64,
    refused: u64,
    first_refusal: Option<String>,
    transport_error: Option<String>,
    out_of_proofs: bool,
    /// `tools/call` requests the upstream answered in the whole run (warm-up included).
    upstream_calls: u64,
    memory_with_sessions: Option<Memory>,
    memory_after: Option<Memory>,
    cpu: Cpu,
}

impl Measured {
    fn new(case: Case, secs: u64) -> Self {
        Self {
            case,
            secs,
            calls: 0,
            p50: 0,
            p99: 0,
            max: 0,
            answered: 0,
            refused: 0,
            first_refusal: None,
            transport_error: None,
            out_of_proofs: false,
            upstream_calls: 0,
            memory_with_sessions: None,
            memory_after: None,
            cpu: Cpu::default(),
        }
    }

    #[allow(clippy::cast_precision_loss)]
    fn rate(&self) -> f64 {
        self.calls as f64 / self.secs as f64
    }

    /// Microseconds of CPU per measured call: the server's (relay or proxy) and this process's.
    #[allow(clippy::cast_precision_loss)]
    fn cpu_per_call(&self) -> (Option<f64>, f64) {
        let per_call = |ticks: u64| ticks as f64 * 10_000.0 / self.calls.max(1) as f64;
        (self.cpu.server.map(per_call), per_call(self.cpu.bench))
    }

    fn one_line(&self) -> String {
        let mut line = format!(
            "  {}: {:.0} calls/s, p50 {} p99 {} max {}",
            self.case.key(),
            self.rate(),
            micros(self.p50),
            micros(self.p99),
            micros(self.max)
        );
        let (server, bench) = self.cpu_per_call();
        if let Some(server) = server {
            write!(line, ", CPU per call {server:.0} µs").unwrap();
        }
        write!(
            line,
            ", clients and upstream {bench:.0} µs, others {:.0} %",
            self.cpu.others_share() * 100.0
        )
        .unwrap();
        if let Some(memory) = self.memory_with_sessions {
            write!(line, ", aip-proxy VmHWM with {IDLE_SESSIONS} sessions {memory}").unwrap();
        }
        if let Some(memory) = self.memory_after {
            write!(line, ", after the load {memory}").unwrap();
        }
        line
    }
}

/// `VmHWM` and `VmRSS` of a process, in kB, and its number of threads.
#[derive(Clone, Copy)]
struct Memory {
    hwm_kb: u64,
    rss_kb: u64,
    threads: u64,
}

impl Memory {
    #[allow(clippy::cast_precision_loss)]
    fn hwm_mb(self) -> String {
        format!("{:.1}", self.hwm_kb as f64 / 1024.0)
    }
}

impl std::fmt::Display for Memory {
    #[allow(clippy::cast_precision_loss)]
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} MB (VmRSS {:.1} MB, {} threads)",
            self.hwm_kb as f64 / 1024.0,
            self.rss_kb as f64 / 1024.0,
            self.threads
        )
    }
}

#[allow(clippy::cast_precision_loss)]
fn micros(nanos: u64) -> String {
    format!("{:.0} µs", nanos as f64 / 1000.0)
}

#[allow(clippy::cast_precision_loss, clippy::cast_possible_wrap)]
fn difference(case: u64, base: u64) -> String {
    format!("{:+.0}", (case as i64 - base as i64) as f64 / 1000.0)
}

/// The round's table, the checks made on the way, and the targets.
fn report(settings: &Settings, results: &[Measured]) -> String {
    let direct = results.iter().find(|m| m.case == Case::Direct);
    let relay = results.iter().find(|m| m.case == Case::Relay);
    let mut out = String::new();
    writeln!(
        out,
        "| case | calls/s | p50 | p99 | max | added p50 / p99 vs direct | added p50 / p99 vs relay | CPU per call: relay or proxy / clients + upstream | other processes' CPU | aip-proxy VmHWM: {IDLE_SESSIONS} sessions → after the load |"
    )
    .unwrap();
    writeln!(out, "|---|---|---|---|---|---|---|---|---|---|").unwrap();
    for m in results {
        // Added latency: the relay against direct calls, the proxy against both.
        let versus = |base: Option<&Measured>| match base {
            Some(base) if base.case != m.case && m.case != Case::Direct => {
                format!("{} / {} µs", difference(m.p50, base.p50), difference(m.p99, base.p99))
            }
            _ => String::new(),
        };
        let memory = match (m.memory_with_sessions, m.memory_after) {
            (Some(before), Some(after)) => format!("{} → {} MB", before.hwm_mb(), after.hwm_mb()),
            _ => String::new(),
        };
        let (server, bench) = m.cpu_per_call();
        let cpu = match server {
            Some(server) => format!("{server:.0} / {bench:.0} µs"),
            None => format!("— / {bench:.0} µs"),
        };
        writeln!(
            out,
            "| {} | {:.0} | {} | {} | {} | {} | {} | {cpu} | {:.0} % | {memory} |",
            m.case.title(),
            m.rate(),
            micros(m.p50),
            micros(m.p99),
            micros(m.max),
            versus(direct),
            versus(relay),
            m.cpu.others_share() * 100.0,
        )
        .unwrap();
    }
    for m in results {
        if m.refused > 0 {
            writeln!(
                out,
                "WARNING {}: {} calls answered without a result; the first: {}",
                m.case.key(),
                m.refused,
                m.first_refusal.as_deref().unwrap_or_default()
            )
            .unwrap();
        }
        if let Some(error) = &m.transport_error {
            writeln!(
                out,
                "WARNING {}: a connection failed, its client stopped: {error}",
                m.case.key()
            )
            .unwrap();
        }
        if m.out_of_proofs {
            writeln!(
                out,
                "WARNING {}: a client used up its pre-made DPoP proofs and stopped early: the rate is too low",
                m.case.key()
            )
            .unwrap();
        }
        if m.upstream_calls != m.answered {
            writeln!(
                out,
                "WARNING {}: the upstream answered {} calls, the clients received {} results",
                m.case.key(),
                m.upstream_calls,
                m.answered
            )
            .unwrap();
        }
    }
    writeln!(
        out,
        "every answered call checked: HTTP 200, a JSON-RPC result for its id; the upstream's count of tools/call matched unless a warning says otherwise"
    )
    .unwrap();
    let dpop = results.iter().find(|m| m.case == Case::Dpop);
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    if let (Some(dpop), Some(direct)) = (dpop, direct) {
        #[allow(clippy::cast_possible_wrap)]
        let added = dpop.p50 as i64 - direct.p50 as i64;
        writeln!(
            out,
            "target: DPoP + policy + DLP added p50 vs direct ≤ 150 µs: {} µs ({}, {} clients)",
            difference(dpop.p50, direct.p50),
            met(added <= 150_000),
            settings.clients
        )
        .unwrap();
    }
    for m in results.iter().filter(|m| matches!(m.case, Case::Bearer | Case::Dpop)) {
        writeln!(
            out,
            "target: ≥ 10 000 calls/s through the proxy, {}: {:.0} calls/s ({})",
            m.case.key(),
            m.rate(),
            met(m.rate() >= 10_000.0)
        )
        .unwrap();
        if let Some(memory) = m.memory_with_sessions {
            writeln!(
                out,
                "target: peak RSS ≤ 30 MB with {IDLE_SESSIONS} sessions, {}: {memory} ({})",
                m.case.key(),
                met(memory.hwm_kb <= 30 * 1024)
            )
            .unwrap();
        }
    }
    out
}

/// Holds a PM QoS CPU latency request of 0 while the file stays open, so that idle cores poll
/// instead of halting (bench/proxy/stdio-harness.sh, `AIP_BENCH_PM_QOS`). Root only.
fn hold_pm_qos() -> std::fs::File {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/cpu_dma_latency")
        .unwrap_or_else(|e| panic!("AIP_BENCH_PM_QOS=1 needs write access to /dev/cpu_dma_latency: {e}"));
    std::io::Write::write_all(&mut file, b"0").unwrap();
    file
}

/// A port free now, for the proxy to bind next (so that the AAT can name its URL first).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "unknown".into(),
        |text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    )
}

/// The type of the filesystem holding `path` (the longest mount point that contains it).
fn filesystem_of(path: &Path) -> String {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return "filesystem unknown".into();
    };
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, point, kind) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(point).then(|| (point.len(), kind.to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "filesystem unknown".into(), |(_, kind)| kind)
}

/// What the offline AATs need: the issuer and agent keys, the JWKS and the signed revocation
/// list on disk.
struct Offline {
    issuer: KeyPair,
    agent: Arc<KeyPair>,
    agent_id: AgentId,
    jwks: PathBuf,
    crl: PathBuf,
}

impl Offline {
    fn write(dir: &Path) -> Self {
        let issuer = KeyPair::generate(Algorithm::EdDSA).unwrap();
        let agent = KeyPair::generate(Algorithm::EdDSA).unwrap();
        let jwks = dir.join("jwks.json");
        std::fs::write(
            &jwks,
            serde_json::to_vec_pretty(&Jwks::from_keys([issuer.public_key()])).unwrap(),
        )
        .unwrap();
        let at = time::OffsetDateTime::from_unix_timestamp(SystemClock.now()).unwrap();
        let signed = SignedRevocationList::new(RevocationList::empty(1, at), at, at + time::Duration::days(1));
        let crl = dir.join("revocations.jws");
        std::fs::write(&crl, signed.sign(&issuer).unwrap()).unwrap();
        Self {
            issuer,
            agent: Arc::new(agent),
            agent_id: AgentId::random().unwrap(),
            jwks,
            crl,
        }
    }

    /// An AAT for the agent, for `read_file`, bound to the agent's key, naming `audience`.
    fn aat(&self, audience: &str) -> String {
        let now = SystemClock.now();
        let claims = AatClaims {
            aat_version: AAT_VERSION.into(),
            iss: ISSUER.into(),
            sub: self.agent_id.clone(),
            aud: Audience::one(audience),
            iat: now,
            exp: now + 3_600,
            nbf: None,
            jti: Jti::random().unwrap(),
            agent: AgentClaims {
                id: self.agent_id.clone(),
                name: Some("front door bench agent".into()),
                public_key_thumbprint: self.agent.key_id().clone(),
                aid_hash: None,
            },
            user_binding: Some(UserBinding {
                user_id: "bench-user".into(),
                auth_method: AuthMethod::ApiKey,
                auth_time: now,
                delegation_scope: Some(DelegationScope::Tools),
            }),
            capabilities: Capabilities {
                tools: vec![TOOL.into()],
                ..Capabilities::default()
            },
            context: ContextClaims {
                session_id: "bench-session".into(),
                policy_hash: None,
                registry_id: None,
            },
            cnf: Some(Confirmation {
                jkt: self.agent.key_id().clone(),
            }),
        };
        encode_aat(&claims, &self.issuer).unwrap()
    }

    /// The policy of a proxy case: AATs required, `read_file` allowed; for `Case::Dpop` proofs
    /// required and DLP on both directions.
    fn policy(&self, case: Case, url: &str, replay: &Path) -> String {
        let (require_proof, dlp) = match case {
            Case::Dpop => (
                true,
                format!(
                    "  dlp:\n    enabled: true\n    scan_requests: true\n    scan_responses: true\n    patterns:\n{DLP_PATTERNS}"
                ),
            ),
            _ => (false, String::new()),
        };
        format!(
            "apiVersion: aip.io/v1alpha3\nkind: AgentPolicy\nmetadata:\n  name: bench-front-door-{case}\nspec:\n  \
             allowed_tools:\n    - {TOOL}\n{dlp}  registry:\n    enabled: true\n    endpoint: \
             \"https://registry.bench.invalid\"\n    jwks_file: \"{jwks}\"\n    revocation:\n      mode: crl\n      \
             crl_path: \"{crl}\"\n      check_interval: 60s\n  aat:\n    enabled: true\n    require: true\n    \
             require_proof: {require_proof}\n    trusted_issuers: [\"{ISSUER}\"]\n    audience: \"{url}\"\n    \
             replay_store: \"{replay}\"\n",
            case = case.key(),
            jwks = self.jwks.display(),
            crl = self.crl.display(),
            replay = replay.display(),
        )
    }
}

/// The `aip-proxy` child of a proxy case; killed when dropped.
struct ProxyChild {
    child: Child,
    url: String,
    /// The last lines of its stderr, for failures.
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl ProxyChild {
    fn start(proxy: &Path, policy: &Path, serve: &str, upstream: &str, audit: &Path) -> Self {
        let mut child = Command::new(proxy)
            .arg("--policy")
            .arg(policy)
            .args(["--serve", serve, "--upstream", upstream])
            .arg("--audit")
            .arg(audit)
            .env("AIP_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", proxy.display()));
        let stderr = child.stderr.take().unwrap();
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let (ready, announced) = mpsc::channel();
        let lines = Arc::clone(&tail);
        // Reads stderr to its end, so that the proxy never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find("MCP front door at ") {
                    let url = line[at + "MCP front door at ".len()..]
                        .split_whitespace()
                        .next()
                        .unwrap_or_default();
                    let _ = ready.send(url.to_owned());
                }
                let mut lines = lines.lock().unwrap();
                if lines.len() == 40 {
                    lines.pop_front();
                }
                lines.push_back(line);
            }
        });
        let mut proxy = Self {
            child,
            url: String::new(),
            tail,
        };
        match announced.recv_timeout(START_TIMEOUT) {
            Ok(url) => proxy.url = url,
            Err(_) => proxy.fail("no \"MCP front door at\" line on stderr"),
        }
        proxy
    }

    fn memory(&self) -> Memory {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc/{}/status", self.child.id()))
        };
        Memory {
            hwm_kb: field("VmHWM:"),
            rss_kb: field("VmRSS:"),
            threads: field("Threads:"),
        }
    }

    fn fail(&self, what: &str) -> ! {
        std::thread::sleep(Duration::from_millis(200));
        let tail = self.tail.lock().unwrap().iter().cloned().collect::<Vec<_>>().join("\n");
        panic!("aip-proxy: {what}\nits last stderr lines:\n{tail}");
    }
}

impl Drop for ProxyChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// This binary run as the relay of case 2; stopped when dropped.
struct RelayChild {
    child: Child,
    stdin: Option<ChildStdin>,
    addr: SocketAddr,
}

impl RelayChild {
    fn start(upstream: &str) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(RELAY_ROLE, upstream)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("relay at ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("the relay did not start: {line:?}"));
        Self {
            stdin: child.stdin.take(),
            child,
            addr,
        }
    }
}

impl Drop for RelayChild {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Case 2's relay: an axum server whose every request goes to the upstream through a reqwest
/// client, with the body and the MCP headers, and comes back the same way.
mod relay {
    use std::io::{Read as _, Write as _};
    use std::sync::Arc;

    use axum::Router;
    use axum::extract::State;
    use axum::http::header::{ACCEPT, CONTENT_TYPE};
    use axum::http::{HeaderMap, Method, StatusCode};
    use axum::response::{IntoResponse as _, Response};
    use axum::routing::any;
    use axum::serve::ListenerExt as _;
    use hyper::body::Bytes;
    use tokio::net::TcpListener;

    use super::{MCP_PROTOCOL_VERSION, MCP_SESSION_ID};

    struct Relay {
        client: reqwest::Client,
        upstream: String,
    }

    /// Serves until its stdin closes. Prints `relay at ADDR` when it listens.
    pub(super) fn serve(upstream: String) {
        std::thread::spawn(|| {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            std::process::exit(0);
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let relay = Arc::new(Relay {
                client: reqwest::Client::builder().build().unwrap(),
                upstream,
            });
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            println!("relay at {}", listener.local_addr().unwrap());
            std::io::stdout().flush().unwrap();
            let app = Router::new().route("/mcp", any(forward)).with_state(relay);
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, app).await.unwrap();
        });
    }

    async fn forward(State(relay): State<Arc<Relay>>, method: Method, headers: HeaderMap, body: Bytes) -> Response {
        let mut request = relay.client.request(method, &relay.upstream).body(body);
        for name in [
            CONTENT_TYPE,
            ACCEPT,
            MCP_SESSION_ID.clone(),
            MCP_PROTOCOL_VERSION.clone(),
        ] {
            if let Some(value) = headers.get(&name) {
                request = request.header(name, value.clone());
            }
        }
        let answer = match request.send().await {
            Ok(answer) => answer,
            Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
        };
        let status = answer.status();
        let mut out = HeaderMap::new();
        for name in [CONTENT_TYPE, MCP_SESSION_ID.clone()] {
            if let Some(value) = answer.headers().get(&name) {
                out.insert(name, value.clone());
            }
        }
        match answer.bytes().await {
            Ok(body) => (status, out, body).into_response(),
            Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
        }
    }
}

/// The upstream: a minimal Streamable HTTP MCP server with one tool, answering JSON.
mod upstream {
    use std::collections::HashSet;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, RwLock};

    use axum::Router;
    use axum::extract::State;
    use axum::http::header::CONTENT_TYPE;
    use axum::http::{HeaderMap, HeaderValue, StatusCode};
    use axum::response::{IntoResponse as _, Response};
    use axum::routing::post;
    use axum::serve::ListenerExt as _;
    use hyper::body::Bytes;
    use serde_json::{Value, json};
    use tokio::net::TcpListener;

    use super::{FILE_TEXT, MCP_SESSION_ID, PROTOCOL_VERSION, TOOL};

    pub(super) struct Upstream {
        pub(super) addr: SocketAddr,
        pub(super) url: String,
        state: Arc<Server>,
    }

    impl Upstream {
        /// `tools/call` requests answered so far.
        pub(super) fn calls(&self) -> u64 {
            self.state.calls.load(Ordering::Relaxed)
        }
    }

    struct Server {
        sessions: RwLock<HashSet<String>>,
        next_session: AtomicU64,
        /// Makes this run's session ids differ from another run's.
        prefix: String,
        calls: AtomicU64,
    }

    pub(super) async fn start() -> Upstream {
        let mut random = [0_u8; 8];
        getrandom::fill(&mut random).unwrap();
        let state = Arc::new(Server {
            sessions: RwLock::new(HashSet::new()),
            next_session: AtomicU64::new(1),
            prefix: hex::encode(random),
            calls: AtomicU64::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/mcp", post(mcp).get(no_stream).delete(end_session))
            .with_state(Arc::clone(&state));
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Upstream {
            addr,
            url: format!("http://{addr}/mcp"),
            state,
        }
    }

    fn json_response(status: StatusCode, body: &Value, session: Option<String>) -> Response {
        let mut response = (status, [(CONTENT_TYPE, "application/json")], body.to_string()).into_response();
        if let Some(session) = session {
            response
                .headers_mut()
                .insert(&MCP_SESSION_ID, HeaderValue::from_str(&session).unwrap());
        }
        response
    }

    fn error(status: StatusCode, id: &Value, code: i64, message: &str) -> Response {
        json_response(
            status,
            &json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}),
            None,
        )
    }

    async fn mcp(State(server): State<Arc<Server>>, headers: HeaderMap, body: Bytes) -> Response {
        let Ok(message) = serde_json::from_slice::<Value>(&body) else {
            return error(StatusCode::BAD_REQUEST, &Value::Null, -32700, "parse error");
        };
        let id = message.get("id").cloned();
        let Some(method) = message.get("method").and_then(Value::as_str) else {
            // A client's answer to a server request: nothing to say.
            return StatusCode::ACCEPTED.into_response();
        };
        if method == "initialize" {
            let session = format!(
                "{}-{}",
                server.prefix,
                server.next_session.fetch_add(1, Ordering::Relaxed)
            );
            server.sessions.write().unwrap().insert(session.clone());
            let version = message["params"]["protocolVersion"]
                .as_str()
                .unwrap_or(PROTOCOL_VERSION);
            let result = json!({
                "jsonrpc": "2.0",
                "id": id,
                "result": {
                    "protocolVersion": version,
                    "capabilities": {"tools": {"listChanged": false}},
                    "serverInfo": {"name": "front-door-bench-upstream", "version": "1"},
                },
            });
            return json_response(StatusCode::OK, &result, Some(session));
        }
        let known = headers
            .get(&MCP_SESSION_ID)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|session| server.sessions.read().unwrap().contains(session));
        let id = match id {
            Some(id) if known => id,
            Some(id) => return error(StatusCode::NOT_FOUND, &id, -32001, "unknown or missing Mcp-Session-Id"),
            None if known => return StatusCode::ACCEPTED.into_response(),
            None => return StatusCode::NOT_FOUND.into_response(),
        };
        let result = match method {
            "ping" => json!({}),
            "tools/list" => json!({"tools": [{
                "name": TOOL,
                "description": "Reads a text file.",
                "inputSchema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
            }]}),
            "tools/call" if message["params"]["name"] == TOOL => {
                server.calls.fetch_add(1, Ordering::Relaxed);
                json!({"content": [{"type": "text", "text": FILE_TEXT}], "isError": false})
            }
            "tools/call" => return error(StatusCode::OK, &id, -32602, "unknown tool"),
            _ => return error(StatusCode::OK, &id, -32601, "method not found"),
        };
        json_response(
            StatusCode::OK,
            &json!({"jsonrpc": "2.0", "id": id, "result": result}),
            None,
        )
    }

    /// This server offers no stream of its own (allowed by the transport).
    async fn no_stream() -> StatusCode {
        StatusCode::METHOD_NOT_ALLOWED
    }

    async fn end_session(State(server): State<Arc<Server>>, headers: HeaderMap) -> StatusCode {
        let removed = headers
            .get(&MCP_SESSION_ID)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|session| server.sessions.write().unwrap().remove(session));
        if removed { StatusCode::OK } else { StatusCode::NOT_FOUND }
    }
}
