//! Rate limits of a real `aip-ca serve` (spec 8.4.2), over real HTTP on loopback: failed
//! bearer tokens and bad registrations under the default limits, registrations per
//! registration token, challenges and tokens per agent, and wrong user credentials and bad
//! proofs per agent — each answered `429 rate_limited` with `Retry-After`, while other client
//! addresses (127.0.0.2, …: all of 127/8 is loopback) and other credentials go on unaffected.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};

use aip_tests::{Server, init_authority, ok, run, set_config_section};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

/// An answer: status, `Retry-After`, body.
#[derive(Debug)]
struct Reply {
    status: u16,
    retry_after: Option<u64>,
    body: String,
}

impl Reply {
    /// Asserts a `429 rate_limited` with a `Retry-After` of at least a second.
    fn assert_limited(&self) {
        assert_eq!(self.status, 429, "{self:?}");
        assert!(self.retry_after.is_some_and(|s| s >= 1), "{self:?}");
        let body: Value = serde_json::from_str(&self.body).unwrap();
        assert_eq!(body["error"], "rate_limited", "{self:?}");
        assert!(body["error_description"].as_str().is_some_and(|d| !d.is_empty()));
    }
}

/// A kept-alive HTTP/1.1 connection from 127.0.0.1: requests as fast as the server answers.
struct Connection {
    address: String,
    stream: BufReader<TcpStream>,
}

impl Connection {
    fn open(url: &str) -> Self {
        let address = url.trim_start_matches("http://").to_owned();
        let stream = BufReader::new(TcpStream::connect(&address).unwrap());
        Self { address, stream }
    }

    fn send(&mut self, method: &str, path: &str, bearer: Option<&str>, body: Option<&str>) -> Reply {
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.address);
        if let Some(token) = bearer {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        let body = body.unwrap_or("");
        if !body.is_empty() {
            // A JSON object, or else a form (the OAuth endpoints).
            let kind = if body.starts_with('{') {
                "application/json"
            } else {
                "application/x-www-form-urlencoded"
            };
            request.push_str(&format!("Content-Type: {kind}\r\n"));
        }
        request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        self.stream.get_mut().write_all(request.as_bytes()).unwrap();
        let mut line = String::new();
        self.stream.read_line(&mut line).unwrap();
        let status = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let (mut length, mut retry_after) = (0, None);
        loop {
            line.clear();
            self.stream.read_line(&mut line).unwrap();
            let Some((name, value)) = line.trim_end().split_once(':') else {
                break;
            };
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap(),
                "retry-after" => retry_after = Some(value.trim().parse().unwrap()),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).unwrap();
        Reply {
            status,
            retry_after,
            body: String::from_utf8(body).unwrap(),
        }
    }
}

/// One request with curl from the loopback address `source`: (status, body).
fn curl_from(source: &str, method: &str, url: &str, bearer: Option<&str>, body: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "30",
        "--interface",
        source,
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ]);
    if let Some(token) = bearer {
        cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    if let Some(body) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data", body]);
    }
    let out = cmd.arg(url).output().expect("curl");
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), body.to_owned())
}

/// An authority made with `init`, `[rate_limits]` set to `limits`, served; its admin token.
fn serve_with(dir: &Path, limits: &str) -> (Server, String) {
    let admin = init_authority(dir, &[]);
    set_config_section(dir, "rate_limits", limits);
    (
        Server::start(&["--dir", dir.to_str().unwrap(), "--insecure-no-passphrase"]),
        admin,
    )
}

/// `aip-ca args… --registry URL --token TOKEN`.
fn remote(server: &Server, token: &str, args: &[&str]) -> Output {
    let mut all = args.to_vec();
    all.extend(["--registry", &server.url, "--token", token]);
    run(&all)
}

