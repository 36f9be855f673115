//! The OAuth 2.1 face of the issuer end to end, on SQLite and on PostgreSQL: a real
//! `aip-ca serve`, agents registered, suspended, revoked and rotated with the real CLI, their
//! keys exported with `aip-ca agents export-key`, and real HTTP (curl) to `/oauth/token`,
//! `/oauth/introspect` and `/oauth/revoke`.
//!
//! - The success paths: `client_credentials` as `Bearer` and as `DPoP`, `scope` narrowing, a
//!   P-256 agent, introspection → revocation → introspection, and the `refresh_token` grant
//!   over a `/v1/token` session.
//! - The refusal matrix: every refusal answers with its HTTP status and RFC 6749 `error`
//!   (401 with `WWW-Authenticate` for `invalid_client`), and issues nothing — no AAT and no
//!   session is added to the database (`issued_tokens`, `sessions`).
//! - The ID-JAG grant: a test identity provider (an ES256 key made here, its JWKS served over
//!   HTTP on loopback) configured with `id_jag = true`; a valid grant — also one signed by an
//!   independent JOSE library, Python joserfc — yields a user-bound AAT, and forged, misdirected,
//!   replayed, `alg: none` and HS256 grants are refused with `invalid_grant`.
//!
//! The joserfc grant needs `python3` with `joserfc` (`python3 -m pip install -r tests/python/requirements.txt`; `AIP_PYTHON`
//! names another interpreter): required under `CI`, reported skipped elsewhere. The PostgreSQL
//! variants need `AIP_TEST_POSTGRES_URL` (required under `CI`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use aip_aat::challenge::ChallengeProof;
use aip_aat::client_assertion::{CLIENT_ASSERTION_TYPE, create_client_assertion};
use aip_aat::dpop::{DpopRequest, create_dpop_proof};
use aip_aat::ids::AgentId;
use aip_aat::jws::sign_raw;
use aip_aat::keys::{Algorithm, KeyPair};
use aip_aat::secret::SecretString;
use aip_api::issuer::{GrantType, TokenFormat, TokenRequest, UserAuthorization};
use aip_tests::{PostgresDb, Server, http_get, init_authority, ok, query_text, run, set_config_section};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac as _};
use serde_json::{Value, json};
use sha2::Sha256;

/// The resource (RFC 8707) the AATs here are for.
const RESOURCE: &str = "https://mcp.example.com/mcp";
/// `grant_type` of the ID-JAG grant.
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The header `typ` of an ID-JAG.
const ID_JAG_TYP: &str = "oauth-id-jag+jwt";
/// The key id of the test identity provider's key.
const IDP_KID: &str = "idp-1";

fn now() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// An HTTP answer.
struct Reply {
    status: u16,
    /// The header block, lower-cased.
    headers: String,
    /// The body as sent.
    text: String,
    /// The body as JSON (`Null` when it is not JSON).
    body: Value,
}

impl Reply {
    /// The value of header `name` (lower case), if sent.
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    }
}

/// Percent-encodes a form value (`application/x-www-form-urlencoded`).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A form-encoded body of `params`.
fn form(params: &[(&str, &str)]) -> String {
    params
        .iter()
        .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `POST url` with curl: `body` as `content_type`, plus `headers`.
fn post(url: &str, content_type: &str, body: &str, headers: &[(&str, &str)]) -> Reply {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "30",
        "-D",
        "-",
        "-w",
        "\n%{http_code}",
        "-X",
        "POST",
    ]);
    cmd.args(["-H", &format!("Content-Type: {content_type}")]);
    for (name, value) in headers {
        cmd.args(["-H", &format!("{name}: {value}")]);
    }
    let out = cmd.args(["--data-binary", body]).arg(url).output().expect("curl");
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = String::from_utf8(out.stdout).unwrap();
    let (rest, status) = all.rsplit_once('\n').unwrap();
    let (headers, text) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
    Reply {
        status: status.parse().unwrap(),
        headers: headers.to_ascii_lowercase(),
        text: text.to_owned(),
        body: serde_json::from_str(text).unwrap_or(Value::Null),
    }
}

/// The claims of a compact JWS, decoded without verification.
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// `aud` of an AAT, which holds one audience (a string or a one-element array).
fn audience_of(claims: &Value) -> &str {
    match &claims["aud"] {
        Value::Array(all) if all.len() == 1 => all[0].as_str().unwrap(),
        aud => aud.as_str().unwrap_or_else(|| panic!("aud: {claims}")),
    }
}

/// The words of a `scope`.
fn words(scope: &Value) -> BTreeSet<&str> {
    scope.as_str().unwrap().split(' ').filter(|w| !w.is_empty()).collect()
}

// ---------------------------------------------------------------------------------------------
// The authority
// ---------------------------------------------------------------------------------------------

/// A registered agent and its key, as `aip-ca agents export-key` wrote it.
struct Agent {
    id: String,
    dir: PathBuf,
    key: KeyPair,
}

/// An authority made with `aip-ca init`, served by `aip-ca serve` (and, over PostgreSQL, by
/// a second replica when asked).
struct Authority {
    tmp: tempfile::TempDir,
    dir: PathBuf,
    server: Server,
    replica: Option<Server>,
    admin: String,
    /// The issuer identifier, as the metadata gives it.
    issuer: String,
    /// The token endpoint, as the metadata gives it (the `htu` of DPoP proofs).
    token_endpoint: String,
    metadata: Value,
    database_url: String,
    exported: usize,
}

