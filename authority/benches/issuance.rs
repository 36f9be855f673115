//! AAT issuance over real HTTP on loopback: concurrent agents each run the full flow —
//! `POST /v1/challenge`, sign it, `POST /v1/token` (API-key user) — against the registry and
//! issuer served in-process exactly as `aip-ca serve` composes them. With
//! `AIP_BENCH_FLOW=oauth` each agent instead signs a client assertion and sends one
//! `POST /oauth/token` (`client_credentials`, `private_key_jwt`), as a standard OAuth client does. Clients run in the same
//! process, on the same two cores, in a runtime of their own whose threads are named, so the
//! CPU time of the authority (server threads and any PostgreSQL processes) and of the clients
//! is reported apart. Each agent keeps one HTTP/1.1 connection (hyper's client connection)
//! and sends and reads the typed bodies `AgentClient` does.
//!
//! ```text
//! cargo bench -p aip-authority --bench issuance                       # SQLite
//! AIP_BENCH_BACKEND=postgres AIP_TEST_POSTGRES_URL=postgres://… cargo bench -p aip-authority --bench issuance
//! ```
//! `AIP_BENCH_CLIENTS` (default 32) and `AIP_BENCH_SECONDS` (default 10) tune the run;
//! `AIP_BENCH_RATE_LIMITS=off` serves without the rate limits (by default they are on, set far
//! above the load, so that what they cost is measured); `AIP_BENCH_FLOW` is `aip` (the
//! default) or `oauth`.
//! Results: docs/benchmarks.md.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aip_aat::challenge::ChallengeProof;
use aip_aat::client_assertion::create_client_assertion;
use aip_aat::clock::{Clock as _, SystemClock};
use aip_aat::ids::AgentId;
use aip_aat::keys::{Algorithm, KeyPair};
use aip_aat::secret::SecretString;
use aip_api::issuer::{
    ChallengeRequest, ChallengeResponse, GrantType, RequestedCapabilities, TokenFormat, TokenRequest, TokenResponse,
    UserAuthorization,
};
use aip_authority::rate_limit::{RateLimitSection, RateLimits};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use support::{BenchAuthority, CpuSplit, env_or, throughput};

#[path = "support/mod.rs"]
mod support;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