/// Registers an agent into `dir` with `token`; its id.
fn register(server: &Server, token: &str, name: &str, dir: &Path) -> Result<String, String> {
    let out = remote(
        server,
        token,
        &[
            "register-agent",
            "--name",
            name,
            "--capabilities",
            "read_file",
            "--out-dir",
            dir.to_str().unwrap(),
            "--insecure-no-passphrase",
            "--json",
        ],
    );
    if out.status.success() {
        let registered: Value = serde_json::from_slice(&out.stdout).unwrap();
        Ok(registered["agent_id"].as_str().unwrap().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Sends `count` requests `(method, path, bearer, body)` on one connection: the first is
/// refused with 401, every one after is 401 or 429, and more than `limited` are 429.
fn flood_is_limited(server: &Server, request: (&str, &str, &str, Option<&str>), count: usize, limited: usize) {
    let (method, path, bearer, body) = request;
    let mut connection = Connection::open(&server.url);
    let replies: Vec<Reply> = (0..count)
        .map(|_| connection.send(method, path, Some(bearer), body))
        .collect();
    assert_eq!(replies[0].status, 401, "{:?}", replies[0]);
    assert!(replies.iter().all(|r| r.status == 401 || r.status == 429));
    let refused: Vec<&Reply> = replies.iter().filter(|r| r.status == 429).collect();
    assert!(refused.len() > limited, "only {} of {count} limited", refused.len());
    refused[0].assert_limited();
}

#[test]
fn wrong_bearer_tokens_are_limited_per_address_under_the_defaults() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&[
        "--dir",
        tmp.path().join("aip").to_str().unwrap(),
        "--insecure-no-passphrase",
    ]);
    let admin = server.admin_token();
    flood_is_limited(&server, ("GET", "/v1/agents", "aip_at_wrong", None), 500, 400);
    // Another client address is not affected.
    let url = format!("{}/v1/agents", server.url);
    let (status, body) = curl_from("127.0.0.2", "GET", &url, Some(&admin), None);
    assert_eq!(status, 200, "{body}");
}

#[test]
fn bad_registrations_are_limited_under_the_defaults() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&[
        "--dir",
        tmp.path().join("aip").to_str().unwrap(),
        "--insecure-no-passphrase",
    ]);
    let admin = server.admin_token();
    flood_is_limited(&server, ("POST", "/v1/agents", "aip_rt_nope", Some("{}")), 300, 200);
    let url = format!("{}/v1/whoami", server.url);
    let (status, body) = curl_from("127.0.0.3", "GET", &url, Some(&admin), None);
    assert_eq!(status, 200, "{body}");
}

#[test]
fn registrations_are_limited_per_registration_token() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, admin) = serve_with(&tmp.path().join("aip"), "registration_per_token = 2");
    let token = || {
        let created: Value = serde_json::from_str(&ok(remote(
            &server,
            &admin,
            &[
                "registration-token",
                "create",
                "--uses",
                "10",
                "--expires",
                "1h",
                "--json",
            ],
        )))
        .unwrap();
        created["token"].as_str().unwrap().to_owned()
    };
    let (first, second) = (token(), token());
    for n in 0..2 {
        register(&server, &first, &format!("a{n}"), &tmp.path().join(format!("a{n}"))).unwrap();
    }
    let refused = register(&server, &first, "a2", &tmp.path().join("a2")).unwrap_err();
    assert!(refused.contains("rate_limited"), "{refused}");
    // Another registration token, from the same address, is not affected.
    register(&server, &second, "b0", &tmp.path().join("b0")).unwrap();
}