impl Authority {
    /// Creates an authority (over `database`, else SQLite) without rate limits, with `oidc`
    /// appended to its `aip.toml`, and serves it; over PostgreSQL with a second replica when
    /// `replica`.
    fn start(database: Option<&str>, oidc: Option<&str>, replica: bool) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("aip");
        let mut init = Vec::new();
        if let Some(url) = database {
            init.extend(["--database-url", url]);
        }
        let admin = init_authority(&dir, &init);
        set_config_section(&dir, "rate_limits", "enabled = false");
        if let Some(section) = oidc {
            let path = dir.join("aip.toml");
            let config = std::fs::read_to_string(&path).unwrap();
            std::fs::write(&path, format!("{config}\n{section}\n")).unwrap();
        }
        let serve = |dir: &Path| {
            let mut args = vec!["--dir", dir.to_str().unwrap(), "--insecure-no-passphrase"];
            if let Some(url) = database {
                args.extend(["--database-url", url]);
            }
            Server::start(&args)
        };
        let replica = match (database, replica) {
            (Some(_), true) => {
                let copy = tmp.path().join("replica");
                let copied = Command::new("cp").arg("-R").arg(&dir).arg(&copy).status().unwrap();
                assert!(copied.success(), "copying the authority directory failed");
                Some(serve(&copy))
            }
            _ => None,
        };
        let server = serve(&dir);
        let (status, body) = http_get(&format!("{}/.well-known/oauth-authorization-server", server.url), None);
        assert_eq!(status, 200, "{body}");
        let metadata: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            metadata["token_endpoint_auth_methods_supported"],
            json!(["private_key_jwt"])
        );
        let issuer = metadata["issuer"].as_str().unwrap().to_owned();
        let token_endpoint = metadata["token_endpoint"].as_str().unwrap().to_owned();
        assert_eq!(token_endpoint, format!("{issuer}/oauth/token"));
        let database_url = database.map_or_else(
            || format!("sqlite://{}?mode=ro", dir.join("aip.db").display()),
            str::to_owned,
        );
        Self {
            tmp,
            dir,
            server,
            replica,
            admin,
            issuer,
            token_endpoint,
            metadata,
            database_url,
            exported: 0,
        }
    }

    /// Runs `aip-ca args… --registry URL --token ADMIN` and returns its JSON output.
    fn cli(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--registry", &self.server.url, "--token", &self.admin, "--json"]);
        serde_json::from_str(&ok(run(&all))).unwrap()
    }

    /// Registers an agent with `aip-ca register-agent` (`--alg p256` when `p256`) and exports
    /// its key with `aip-ca agents export-key`.
    fn register(&mut self, name: &str, capabilities: &str, autonomous: bool, p256: bool) -> Agent {
        let dir = self.tmp.path().join(name);
        let mut args = vec![
            "register-agent",
            "--name",
            name,
            "--capabilities",
            capabilities,
            "--out-dir",
            dir.to_str().unwrap(),
            "--insecure-no-passphrase",
        ];
        if autonomous {
            args.push("--autonomous");
        }
        if p256 {
            args.extend(["--alg", "p256"]);
        }
        let registered = self.cli(&args);
        let id = registered["agent_id"].as_str().unwrap().to_owned();
        let key = self.export_key(&dir);
        assert_eq!(registered["key_id"], key.key_id().as_str(), "{registered}");
        Agent { id, dir, key }
    }

    /// The agent's current key, through `aip-ca agents export-key` into a new 0600 file.
    fn export_key(&mut self, agent_dir: &Path) -> KeyPair {
        self.exported += 1;
        let out = self.tmp.path().join(format!("exported-{}.pem", self.exported));
        aip_tests::export_key(agent_dir, &out);
        KeyPair::from_pkcs8_pem(&std::fs::read_to_string(&out).unwrap()).unwrap()
    }

    /// How many AATs and sessions the authority has recorded.
    fn issued(&self) -> (u64, u64) {
        let rows = query_text(
            &self.database_url,
            "SELECT CAST((SELECT COUNT(*) FROM issued_tokens) AS TEXT), \
             CAST((SELECT COUNT(*) FROM sessions) AS TEXT)",
        );
        (rows[0][0].parse().unwrap(), rows[0][1].parse().unwrap())
    }

    /// A client assertion of `agent` for this issuer, valid for a minute.
    fn assertion(&self, agent: &Agent) -> String {
        create_client_assertion(&agent.key, &agent.id, &self.issuer, now(), 60).unwrap()
    }

    /// A DPoP proof by `key` for the token endpoint.
    fn dpop(&self, key: &KeyPair) -> String {
        let request = DpopRequest {
            method: "POST",
            uri: &self.token_endpoint,
            access_token: None,
        };
        create_dpop_proof(key, &request, now()).unwrap()
    }

    /// `POST /oauth/token` to `server`.
    fn token_at(&self, server: &Server, body: &str, headers: &[(&str, &str)]) -> Reply {
        post(
            &format!("{}/oauth/token", server.url),
            "application/x-www-form-urlencoded",
            body,
            headers,
        )
    }

    /// `POST /oauth/token`.
    fn token(&self, body: &str, headers: &[(&str, &str)]) -> Reply {
        self.token_at(&self.server, body, headers)
    }

    /// A token request that succeeds and issues exactly one AAT: its answer.
    fn issues(&self, case: &str, body: &str, headers: &[(&str, &str)]) -> Value {
        let (tokens, sessions) = self.issued();
        let reply = self.token(body, headers);
        assert_eq!(reply.status, 200, "{case}: {}", reply.text);
        assert_eq!(
            reply.header("cache-control"),
            Some("no-store"),
            "{case}: {}",
            reply.headers
        );
        assert_eq!(self.issued().0, tokens + 1, "{case}: one AAT is recorded");
        assert!(self.issued().1 <= sessions + 1, "{case}");
        reply.body
    }

    /// A request that must be refused with `status` and `error` and issue nothing.
    fn refused(&self, case: &str, status: u16, error: &str, send: impl FnOnce() -> Reply) -> Reply {
        let before = self.issued();
        let reply = send();
        assert_eq!(reply.status, status, "{case}: {}", reply.text);
        assert_eq!(reply.body["error"], error, "{case}: {}", reply.text);
        assert!(
            reply.body["error_description"].as_str().is_some_and(|d| !d.is_empty()),
            "{case}: {}",
            reply.text
        );
        assert!(reply.body.get("access_token").is_none(), "{case}: {}", reply.text);
        assert_eq!(
            reply.header("cache-control"),
            Some("no-store"),
            "{case}: {}",
            reply.headers
        );
        if error == "invalid_client" {
            let challenge = reply.header("www-authenticate").unwrap_or_default();
            assert!(challenge.contains("invalid_client"), "{case}: {}", reply.headers);
        }
        assert_eq!(self.issued(), before, "{case}: something was issued");
        reply
    }
}

