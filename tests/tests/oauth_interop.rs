//! The issuer's OAuth face driven by independent clients, none of them our code: a real
//! `aip-ca serve` (agents registered and their keys exported with the real CLI) and, as child
//! processes,
//! - the official MCP Python SDK (`PrivateKeyJWTOAuthProvider` + `SignedJWTParameters`, an
//!   Ed25519 agent) and the official TypeScript SDK (`PrivateKeyJwtProvider`, a P-256 agent
//!   given its PEM and an Ed25519 agent given a JWK), each connecting over Streamable HTTP to an
//!   MCP server built with the Python SDK whose resource-server auth names the authority (RFC
//!   9728) and verifies AATs with joserfc against `/v1/jwks` (`tests/python/`);
//! - authlib: `private_key_jwt` signed by authlib, introspection (RFC 7662), revocation (RFC
//!   7009) and the refresh of a `/v1/token` session through `grant_type=refresh_token`.
//!
//! Every AAT the clients obtain then passes a real `aip-proxy` (stdio, AATs required from the
//! authority as issuer, for the server's resource URL as audience) in front of a small MCP
//! server, with a per-call proof by the agent's key; the revoked one is refused. The authlib
//! test runs on SQLite and on PostgreSQL (`AIP_TEST_POSTGRES_URL`).
//!
//! Peers: `python3 -m pip install -r tests/python/requirements.txt` and
//! `npm ci --prefix tests/mcp`. Without them a test reports itself skipped, naming what is
//! missing; under `CI` a missing peer fails it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

use std::io::Write as _;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use aip_aat::challenge::ChallengeProof;
use aip_aat::clock::{Clock as _, SystemClock};
use aip_aat::ids::AgentId;
use aip_aat::keys::KeyPair;
use aip_aat::proof::{Call, create_proof};
use aip_api::client::Client;
use aip_api::issuer::{ChallengeRequest, ChallengeResponse, GrantType, TokenFormat, TokenRequest, TokenResponse};
use aip_tests::{Agent, Authority, Listening, Peer, PostgresDb, peers_ready, python, tests_dir};
use serde_json::{Value, json};

/// The one tool of the protected MCP server, and the scope the clients ask for.
const TOOL: &str = "whoami";

/// Runs a peer to completion: its JSON answer on stdout (else a panic with both streams).
fn run_peer(cmd: &mut Command) -> Value {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{cmd:?} exited with {}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}\nstderr: {stderr}"))
}

/// The agent's key, read from the directory `register-agent` wrote.
fn key_of(agent: &Agent) -> KeyPair {
    aip_aat::keyfile::read(&agent.dir.join("agent.key"), None).unwrap()
}

/// Registers an autonomous agent with `alg` (`ed25519` or `p256`) for `whoami` and
/// `read_file`, and exports its key.
fn register(authority: &Authority, name: &str, alg: &str) -> Agent {
    authority.register(name, alg, &format!("{TOOL},read_file"))
}

/// A refresh token of a `/v1/token` session of `agent` (the `agent_attestation` grant) at
/// `authority`, for `audience`.
fn session_refresh_token(authority: &Authority, agent: &Agent, audience: &str) -> String {
    let key = key_of(agent);
    let agent_id: AgentId = agent.id.parse().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = Client::new(&authority.url, None).unwrap();
        let asked = ChallengeRequest {
            agent_id: agent_id.clone(),
        };
        let (status, body) = client.challenge(&asked).await.unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let challenge: ChallengeResponse = serde_json::from_slice(&body).unwrap();
        let proof = ChallengeProof::create(&key, &challenge.challenge, &agent_id, SystemClock.now()).unwrap();
        let request = TokenRequest {
            grant_type: GrantType::AgentAttestation,
            agent_id,
            proof,
            user_authorization: None,
            requested_capabilities: None,
            audience: audience.into(),
            refresh_token: None,
            token_format: TokenFormat::Jwt,
        };
        let (status, body) = client.token(&request).await.unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let issued: TokenResponse = serde_json::from_slice(&body).unwrap();
        issued
            .refresh_token
            .expect("a /v1/token session has a refresh token")
            .expose()
            .to_owned()
    })
}

/// The MCP server of `tests/python/protected_mcp_server.py`, protected by `issuer`; its URL
/// (`http://127.0.0.1:<port>/mcp`) is the audience of its AATs.
fn protected_server(issuer: &str) -> Listening {
    Listening::start(
        Command::new(python())
            .arg(tests_dir().join("python/protected_mcp_server.py"))
            .arg(issuer),
    )
}

/// A real `aip-proxy` on stdio in front of `tests/fakes/mcp_echo.py`, requiring AATs of
/// `authority` for `audience` (with per-call proofs) and allowing `whoami`.
struct StdioProxy {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    audience: String,
    next_id: u64,
}