#[test]
fn challenges_and_tokens_are_limited_per_agent() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, admin) = serve_with(&tmp.path().join("aip"), "token_per_agent = 3");
    let a = register(&server, &admin, "a", &tmp.path().join("a")).unwrap();
    let b = register(&server, &admin, "b", &tmp.path().join("b")).unwrap();
    let mut connection = Connection::open(&server.url);
    let challenge = |agent: &str| format!(r#"{{"agent_id":"{agent}"}}"#);
    for _ in 0..3 {
        let reply = connection.send("POST", "/v1/challenge", None, Some(&challenge(&a)));
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    connection
        .send("POST", "/v1/challenge", None, Some(&challenge(&a)))
        .assert_limited();
    // The token endpoint (a well-formed refresh included: the agent is counted once the
    // body is read) counts against the same agent…
    let refresh = format!(
        r#"{{"grant_type":"aat_refresh","agent_id":"{a}","proof":{{"type":"signed_challenge","challenge":"ch1.x","signature":"AA","algorithm":"EdDSA","timestamp":0}},"audience":"x","refresh_token":"aip_rf_x"}}"#
    );
    connection
        .send("POST", "/v1/token", None, Some(&refresh))
        .assert_limited();
    // …and so does the OAuth token endpoint, for the agent its client assertion names.
    let claims = URL_SAFE_NO_PAD.encode(format!(r#"{{"iss":"{a}","sub":"{a}","aud":"x","exp":1,"jti":"j"}}"#));
    let oauth = format!(
        "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer\
         &client_assertion=eyJhbGciOiJFZERTQSJ9.{claims}.AA&resource=urn%3Ax"
    );
    connection
        .send("POST", "/oauth/token", None, Some(&oauth))
        .assert_limited();
    // …from any address; another agent is not affected.
    let url = format!("{}/v1/challenge", server.url);
    let (status, body) = curl_from("127.0.0.2", "POST", &url, None, Some(&challenge(&a)));
    assert_eq!(status, 429, "{body}");
    let (status, body) = curl_from("127.0.0.2", "POST", &url, None, Some(&challenge(&b)));
    assert_eq!(status, 200, "{body}");
}

#[test]
fn wrong_user_credentials_and_bad_proofs_are_limited_per_agent() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, admin) = serve_with(&tmp.path().join("aip"), "failed_auth_per_credential = 3");
    let a_dir = tmp.path().join("a");
    register(&server, &admin, "a", &a_dir).unwrap();
    let b_dir = tmp.path().join("b");
    register(&server, &admin, "b", &b_dir).unwrap();
    let c_dir = tmp.path().join("c");
    register(&server, &admin, "c", &c_dir).unwrap();
    let user: Value = serde_json::from_str(&ok(remote(
        &server,
        &admin,
        &[
            "users",
            "create",
            "--id",
            "alice",
            "--delegatable",
            "read_file",
            "--json",
        ],
    )))
    .unwrap();
    let key = user["api_key"].as_str().unwrap().to_owned();
    let token = |dir: &Path, key: &str| {
        let out = run(&[
            "token",
            "--agent-dir",
            dir.to_str().unwrap(),
            "--audience",
            "files-proxy",
            "--issuer",
            &server.url,
            "--user-api-key",
            key,
            "--json",
        ]);
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };

    // Three refusals with `error`, then the fourth is limited.
    let refused_then_limited = |dir: &Path, key: &str, error: &str| {
        for _ in 0..3 {
            let (issued, stderr) = token(dir, key);
            assert!(!issued && stderr.contains(error), "{stderr}");
        }
        let (issued, stderr) = token(dir, key);
        assert!(!issued && stderr.contains("rate_limited"), "{stderr}");
    };

    // Wrong user credentials for agent a: refused, then limited.
    refused_then_limited(&a_dir, "aip_uk_wrong", "user_auth_failed");
    let (issued, stderr) = token(&a_dir, &key);
    assert!(
        !issued && stderr.contains("rate_limited"),
        "the agent is held: {stderr}"
    );

    // Bad proofs for agent b: its identity, another agent's key.
    let forged = tmp.path().join("forged");
    std::fs::create_dir(&forged).unwrap();
    for entry in std::fs::read_dir(&b_dir).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), forged.join(entry.file_name())).unwrap();
    }
    std::fs::copy(c_dir.join("agent.key"), forged.join("agent.key")).unwrap();
    refused_then_limited(&forged, &key, "invalid_proof");

    // Agent c, from the same address, is not affected.
    let (issued, stderr) = token(&c_dir, &key);
    assert!(issued, "{stderr}");
}