/// `client_credentials` for `resource` with `assertion`, plus `extra` parameters.
fn client_credentials(assertion: &str, extra: &[(&str, &str)]) -> String {
    let mut params = vec![
        ("grant_type", "client_credentials"),
        ("client_assertion_type", CLIENT_ASSERTION_TYPE),
        ("client_assertion", assertion),
    ];
    params.extend_from_slice(extra);
    form(&params)
}

/// An assertion with exactly these claims, signed by `key` (`typ: JWT`, as the MCP SDKs send).
fn hand_made_assertion(key: &KeyPair, claims: &Value) -> String {
    let header = json!({"alg": key.algorithm().as_str(), "typ": "JWT"});
    sign_raw(header.to_string().as_bytes(), claims.to_string().as_bytes(), key).unwrap()
}

/// The claims of a good assertion of `agent` for `audience`.
fn assertion_claims(agent: &str, audience: &str) -> Value {
    let now = now();
    json!({
        "iss": agent,
        "sub": agent,
        "aud": audience,
        "exp": now + 60,
        "iat": now,
        "jti": format!("{agent}-{}", SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()),
    })
}

// ---------------------------------------------------------------------------------------------
// 1. Success paths
// ---------------------------------------------------------------------------------------------

fn success_paths(database: Option<&str>) {
    let mut authority = Authority::start(database, None, false);
    let a = &authority;
    let grants = a.metadata["grant_types_supported"].as_array().unwrap();
    assert!(grants.contains(&json!("client_credentials")), "{}", a.metadata);
    assert!(
        !grants.contains(&json!(JWT_BEARER)),
        "no IdP is enabled for ID-JAGs: {}",
        a.metadata
    );
    let bot = authority.register("nightly-bot", "read_file,list_directory", true, false);
    let p256 = authority.register("p256-bot", "read_file", true, true);
    let helper = authority.register("helper", "read_file,list_directory", false, false);
    let other = authority.register("other-bot", "read_file", true, false);
    let a = &authority;
    let thumbprint = bot.key.key_id().as_str();

    // Bearer: an autonomous AAT for the resource, bound to the agent key, no refresh token.
    let issued = a.issues(
        "Bearer",
        &client_credentials(&a.assertion(&bot), &[("resource", RESOURCE)]),
        &[],
    );
    assert_eq!(issued["token_type"], "Bearer", "{issued}");
    assert!(issued["expires_in"].as_u64().is_some_and(|s| s > 0), "{issued}");
    assert!(issued.get("refresh_token").is_none(), "{issued}");
    assert_eq!(words(&issued["scope"]), BTreeSet::from(["read_file", "list_directory"]));
    let bearer = issued["access_token"].as_str().unwrap().to_owned();
    let claims = claims_of(&bearer);
    assert_eq!(claims["sub"], bot.id.as_str());
    assert_eq!(claims["iss"], a.issuer.as_str());
    assert_eq!(audience_of(&claims), RESOURCE);
    assert_eq!(claims["cnf"]["jkt"], thumbprint, "{claims}");
    assert!(claims.get("user_binding").is_none(), "{claims}");

    // DPoP by the agent key: token_type DPoP, the same binding.
    let dpop = a.dpop(&bot.key);
    let issued = a.issues(
        "DPoP",
        &client_credentials(&a.assertion(&bot), &[("resource", RESOURCE)]),
        &[("DPoP", &dpop)],
    );
    assert_eq!(issued["token_type"], "DPoP", "{issued}");
    assert_eq!(
        claims_of(issued["access_token"].as_str().unwrap())["cnf"]["jkt"],
        thumbprint
    );

    // `scope` narrows to what the agent holds.
    let issued = a.issues(
        "scope",
        &client_credentials(
            &a.assertion(&bot),
            &[("resource", RESOURCE), ("scope", "read_file write_file")],
        ),
        &[],
    );
    assert_eq!(issued["scope"], "read_file", "{issued}");
    let claims = claims_of(issued["access_token"].as_str().unwrap());
    assert_eq!(claims["capabilities"]["tools"], json!(["read_file"]), "{claims}");

    // The assertion's `aud` may be the token endpoint, or the issuer with a slash (a bare origin).
    for audience in [a.token_endpoint.clone(), format!("{}/", a.issuer)] {
        let assertion = hand_made_assertion(&bot.key, &assertion_claims(&bot.id, &audience));
        a.issues(
            &format!("aud {audience}"),
            &client_credentials(&assertion, &[("resource", RESOURCE), ("client_id", &bot.id)]),
            &[],
        );
    }

    // A P-256 agent (ES256 assertions and DPoP proofs).
    let assertion = a.assertion(&p256);
    assert_eq!(
        serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(assertion.split('.').next().unwrap()).unwrap())
            .unwrap()["alg"],
        "ES256"
    );
    let issued = a.issues(
        "ES256",
        &client_credentials(&assertion, &[("resource", RESOURCE)]),
        &[("DPoP", &a.dpop(&p256.key))],
    );
    assert_eq!(issued["token_type"], "DPoP", "{issued}");
    let claims = claims_of(issued["access_token"].as_str().unwrap());
    assert_eq!(claims["cnf"]["jkt"], p256.key.key_id().as_str(), "{claims}");
    assert_eq!(claims["sub"], p256.id.as_str());

    // Introspection (admin) → revocation by the agent itself → introspection.
    let introspect = |token: &str, bearer: Option<&str>| {
        let auth = bearer.map(|b| format!("Bearer {b}"));
        let headers: Vec<(&str, &str)> = auth.iter().map(|v| ("Authorization", v.as_str())).collect();
        post(
            &format!("{}/oauth/introspect", a.server.url),
            "application/x-www-form-urlencoded",
            &form(&[("token", token)]),
            &headers,
        )
    };
    assert_eq!(
        introspect(&bearer, None).status,
        401,
        "introspection needs a credential"
    );
    let reader = a.cli(&[
        "access-token",
        "create",
        "--role",
        "reader",
        "--label",
        "resource server",
    ]);
    let reader = reader["token"].as_str().unwrap();
    let active = introspect(&bearer, Some(reader));
    assert_eq!(active.status, 200, "{}", active.text);
    assert_eq!(active.body["active"], true, "{}", active.text);
    assert_eq!(active.body["client_id"], bot.id.as_str());
    assert_eq!(
        words(&active.body["scope"]),
        BTreeSet::from(["read_file", "list_directory"])
    );
    assert_eq!(active.body["cnf"]["jkt"], thumbprint);
    assert_eq!(introspect("not-a-token", Some(&a.admin)).body, json!({"active": false}));
    let revoke_with = |assertion: &str, token: &str| {
        post(
            &format!("{}/oauth/revoke", a.server.url),
            "application/x-www-form-urlencoded",
            &form(&[
                ("token", token),
                ("client_assertion_type", CLIENT_ASSERTION_TYPE),
                ("client_assertion", assertion),
            ]),
            &[],
        )
    };
    let revoke = |agent: &Agent, token: &str| revoke_with(&a.assertion(agent), token);
    let theirs = revoke(&other, &bearer);
    assert_eq!(theirs.status, 400, "{}", theirs.text);
    assert_eq!(theirs.body["error"], "unauthorized_client", "{}", theirs.text);
    assert_eq!(introspect(&bearer, Some(&a.admin)).body["active"], true);
    let assertion = a.assertion(&bot);
    let revoked = revoke_with(&assertion, &bearer);
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    assert!(revoked.text.is_empty(), "{}", revoked.text);
    assert_eq!(introspect(&bearer, Some(&a.admin)).body, json!({"active": false}));
    // The revocation used the assertion up, for every endpoint.
    let again = revoke_with(&assertion, &bearer);
    assert_eq!(
        (again.status, &again.body["error"]),
        (401, &json!("invalid_client")),
        "{}",
        again.text
    );
    a.refused(
        "an assertion used at the revocation endpoint",
        401,
        "invalid_client",
        || a.token(&client_credentials(&assertion, &[("resource", RESOURCE)]), &[]),
    );
    // An AAT of a suspended agent is inactive until the agent is reactivated.
    let theirs = a.issues(
        "an AAT of the other agent",
        &client_credentials(&a.assertion(&other), &[("resource", RESOURCE)]),
        &[],
    );
    let theirs = theirs["access_token"].as_str().unwrap();
    assert_eq!(introspect(theirs, Some(reader)).body["active"], true);
    a.cli(&["agents", "suspend", &other.id]);
    assert_eq!(introspect(theirs, Some(reader)).body, json!({"active": false}));
    a.cli(&["agents", "reactivate", &other.id]);
    assert_eq!(introspect(theirs, Some(reader)).body["active"], true);

    // A `/v1/token` session's refresh token, refreshed through `grant_type=refresh_token`.
    let alice = a.cli(&[
        "users",
        "create",
        "--id",
        "alice",
        "--delegatable",
        "read_file,list_directory",
    ]);
    let refresh_token = v1_session(a, &helper, alice["api_key"].as_str().unwrap());
    let refresh = |token: &str, assertion: &str| {
        form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", token),
            ("scope", "read_file"),
            ("client_assertion_type", CLIENT_ASSERTION_TYPE),
            ("client_assertion", assertion),
        ])
    };
    // A resource other than the session's audience (RFC 8707 §2: `invalid_target`); the
    // refresh token stays good.
    a.refused("a refresh for another resource", 400, "invalid_target", || {
        let mut body = refresh(&refresh_token, &a.assertion(&helper));
        body.push_str(&format!("&resource={}", encode(RESOURCE)));
        a.token(&body, &[])
    });
    let issued = a.issues("refresh_token", &refresh(&refresh_token, &a.assertion(&helper)), &[]);
    assert_eq!(issued["token_type"], "Bearer", "{issued}");
    assert_eq!(issued["scope"], "read_file", "{issued}");
    let next = issued["refresh_token"].as_str().expect("the next refresh token");
    assert_ne!(next, refresh_token);
    let claims = claims_of(issued["access_token"].as_str().unwrap());
    assert_eq!(claims["user_binding"]["user_id"], "alice", "{claims}");
    assert_eq!(claims["sub"], helper.id.as_str());
    assert_eq!(audience_of(&claims), "files-proxy");
    // The used refresh token again: refused, and the session ends.
    a.refused("a reused refresh token", 400, "invalid_grant", || {
        a.token(&refresh(&refresh_token, &a.assertion(&helper)), &[])
    });
    a.refused("the session a reused refresh token ended", 400, "invalid_grant", || {
        a.token(&refresh(next, &a.assertion(&helper)), &[])
    });
    assert_eq!(introspect(next, Some(reader)).body, json!({"active": false}));

    // A live refresh token is introspected as one, revoked by its agent only.
    let refresh_token = v1_session(a, &helper, alice["api_key"].as_str().unwrap());
    let active = introspect(&refresh_token, Some(reader));
    assert_eq!(active.body["active"], true, "{}", active.text);
    assert_eq!(active.body["token_type"], "refresh_token", "{}", active.text);
    assert_eq!(active.body["client_id"], helper.id.as_str());
    assert_eq!(active.body["username"], "alice");
    let theirs = revoke(&other, &refresh_token);
    assert_eq!(theirs.body["error"], "unauthorized_client", "{}", theirs.text);
    assert_eq!(revoke(&helper, &refresh_token).status, 200);
    assert_eq!(introspect(&refresh_token, Some(reader)).body, json!({"active": false}));
    a.refused("a revoked refresh token", 400, "invalid_grant", || {
        a.token(&refresh(&refresh_token, &a.assertion(&helper)), &[])
    });

    // The audit chain holds, signed up to its head once the server has stopped.
    assert!(authority.server.terminate().success());
    let dir = authority.dir.to_str().unwrap();
    let mut args = vec!["audit", "verify", "--dir", dir, "--json"];
    if let Some(url) = database {
        args.extend(["--database-url", url]);
    }
    let audit: Value = serde_json::from_str(&ok(run(&args))).unwrap();
    assert_eq!(audit["ok"], true, "{audit}");
}