impl StdioProxy {
    fn start(authority: &Authority, audience: &str) -> Self {
        let policy = authority.dir().join("policy.yaml");
        std::fs::write(
            &policy,
            format!(
                "apiVersion: aip.io/v1alpha3\nkind: AgentPolicy\nmetadata:\n  name: oauth-interop\nspec:\n  \
                 allowed_tools: [{TOOL}]\n  registry:\n    enabled: true\n    endpoint: \"{url}\"\n    auth:\n      \
                 type: bearer\n      token: \"{reader}\"\n    revocation:\n      mode: cached\n      check_interval: \
                 1s\n  aat:\n    enabled: true\n    require: true\n    audience: \"{audience}\"\n    trusted_issuers: \
                 [\"{url}\"]\n",
                url = authority.url,
                reader = authority.reader,
            ),
        )
        .unwrap();
        let script = tests_dir().join("tests/fakes/mcp_echo.py");
        let log = authority.dir().join("echo.log");
        let aip_tests::Piped { child, stdin, lines } = aip_tests::piped(
            aip_tests::isolated(aip_tests::aip_proxy())
                .args(["--policy", policy.to_str().unwrap(), "--target"])
                .arg(format!("{} {} {}", python(), script.display(), log.display())),
        );
        Self {
            child,
            stdin,
            lines,
            audience: audience.to_owned(),
            next_id: 1,
        }
    }

    /// A `tools/call` of `whoami` carrying `aat` and a fresh proof by `key`: the answer.
    fn call(&mut self, aat: &str, key: &KeyPair) -> Value {
        let args = json!({});
        let call = Call::tools_call(TOOL, Some(&args));
        let proof = create_proof(key, aat, &call, &self.audience, SystemClock.now()).unwrap();
        let id = self.next_id;
        self.next_id += 1;
        let line = json!({
            "jsonrpc": "2.0",
            "id": id,
            "method": "tools/call",
            "params": {"name": TOOL, "arguments": args, "_aip_aat": aat, "_aip_proof": proof},
        });
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
        let answer = self
            .lines
            .recv_timeout(Duration::from_secs(30))
            .expect("no answer from aip-proxy");
        serde_json::from_str(&answer).unwrap()
    }

    /// Asserts that the call with `aat` went through to the server.
    fn passes(&mut self, aat: &str, key: &KeyPair) {
        let answer = self.call(aat, key);
        assert_eq!(
            answer["result"]["seen"]["name"], TOOL,
            "aip-proxy refused the AAT: {answer}"
        );
        let forwarded = answer["result"]["seen"].as_object().unwrap();
        assert!(
            !forwarded.contains_key("_aip_aat") && !forwarded.contains_key("_aip_proof"),
            "the credentials went upstream: {answer}"
        );
    }
}

impl Drop for StdioProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The claims every AAT of these tests carries: for `agent`, from `issuer`, for `audience`,
/// bound to the agent's key, granting `whoami` only, and no user.
fn assert_aat_claims(claims: &Value, agent: &Agent, issuer: &str, audience: &str) {
    assert_eq!(claims["iss"], issuer, "{claims}");
    assert_eq!(claims["aud"], audience, "{claims}");
    assert_eq!(claims["sub"], agent.id.as_str(), "{claims}");
    assert_eq!(claims["agent"]["id"], agent.id.as_str(), "{claims}");
    assert_eq!(claims["cnf"]["jkt"], agent.key_id.as_str(), "{claims}");
    assert_eq!(claims["capabilities"]["tools"], json!([TOOL]), "{claims}");
    assert!(claims.get("user_binding").is_none(), "{claims}");
}