/// An agent's HTTP/1.1 connection to the authority (hyper's client connection, kept alive, no
/// pool): a lean load generator, so that the agents take as little as they can of the two
/// cores they share with the authority.
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl Connection {
    async fn open(address: SocketAddr) -> Self {
        let stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        Self {
            sender,
            host: address.to_string(),
        }
    }

    /// `POST path` with a JSON body; the typed answer, which must be a success.
    async fn call<T: DeserializeOwned>(&mut self, path: &str, body: &impl Serialize) -> T {
        self.call_as(None, path, body).await
    }

    /// `POST path` with a form body; the JSON answer, which must be a success.
    async fn call_form(&mut self, path: &str, form: String) -> Value {
        let request = hyper::Request::post(path)
            .header(HOST, &self.host)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form)))
            .unwrap();
        self.send(request).await
    }

    /// Sends `request`; the typed answer, which must be a success.
    async fn send<T: DeserializeOwned>(&mut self, request: hyper::Request<Full<Bytes>>) -> T {
        self.sender.ready().await.unwrap();
        let response = self.sender.send_request(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(status.is_success(), "{status}: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    }

    /// [`call`](Self::call) with a bearer token.
    async fn call_as<T: DeserializeOwned>(&mut self, token: Option<&str>, path: &str, body: &impl Serialize) -> T {
        let mut request = hyper::Request::post(path)
            .header(HOST, &self.host)
            .header(CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(Bytes::from(serde_json::to_vec(body).unwrap())))
            .unwrap();
        self.send(request).await
    }
}

/// Which flow the agents run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// `POST /v1/challenge` + `POST /v1/token` for an API-key user.
    Aip,
    /// `POST /oauth/token`, `client_credentials` with `private_key_jwt`.
    OAuth,
}

/// One agent's loop until `deadline`: latencies of complete flows.
async fn agent_loop(
    flow: Flow,
    address: SocketAddr,
    key: KeyPair,
    agent_id: AgentId,
    api_key: String,
    deadline: Instant,
) -> Vec<Duration> {
    match flow {
        Flow::Aip => aip_loop(address, key, agent_id, api_key, deadline).await,
        Flow::OAuth => oauth_loop(address, key, agent_id, deadline).await,
    }
}

/// `client_credentials` until `deadline`, as an OAuth client library sends it: a fresh client
/// assertion per request, the form, the JSON answer.
async fn oauth_loop(address: SocketAddr, key: KeyPair, agent_id: AgentId, deadline: Instant) -> Vec<Duration> {
    let mut latencies = Vec::new();
    let mut http = Connection::open(address).await;
    while Instant::now() < deadline {
        let started = Instant::now();
        let assertion = create_client_assertion(&key, agent_id.as_str(), ISSUER, SystemClock.now(), 60).unwrap();
        let form = format!(
            "grant_type=client_credentials&client_assertion_type={}&client_assertion={assertion}\
             &resource=https%3A%2F%2Ffiles.example%2Fmcp&scope=read_file",
            "urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"
        );
        let reply = http.call_form("/oauth/token", form).await;
        assert!(reply["access_token"].as_str().is_some_and(|t| !t.is_empty()));
        latencies.push(started.elapsed());
    }
    latencies
}

/// The issuer identifier of the benchmark's authority (its public URL).
const ISSUER: &str = "http://127.0.0.1:8443";

/// The challenge-and-token flow until `deadline`. Requests and answers are typed, as the
/// toolkit's `AgentClient` sends and reads them.
async fn aip_loop(
    address: SocketAddr,
    key: KeyPair,
    agent_id: AgentId,
    api_key: String,
    deadline: Instant,
) -> Vec<Duration> {
    let mut latencies = Vec::new();
    let mut http = Connection::open(address).await;
    let challenge_request = ChallengeRequest {
        agent_id: agent_id.clone(),
    };
    let user = UserAuthorization::ApiKey {
        token: SecretString::new(api_key),
    };
    while Instant::now() < deadline {
        let started = Instant::now();
        let challenge: ChallengeResponse = http.call("/v1/challenge", &challenge_request).await;
        let proof = ChallengeProof::create(&key, &challenge.challenge, &agent_id, SystemClock.now()).unwrap();
        let request = TokenRequest {
            grant_type: GrantType::AgentAuthentication,
            agent_id: agent_id.clone(),
            proof,
            user_authorization: Some(user.clone()),
            requested_capabilities: Some(RequestedCapabilities {
                tools: vec!["read_file".into()],
                ..Default::default()
            }),
            audience: "files-proxy".into(),
            refresh_token: None,
            token_format: TokenFormat::Jwt,
        };
        let reply: TokenResponse = http.call("/v1/token", &request).await;
        assert!(!reply.aat.expose().is_empty());
        latencies.push(started.elapsed());
    }
    latencies
}

/// The rate limits to serve with (`AIP_BENCH_RATE_LIMITS`): `on` (the default), every limit
/// at its largest, far above the load, or `off`.
fn rate_limits() -> Option<Arc<RateLimits>> {
    match std::env::var("AIP_BENCH_RATE_LIMITS").as_deref() {
        Ok("off") => None,
        Ok("on") | Err(_) => {
            let most = 1_000_000;
            RateLimits::new(&RateLimitSection {
                registration_per_address: most,
                registration_per_token: most,
                token_per_address: most,
                token_per_agent: most,
                failed_auth_per_address: most,
                failed_auth_per_credential: most,
                ..RateLimitSection::default()
            })
        }
        Ok(other) => panic!("AIP_BENCH_RATE_LIMITS must be on or off, not {other:?}"),
    }
}

async fn run() {
    let flow = match std::env::var("AIP_BENCH_FLOW").as_deref() {
        Ok("aip") | Err(_) => Flow::Aip,
        Ok("oauth") => Flow::OAuth,
        Ok(other) => panic!("AIP_BENCH_FLOW must be aip or oauth, not {other:?}"),
    };
    let clients = env_or("AIP_BENCH_CLIENTS", 32);
    let seconds = env_or("AIP_BENCH_SECONDS", 10);
    let mut aip = BenchAuthority::start().await;
    aip.opened.rate_limits = rate_limits();
    let limited = if aip.opened.rate_limits.is_some() { "on" } else { "off" };
    let router = aip.opened.router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .await
            .unwrap();
    });
    let mut setup = Connection::open(address).await;
    let admin = Some(aip.init.admin_token.expose());
    let user: Value = setup
        .call_as(
            admin,
            "/v1/users",
            &json!({"user_id": "bench@example.com", "delegatable_tools": ["*"]}),
        )
        .await;
    let api_key = user["api_key"].as_str().unwrap().to_owned();
    let mut agents = Vec::new();
    for n in 0..clients {
        let key = KeyPair::generate(Algorithm::EdDSA).unwrap();
        let fields = json!({
            "name": format!("bench agent {n}"),
            "capabilities": ["read_file", "list_directory"],
            "autonomous": flow == Flow::OAuth,
        });
        let body = aip_api::registry::registration_body(&key, fields, SystemClock.now()).unwrap();
        let reply: Value = setup.call_as(admin, "/v1/agents", &body).await;
        agents.push((key, reply["agent_id"].as_str().unwrap().parse::<AgentId>().unwrap()));
    }

    // The agents run on their own runtime and connections, so their CPU time is told apart.
    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(CLIENT_THREADS)
        .enable_all()
        .build()
        .unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let flow_name = match flow {
        Flow::Aip => "challenge + /v1/token",
        Flow::OAuth => "/oauth/token client_credentials",
    };
    println!(
        "# issuance benchmark: backend {}, {flow_name}, {clients} concurrent agents, {cores} cores, {seconds} s, \
         rate limits {limited}\n",
        aip.backend
    );
    // Warm up connections and caches, then measure.
    for (warmup, secs) in [(true, 1), (false, seconds)] {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let started = Instant::now();
        let cpu_before = CpuSplit::now(CLIENT_THREADS);
        let tasks: Vec<_> = agents
            .iter()
            .map(|(key, agent_id)| {
                client_runtime.spawn(agent_loop(
                    flow,
                    address,
                    key.clone_for_bench(),
                    agent_id.clone(),
                    api_key.clone(),
                    deadline,
                ))
            })
            .collect();
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await.unwrap());
        }
        let elapsed = started.elapsed();
        let cpu = CpuSplit::now(CLIENT_THREADS).since(cpu_before);
        if warmup {
            continue;
        }
        latencies.sort();
        println!("| measurement | result |");
        println!("|---|---|");
        println!(
            "| AATs issued ({flow_name}), {clients} agents | {} |",
            throughput(&latencies, elapsed)
        );
        let per_aat = |seconds: f64| seconds * 1e6 / latencies.len() as f64;
        let authority = cpu.server + cpu.database;
        println!(
            "| CPU per AAT | authority {:.0} µs (database server {:.0} µs), clients {:.0} µs; \
             busy {:.0} % of {cores} cores |",
            per_aat(authority),
            per_aat(cpu.database),
            per_aat(cpu.clients),
            (authority + cpu.clients) * 100.0 / (elapsed.as_secs_f64() * cores as f64),
        );
        println!(
            "| AATs/s the authority's CPU time alone would allow on {cores} cores (derived) | {:.0}/s |",
            cores as f64 * 1e6 / per_aat(authority)
        );
    }
    client_runtime.shutdown_background();

    aip.finish().await;
}

/// Name prefix of the client runtime's threads.
const CLIENT_THREADS: &str = "bench-client";

/// Test keys are cheap to copy for the benchmark's tasks.
trait CloneForBench {
    fn clone_for_bench(&self) -> Self;
}

impl CloneForBench for KeyPair {
    fn clone_for_bench(&self) -> Self {
        Self::from_pkcs8_der(&self.to_pkcs8_der().unwrap()).unwrap()
    }
}