/// A user-bound session of `agent` through `POST /v1/challenge` and `POST /v1/token`
/// (`agent_authentication` with the user's API key): its refresh token.
fn v1_session(a: &Authority, agent: &Agent, api_key: &str) -> String {
    let challenge = post(
        &format!("{}/v1/challenge", a.server.url),
        "application/json",
        &json!({"agent_id": agent.id}).to_string(),
        &[],
    );
    assert_eq!(challenge.status, 200, "{}", challenge.text);
    let agent_id: AgentId = agent.id.parse().unwrap();
    let proof = ChallengeProof::create(
        &agent.key,
        challenge.body["challenge"].as_str().unwrap(),
        &agent_id,
        now(),
    )
    .unwrap();
    let request = TokenRequest {
        grant_type: GrantType::AgentAuthentication,
        agent_id,
        proof,
        user_authorization: Some(UserAuthorization::ApiKey {
            token: SecretString::new(api_key.to_owned()),
        }),
        requested_capabilities: None,
        audience: "files-proxy".into(),
        refresh_token: None,
        token_format: TokenFormat::Jwt,
    };
    let issued = post(
        &format!("{}/v1/token", a.server.url),
        "application/json",
        &serde_json::to_string(&request).unwrap(),
        &[],
    );
    assert_eq!(issued.status, 200, "{}", issued.text);
    issued.body["refresh_token"].as_str().unwrap().to_owned()
}