/// The payload of a compact JWT, decoded without verifying it.
fn payload(jwt: &str) -> Value {
    use base64::Engine as _;
    let segment = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// What the protected server's `whoami` answered: the token it verified with joserfc.
fn assert_verified_by_server(result: &Value, agent: &Agent, issuer: &str, server: &Listening) {
    assert_eq!(result["agent"], agent.id.as_str(), "{result}");
    assert_eq!(result["iss"], issuer, "{result}");
    assert_eq!(result["aud"], server.url.as_str(), "{result}");
    assert_eq!(result["tools"], json!([TOOL]), "{result}");
}

#[test]
fn the_mcp_python_sdk_gets_an_aat_with_private_key_jwt_and_calls_a_protected_server() {
    if !peers_ready(
        "the_mcp_python_sdk_gets_an_aat_with_private_key_jwt_and_calls_a_protected_server",
        &[Peer::Python],
    ) {
        return;
    }
    let authority = Authority::start(None);
    let agent = register(&authority, "py-agent", "ed25519");
    let server = protected_server(&authority.url);

    // The unauthenticated request the SDK starts from: 401 pointing at the metadata, which
    // names the authority; the authority's metadata names the endpoints.
    let (status, body) = aip_tests::http_get(
        &server.url.replace("/mcp", "/.well-known/oauth-protected-resource/mcp"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let resource: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(resource["authorization_servers"], json!([authority.url]), "{resource}");

    let out = run_peer(
        Command::new(python())
            .arg(tests_dir().join("python/mcp_sdk_client.py"))
            .args([&server.url, &authority.url, agent.id.as_str()])
            .arg(&agent.pem)
            .args([agent.alg, TOOL]),
    );
    assert_verified_by_server(&out["result"], &agent, &authority.url, &server);
    assert_eq!(out["token_type"], "Bearer", "{out}");
    assert_eq!(out["scope"], TOOL, "{out}");
    assert!(out["expires_in"].as_u64().is_some_and(|s| s > 0), "{out}");
    let aat = out["access_token"].as_str().unwrap();
    assert_eq!(payload(aat), out["claims"]);
    assert_aat_claims(&out["claims"], &agent, &authority.url, &server.url);
    assert_eq!(out["result"]["jti"], out["claims"]["jti"], "{out}");

    let mut proxy = StdioProxy::start(&authority, &server.url);
    proxy.passes(aat, &key_of(&agent));
}

#[test]
fn the_mcp_typescript_sdk_gets_aats_with_a_p256_pem_key_and_an_ed25519_jwk() {
    if !peers_ready(
        "the_mcp_typescript_sdk_gets_aats_with_a_p256_pem_key_and_an_ed25519_jwk",
        &[Peer::Python, Peer::Node],
    ) {
        return;
    }
    let authority = Authority::start(None);
    let p256 = register(&authority, "ts-p256", "p256");
    let ed25519 = register(&authority, "ts-ed25519", "ed25519");
    let server = protected_server(&authority.url);
    let mut aats = Vec::new();
    for agent in [&p256, &ed25519] {
        let out = run_peer(
            Command::new("node")
                .arg(tests_dir().join("mcp/oauth-client.mjs"))
                .args([&server.url, &authority.url, agent.id.as_str()])
                .arg(&agent.pem)
                .args([agent.alg, TOOL]),
        );
        assert_verified_by_server(&out["result"], agent, &authority.url, &server);
        assert_eq!(out["token_type"], "Bearer", "{out}");
        assert_eq!(out["scope"], TOOL, "{out}");
        let aat = out["access_token"].as_str().unwrap().to_owned();
        assert_aat_claims(&payload(&aat), agent, &authority.url, &server.url);
        assert_eq!(out["result"]["jti"], payload(&aat)["jti"], "{out}");
        aats.push(aat);
    }

    let mut proxy = StdioProxy::start(&authority, &server.url);
    proxy.passes(&aats[0], &key_of(&p256));
    proxy.passes(&aats[1], &key_of(&ed25519));
}

#[test]
fn authlib_authenticates_with_private_key_jwt_introspects_revokes_and_refreshes_on_sqlite() {
    if peers_ready(
        "authlib_authenticates_with_private_key_jwt_introspects_revokes_and_refreshes_on_sqlite",
        &[Peer::Python],
    ) {
        authlib_flow(None);
    }
}

#[test]
fn authlib_authenticates_with_private_key_jwt_introspects_revokes_and_refreshes_on_postgres() {
    if peers_ready(
        "authlib_authenticates_with_private_key_jwt_introspects_revokes_and_refreshes_on_postgres",
        &[Peer::Python],
    ) && let Some(db) = PostgresDb::create()
    {
        authlib_flow(Some(&db.url));
    }
}

/// authlib against an authority on SQLite or on the PostgreSQL database `database_url` names.
fn authlib_flow(database_url: Option<&str>) {
    const RESOURCE: &str = "https://files.example/mcp";
    let authority = Authority::start(database_url);
    let agent = register(&authority, "authlib-agent", "p256");
    let refresh_token = session_refresh_token(&authority, &agent, RESOURCE);

    let out = run_peer(
        Command::new(python())
            .arg(tests_dir().join("python/authlib_client.py"))
            .args([&authority.url, agent.id.as_str()])
            .arg(&agent.pem)
            .args([agent.alg, RESOURCE, TOOL, &authority.reader, &refresh_token]),
    );

    // authlib's PrivateKeyJWT as it comes signs assertions valid for an hour: refused, saying
    // why.
    let plain = &out["default_lifetime"];
    assert_eq!(plain["refused"], true, "{plain}");
    assert_eq!(plain["error"], "invalid_client", "{plain}");
    assert!(
        plain["error_description"].as_str().unwrap().contains("600 s ahead"),
        "{plain}"
    );

    // client_credentials with authlib's own assertions; the AAT verified with joserfc.
    let issued = &out["issued"];
    assert_eq!(issued["response"]["token_type"], "Bearer", "{issued}");
    assert_eq!(issued["response"]["scope"], TOOL, "{issued}");
    assert!(issued["response"].get("refresh_token").is_none(), "{issued}");
    let revoked_aat = issued["response"]["access_token"].as_str().unwrap();
    assert_eq!(payload(revoked_aat), issued["claims"]);
    assert_aat_claims(&issued["claims"], &agent, &authority.url, RESOURCE);
    let active = &issued["introspection"];
    assert_eq!(active["active"], true, "{active}");
    assert_eq!(active["client_id"], agent.id.as_str(), "{active}");
    assert_eq!(active["scope"], TOOL, "{active}");
    assert_eq!(active["jti"], issued["claims"]["jti"], "{active}");

    // The agent revoked its own AAT (RFC 7009: 200, empty body); introspection then says so.
    let revoked = &out["revoked"];
    assert_eq!(revoked["status"], 200, "{revoked}");
    assert_eq!(revoked["body"], "", "{revoked}");
    assert_eq!(revoked["introspection"], json!({"active": false}), "{revoked}");

    // The /v1/token session refreshed through grant_type=refresh_token.
    let refreshed = &out["refreshed"];
    let new_aat = refreshed["response"]["access_token"].as_str().unwrap();
    assert_eq!(payload(new_aat), refreshed["claims"]);
    assert_eq!(refreshed["response"]["token_type"], "Bearer", "{refreshed}");
    let rotated = refreshed["response"]["refresh_token"].as_str().unwrap();
    assert!(
        rotated.starts_with("aip_rf_") && rotated != refresh_token,
        "the refresh token was not rotated: {refreshed}"
    );
    assert_eq!(refreshed["claims"]["aud"], RESOURCE, "{refreshed}");
    assert_eq!(refreshed["claims"]["sub"], agent.id.as_str(), "{refreshed}");
    assert_eq!(refreshed["claims"]["cnf"]["jkt"], agent.key_id.as_str(), "{refreshed}");
    assert_eq!(refreshed["introspection"]["active"], true, "{refreshed}");

    // The refreshed AAT passes the proxy; the revoked one does not.
    let key = key_of(&agent);
    let mut proxy = StdioProxy::start(&authority, RESOURCE);
    proxy.passes(new_aat, &key);
    let answer = proxy.call(revoked_aat, &key);
    assert_eq!(answer["error"]["data"]["aat_error"], "aat_revoked", "{answer}");
}

/// The regions of `file` between `--8<-- [start:NAME]` and `--8<-- [end:NAME]` marker lines,
/// each without its common indentation.
fn snippets(file: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut found = Vec::new();
    let mut open: Option<(String, Vec<&str>)> = None;
    for line in text.lines() {
        if let Some(name) = line.split("--8<-- [start:").nth(1) {
            assert!(open.is_none(), "{}: nested snippet {name}", file.display());
            open = Some((name.trim_end_matches(']').to_owned(), Vec::new()));
        } else if line.contains("--8<-- [end:") {
            let (name, lines) = open
                .take()
                .unwrap_or_else(|| panic!("{}: end without start", file.display()));
            let indent = lines
                .iter()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.len() - l.trim_start().len())
                .min()
                .unwrap_or(0);
            let body: Vec<&str> = lines.iter().map(|l| l.get(indent..).unwrap_or("")).collect();
            found.push((name, body.join("\n")));
        } else if let Some((_, lines)) = open.as_mut() {
            lines.push(line);
        }
    }
    assert!(open.is_none(), "{}: unterminated snippet", file.display());
    found
}

#[test]
fn the_docs_show_the_clients_these_tests_run() {
    let docs = std::fs::read_to_string(tests_dir().join("../docs/issuer.md")).unwrap();
    let section = docs
        .split("## Standard OAuth clients")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("docs/issuer.md has a section \"Standard OAuth clients\"");
    for (file, expected) in [
        ("python/mcp_sdk_client.py", 2),
        ("mcp/oauth-client.mjs", 2),
        ("python/authlib_client.py", 6),
    ] {
        let path = tests_dir().join(file);
        let found = snippets(&path);
        assert_eq!(found.len(), expected, "{file}: {found:?}");
        for (name, snippet) in found {
            assert!(
                section.contains(&format!("\n{snippet}\n```")),
                "docs/issuer.md (\"Standard OAuth clients\") does not show {file}'s snippet {name}:\n{snippet}"
            );
        }
    }
}