#[test]
fn success_paths_sqlite() {
    success_paths(None);
}

#[test]
fn success_paths_postgres() {
    if let Some(db) = PostgresDb::create() {
        success_paths(Some(&db.url));
    }
}

// ---------------------------------------------------------------------------------------------
// 2. The refusal matrix
// ---------------------------------------------------------------------------------------------

fn refusals(database: Option<&str>) {
    let mut authority = Authority::start(database, None, true);
    let bot = authority.register("bot", "read_file", true, false);
    let helper = authority.register("helper", "read_file", false, false);
    let suspended = authority.register("suspended", "read_file", true, false);
    let revoked = authority.register("revoked", "read_file", true, false);
    let rotated = authority.register("rotated", "read_file", true, false);
    authority.cli(&["agents", "suspend", &suspended.id, "--reason", "on hold"]);
    authority.cli(&["agents", "revoke", &revoked.id, "--reason", "retired"]);
    let previous_key = KeyPair::from_pkcs8_pem(&rotated.key.to_pkcs8_pem().unwrap()).unwrap();
    let rotation = authority.cli(&[
        "agents",
        "rotate-key",
        "--agent-dir",
        rotated.dir.to_str().unwrap(),
        "--insecure-no-passphrase",
    ]);
    let current_key = authority.export_key(&rotated.dir);
    assert_ne!(current_key.key_id(), previous_key.key_id(), "{rotation}");
    let a = &authority;
    let good = |agent: &Agent| client_credentials(&a.assertion(agent), &[("resource", RESOURCE)]);
    let stranger = KeyPair::generate(Algorithm::EdDSA).unwrap();

    // Client authentication (`invalid_client`, 401).
    let forged = hand_made_assertion(&stranger, &assertion_claims(&bot.id, &a.issuer));
    let reply = a.refused("an assertion signed by another key", 401, "invalid_client", || {
        a.token(&client_credentials(&forged, &[("resource", RESOURCE)]), &[])
    });
    assert!(
        !reply.text.contains(&forged),
        "the assertion was echoed: {}",
        reply.text
    );
    let with = |member: &str, value: Value| {
        let mut claims = assertion_claims(&bot.id, &a.issuer);
        claims[member] = value;
        hand_made_assertion(&bot.key, &claims)
    };
    for (case, assertion) in [
        (
            "an assertion for another audience",
            with("aud", json!("https://elsewhere.example")),
        ),
        (
            "an assertion for the introspection endpoint",
            with("aud", json!(format!("{}/oauth/introspect", a.issuer))),
        ),
        ("an expired assertion", with("exp", json!(now() - 120))),
        (
            "an assertion that expires too far ahead",
            with("exp", json!(now() + 3_600)),
        ),
        ("an assertion whose sub is another agent", with("sub", json!(helper.id))),
    ] {
        a.refused(case, 401, "invalid_client", || {
            a.token(&client_credentials(&assertion, &[("resource", RESOURCE)]), &[])
        });
    }

    // A `jti` is used once: the same assertion twice, and on the other replica.
    let once = good(&bot);
    a.issues("the first use of an assertion", &once, &[]);
    a.refused("the same assertion again", 401, "invalid_client", || {
        a.token(&once, &[])
    });
    if let Some(replica) = &a.replica {
        let once = good(&bot);
        a.issues("an assertion on replica A", &once, &[]);
        a.refused("the same assertion on replica B", 401, "invalid_client", || {
            a.token_at(replica, &once, &[])
        });
        // …while replica B serves fresh assertions.
        let (tokens, _) = a.issued();
        assert_eq!(a.token_at(replica, &good(&bot), &[]).status, 200);
        assert_eq!(a.issued().0, tokens + 1);
    }

    let unknown = "ag_00000000-0000-4000-8000-000000000001";
    let assertion = hand_made_assertion(&stranger, &assertion_claims(unknown, &a.issuer));
    a.refused("an unknown agent", 401, "invalid_client", || {
        a.token(&client_credentials(&assertion, &[("resource", RESOURCE)]), &[])
    });
    a.refused("a revoked agent", 401, "invalid_client", || {
        a.token(&good(&revoked), &[])
    });
    a.refused("a suspended agent", 401, "invalid_client", || {
        a.token(&good(&suspended), &[])
    });
    let old = hand_made_assertion(&previous_key, &assertion_claims(&rotated.id, &a.issuer));
    a.refused("an assertion by the rotated-out key", 401, "invalid_client", || {
        a.token(&client_credentials(&old, &[("resource", RESOURCE)]), &[])
    });
    let new = hand_made_assertion(&current_key, &assertion_claims(&rotated.id, &a.issuer));
    a.issues(
        "an assertion by the new key",
        &client_credentials(&new, &[("resource", RESOURCE)]),
        &[],
    );
    a.refused("client_id of another agent", 401, "invalid_client", || {
        a.token(
            &client_credentials(&a.assertion(&bot), &[("resource", RESOURCE), ("client_id", &helper.id)]),
            &[],
        )
    });
    a.refused("a client secret", 401, "invalid_client", || {
        a.token(
            &client_credentials(
                &a.assertion(&bot),
                &[("resource", RESOURCE), ("client_secret", "s3cret")],
            ),
            &[],
        )
    });
    a.refused("a client secret alone", 401, "invalid_client", || {
        a.token(
            &form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &bot.id),
                ("client_secret", "s3cret"),
                ("resource", RESOURCE),
            ]),
            &[],
        )
    });
    let basic = format!("Basic {}", STANDARD.encode(format!("{}:s3cret", bot.id)));
    a.refused("Authorization: Basic", 401, "invalid_client", || {
        a.token(&good(&bot), &[("Authorization", &basic)])
    });
    a.refused("no client authentication", 401, "invalid_client", || {
        a.token(
            &form(&[("grant_type", "client_credentials"), ("resource", RESOURCE)]),
            &[],
        )
    });
    a.refused("another client_assertion_type", 401, "invalid_client", || {
        a.token(
            &form(&[
                ("grant_type", "client_credentials"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:saml2-bearer",
                ),
                ("client_assertion", &a.assertion(&bot)),
                ("resource", RESOURCE),
            ]),
            &[],
        )
    });

    // DPoP (`invalid_dpop_proof`, 400).
    a.refused("DPoP by a foreign key", 400, "invalid_dpop_proof", || {
        a.token(&good(&bot), &[("DPoP", &a.dpop(&stranger))])
    });
    let proof = a.dpop(&bot.key);
    a.issues("the first use of a DPoP proof", &good(&bot), &[("DPoP", &proof)]);
    a.refused("the same DPoP proof again", 400, "invalid_dpop_proof", || {
        a.token(&good(&bot), &[("DPoP", &proof)])
    });
    let elsewhere = DpopRequest {
        method: "POST",
        uri: &format!("{}/oauth/revoke", a.issuer),
        access_token: None,
    };
    let misdirected = create_dpop_proof(&bot.key, &elsewhere, now()).unwrap();
    a.refused("DPoP for another htu", 400, "invalid_dpop_proof", || {
        a.token(&good(&bot), &[("DPoP", &misdirected)])
    });

    // The request (`invalid_target`, `invalid_scope`, `unauthorized_client`,
    // `unsupported_grant_type`, `invalid_request`).
    a.refused("no resource", 400, "invalid_target", || {
        a.token(&client_credentials(&a.assertion(&bot), &[]), &[])
    });
    a.refused("two resources", 400, "invalid_target", || {
        a.token(
            &client_credentials(
                &a.assertion(&bot),
                &[("resource", RESOURCE), ("resource", "https://other.example.com/mcp")],
            ),
            &[],
        )
    });
    a.refused("a relative resource", 400, "invalid_target", || {
        a.token(
            &client_credentials(&a.assertion(&bot), &[("resource", "files-proxy")]),
            &[],
        )
    });
    a.refused("a scope the agent does not hold", 400, "invalid_scope", || {
        a.token(
            &client_credentials(
                &a.assertion(&bot),
                &[("resource", RESOURCE), ("scope", "delete_everything")],
            ),
            &[],
        )
    });
    a.refused(
        "client_credentials for an agent that is not autonomous",
        400,
        "unauthorized_client",
        || a.token(&good(&helper), &[]),
    );
    a.refused("an unknown grant type", 400, "unsupported_grant_type", || {
        a.token(
            &form(&[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", "x"),
                ("client_assertion_type", CLIENT_ASSERTION_TYPE),
                ("client_assertion", &a.assertion(&bot)),
            ]),
            &[],
        )
    });
    let body = json!({
        "grant_type": "client_credentials",
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": a.assertion(&bot),
        "resource": RESOURCE,
    });
    a.refused("a JSON body", 400, "invalid_request", || {
        post(
            &format!("{}/oauth/token", a.server.url),
            "application/json",
            &body.to_string(),
            &[],
        )
    });
    a.refused("grant_type twice", 400, "invalid_request", || {
        a.token(&format!("grant_type=client_credentials&{}", good(&bot)), &[])
    });

    // After all that, the good request still works: nothing above was held against the agent.
    a.issues(
        "a good request after the refusals",
        &good(&bot),
        &[("DPoP", &a.dpop(&bot.key))],
    );
}

#[test]
fn refusals_sqlite() {
    refusals(None);
}

#[test]
fn refusals_postgres() {
    if let Some(db) = PostgresDb::create() {
        refusals(Some(&db.url));
    }
}

// ---------------------------------------------------------------------------------------------
// 3. The ID-JAG grant
// ---------------------------------------------------------------------------------------------

/// A test identity provider: an ES256 key and a thread serving its JWKS on loopback.
struct IdentityProvider {
    issuer: String,
    key: KeyPair,
}

impl IdentityProvider {
    fn start() -> Self {
        let key = KeyPair::generate(Algorithm::ES256).unwrap();
        let mut jwk = serde_json::to_value(key.public_key().to_jwk()).unwrap();
        jwk["kid"] = json!(IDP_KID);
        jwk["alg"] = json!("ES256");
        jwk["use"] = json!("sig");
        let jwks = json!({ "keys": [jwk] }).to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        // Serves the key set to every request until the test process ends.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{jwks}",
                    jwks.len()
                );
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        Self { issuer, key }
    }

    /// `[[issuer.oidc]]` for this provider, enabled for ID-JAGs.
    fn config(&self) -> String {
        format!(
            "[[issuer.oidc]]\nissuer = \"{issuer}\"\naudience = \"aip-authority\"\n\
             jwks_url = \"{issuer}/jwks.json\"\nuser_claim = \"sub\"\n\
             delegatable_tools = [\"read_file\", \"list_directory\"]\nid_jag = true\n",
            issuer = self.issuer
        )
    }

    /// The claims of a valid grant for `client_id` at the authority `audience`.
    fn claims(&self, audience: &str, client_id: &str) -> Value {
        let now = now();
        json!({
            "iss": self.issuer,
            "sub": "U019488227",
            "aud": audience,
            "client_id": client_id,
            "jti": format!("jag-{}", SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()),
            "iat": now,
            "exp": now + 300,
            "resource": RESOURCE,
            "scope": "read_file write_file",
            "auth_time": now - 60,
        })
    }
}

/// `{"alg", "typ": "oauth-id-jag+jwt", "kid"}`.
fn id_jag_header(alg: &str) -> Value {
    json!({"alg": alg, "typ": ID_JAG_TYP, "kid": IDP_KID})
}

/// Signs `claims` as an ID-JAG with `key` (this workspace's JOSE toolkit).
fn sign_id_jag(key: &KeyPair, claims: &Value) -> String {
    sign_raw(
        id_jag_header("ES256").to_string().as_bytes(),
        claims.to_string().as_bytes(),
        key,
    )
    .unwrap()
}

/// Signs `claims` as an ID-JAG with joserfc (`interop/sign_jwt.py`).
fn joserfc_sign(python: &str, key_pem: &Path, claims: &Value) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/sign_jwt.py");
    ok(Command::new(python)
        .arg(script)
        .arg(key_pem)
        .arg(id_jag_header("ES256").to_string())
        .arg(claims.to_string())
        .output()
        .unwrap())
    .trim()
    .to_owned()
}

fn id_jag(database: Option<&str>) {
    let python = aip_tests::joserfc_python("the ID-JAG signed by joserfc was not tried");
    let idp = IdentityProvider::start();
    let mut authority = Authority::start(database, Some(&idp.config()), false);
    let a = &authority;
    let grants = a.metadata["grant_types_supported"].as_array().unwrap();
    assert!(grants.contains(&json!(JWT_BEARER)), "{}", a.metadata);
    assert_eq!(
        a.metadata["authorization_grant_profiles_supported"],
        json!(["urn:ietf:params:oauth:grant-profile:id-jag"])
    );
    let assistant = authority.register("assistant", "read_file,list_directory,write_file", false, false);
    let other = authority.register("other", "read_file", false, false);
    let a = &authority;
    let redeem_with = |grant: &str, extra: &[(&str, &str)], headers: &[(&str, &str)]| {
        let assertion = a.assertion(&assistant);
        let mut params = vec![
            ("grant_type", JWT_BEARER),
            ("assertion", grant),
            ("client_assertion_type", CLIENT_ASSERTION_TYPE),
            ("client_assertion", &assertion),
        ];
        params.extend_from_slice(extra);
        a.token(&form(&params), headers)
    };
    let redeem = |grant: &str, extra: &[(&str, &str)]| redeem_with(grant, extra, &[]);
    let issues_with = |case: &str, grant: &str, extra: &[(&str, &str)], headers: &[(&str, &str)]| {
        let before = a.issued();
        let reply = redeem_with(grant, extra, headers);
        assert_eq!(reply.status, 200, "{case}: {}", reply.text);
        assert_eq!(a.issued(), (before.0 + 1, before.1 + 1), "{case}");
        reply.body
    };
    let issues = |case: &str, grant: &str, extra: &[(&str, &str)]| issues_with(case, grant, extra, &[]);

    // A valid grant: a user-bound AAT for the grant's resource, its tools the grant's scope ∩
    // the agent's ∩ what the IdP's users may delegate; no refresh token.
    let valid = idp.claims(&a.issuer, &assistant.id);
    let grant = sign_id_jag(&idp.key, &valid);
    let issued = issues("a valid ID-JAG", &grant, &[]);
    assert_eq!(issued["token_type"], "Bearer", "{issued}");
    assert_eq!(issued["scope"], "read_file", "{issued}");
    assert!(issued.get("refresh_token").is_none(), "{issued}");
    let claims = claims_of(issued["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], assistant.id.as_str());
    assert_eq!(claims["user_binding"]["user_id"], "U019488227", "{claims}");
    assert_eq!(claims["user_binding"]["auth_method"], "oidc", "{claims}");
    assert_eq!(audience_of(&claims), RESOURCE);
    assert_eq!(claims["capabilities"]["tools"], json!(["read_file"]), "{claims}");
    assert_eq!(claims["cnf"]["jkt"], assistant.key.key_id().as_str());

    // The same, signed by an independent JOSE library; asking for less than the grant allows.
    if let Some(python) = &python {
        let pem = a.tmp.path().join("idp.pem");
        std::fs::write(&pem, idp.key.to_pkcs8_pem().unwrap().as_bytes()).unwrap();
        let mut claims = idp.claims(&a.issuer, &assistant.id);
        claims["scope"] = json!("read_file list_directory");
        let grant = joserfc_sign(python, &pem, &claims);
        let issued = issues("an ID-JAG signed by joserfc", &grant, &[("scope", "list_directory")]);
        let claims = claims_of(issued["access_token"].as_str().unwrap());
        assert_eq!(claims["user_binding"]["user_id"], "U019488227", "{claims}");
        assert_eq!(claims["capabilities"]["tools"], json!(["list_directory"]), "{claims}");
    }

    // A grant without `resource`: the form's.
    let mut claims = idp.claims(&a.issuer, &assistant.id);
    claims.as_object_mut().unwrap().remove("resource");
    let issued = issues(
        "an ID-JAG without resource",
        &sign_id_jag(&idp.key, &claims),
        &[("resource", "https://files.example.com/mcp")],
    );
    let claims = claims_of(issued["access_token"].as_str().unwrap());
    assert_eq!(audience_of(&claims), "https://files.example.com/mcp");

    // A grant bound to the agent key (`cnf.jkt`) is redeemed only with a DPoP proof by it.
    let mut claims = idp.claims(&a.issuer, &assistant.id);
    claims["cnf"] = json!({"jkt": assistant.key.key_id().as_str()});
    let bound = sign_id_jag(&idp.key, &claims);
    a.refused("a key-bound ID-JAG without DPoP", 400, "invalid_grant", || {
        redeem(&bound, &[])
    });
    let issued = issues_with(
        "a key-bound ID-JAG with DPoP",
        &bound,
        &[],
        &[("DPoP", &a.dpop(&assistant.key))],
    );
    assert_eq!(issued["token_type"], "DPoP", "{issued}");

    // Refused grants (`invalid_grant`, 400).
    a.refused("the same ID-JAG again", 400, "invalid_grant", || redeem(&grant, &[]));
    let impostor = KeyPair::generate(Algorithm::ES256).unwrap();
    let forged = sign_id_jag(&impostor, &idp.claims(&a.issuer, &assistant.id));
    a.refused("an ID-JAG signed by a foreign key", 400, "invalid_grant", || {
        redeem(&forged, &[])
    });
    for (case, audience) in [
        (
            "an ID-JAG for another authority",
            "https://other-authority.example.com".to_owned(),
        ),
        ("an ID-JAG for the token endpoint", a.token_endpoint.clone()),
    ] {
        let misdirected = sign_id_jag(&idp.key, &idp.claims(&audience, &assistant.id));
        a.refused(case, 400, "invalid_grant", || redeem(&misdirected, &[]));
    }
    let theirs = sign_id_jag(&idp.key, &idp.claims(&a.issuer, &other.id));
    a.refused("an ID-JAG issued to another client", 400, "invalid_grant", || {
        redeem(&theirs, &[])
    });
    let payload = URL_SAFE_NO_PAD.encode(idp.claims(&a.issuer, &assistant.id).to_string());
    let unsigned = format!(
        "{}.{payload}.",
        URL_SAFE_NO_PAD.encode(id_jag_header("none").to_string())
    );
    a.refused("an ID-JAG with alg none", 400, "invalid_grant", || {
        redeem(&unsigned, &[])
    });
    // HS256 keyed with the IdP's public key, the classic algorithm confusion.
    let signing_input = format!(
        "{}.{payload}",
        URL_SAFE_NO_PAD.encode(id_jag_header("HS256").to_string())
    );
    let public_jwk = serde_json::to_string(&idp.key.public_key().to_jwk()).unwrap();
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(public_jwk.as_bytes()).unwrap();
    mac.update(signing_input.as_bytes());
    let hs256 = format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    );
    a.refused("an HS256 ID-JAG", 400, "invalid_grant", || redeem(&hs256, &[]));
    let mut expired = idp.claims(&a.issuer, &assistant.id);
    expired["iat"] = json!(now() - 900);
    expired["exp"] = json!(now() - 600);
    let expired = sign_id_jag(&idp.key, &expired);
    a.refused("an expired ID-JAG", 400, "invalid_grant", || redeem(&expired, &[]));
    let mut bad_typ = id_jag_header("ES256");
    bad_typ["typ"] = json!("JWT");
    let id_token = sign_raw(
        bad_typ.to_string().as_bytes(),
        idp.claims(&a.issuer, &assistant.id).to_string().as_bytes(),
        &idp.key,
    )
    .unwrap();
    a.refused("a JWT that is not an ID-JAG", 400, "invalid_grant", || {
        redeem(&id_token, &[])
    });
    a.refused("no assertion", 400, "invalid_request", || {
        a.token(
            &form(&[
                ("grant_type", JWT_BEARER),
                ("client_assertion_type", CLIENT_ASSERTION_TYPE),
                ("client_assertion", &a.assertion(&assistant)),
            ]),
            &[],
        )
    });
    let fresh = sign_id_jag(&idp.key, &idp.claims(&a.issuer, &assistant.id));
    a.refused("a resource other than the grant's", 400, "invalid_target", || {
        redeem(&fresh, &[("resource", "https://other.example.com/mcp")])
    });
    // Without a client assertion the grant is not redeemed, and stays good for its client.
    a.refused("an ID-JAG without client authentication", 401, "invalid_client", || {
        a.token(&form(&[("grant_type", JWT_BEARER), ("assertion", &fresh)]), &[])
    });
    issues("the same ID-JAG with its client's assertion", &fresh, &[]);
}

#[test]
fn id_jag_sqlite() {
    id_jag(None);
}

#[test]
fn id_jag_postgres() {
    if let Some(db) = PostgresDb::create() {
        id_jag(Some(&db.url));
    }
}
