//! The token issuer end to end with the real binary: serve → register-agent → users create →
//! `aip-ca token` → `aip-ca verify`, the AAT checked again by an independent JOSE library
//! (Python joserfc), a wrong API key refused without being echoed, a user revoked (and the
//! revocation published), an issuer key rotated across a restart, and the audit log verified
//! and free of secrets. Runs on SQLite and on PostgreSQL.
//!
//! The joserfc checks need `python3` with `joserfc` (`python3 -m pip install -r tests/python/requirements.txt`; `AIP_PYTHON`
//! names another interpreter). Under `CI` they are required; elsewhere they are reported skipped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aip_tests::{PostgresDb, Server, execute_sql, ok, query_text, run};
use serde_json::{Value, json};

const AUDIENCE: &str = "files-proxy";

fn json_of(output: Output) -> Value {
    serde_json::from_str(&ok(output)).unwrap()
}

/// Asserts exit status 1 with exactly one `error:` line on stderr, which contains `needle`;
/// returns stdout and stderr together.
fn failed(output: &Output, needle: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stdout: {stdout}\nstderr: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line expected in: {stderr}");
    assert!(errors[0].contains(needle), "expected {needle:?} in: {stderr}");
    format!("{stdout}{stderr}")
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// `GET url` with curl, optionally with a bearer token: (HTTP status, body).
fn http_get(url: &str, bearer: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "30", "-w", "\n%{http_code}"]);
    if let Some(token) = bearer {
        cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    let out = cmd.arg(url).output().expect("curl");
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), body.to_owned())
}

fn jwks_kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Unpadded base64url (RFC 4648 §5), as in JWS compact serialization.
fn b64url_decode(text: &str) -> Vec<u8> {
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0u32);
    for c in text.bytes() {
        let digit = B64URL.iter().position(|&b| b == c).expect("base64url digit");
        acc = (acc << 6) | u32::try_from(digit).unwrap();
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from(acc >> bits).unwrap());
            acc &= (1 << bits) - 1;
        }
    }
    out
}

fn b64url_encode(bytes: &[u8]) -> String {
    let (mut out, mut acc, mut bits) = (String::new(), 0u32, 0u32);
    for &byte in bytes {
        acc = (acc << 8) | u32::from(byte);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(char::from(B64URL[usize::try_from((acc >> bits) & 63).unwrap()]));
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(B64URL[usize::try_from((acc << (6 - bits)) & 63).unwrap()]));
    }
    out
}

/// The JOSE header of a compact JWS, decoded without verification.
fn jwt_header(token: &str) -> Value {
    serde_json::from_slice(&b64url_decode(token.split('.').next().unwrap())).unwrap()
}

/// Runs `interop/verify_aat.py JWKS TOKEN AUDIENCE`.
fn joserfc_verify(python: &str, jwks: &Path, token: &str, audience: &str) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/verify_aat.py");
    Command::new(python)
        .arg(script)
        .arg(jwks)
        .arg(token)
        .arg(audience)
        .output()
        .unwrap()
}

fn assert_joserfc_accepts(python: &str, jwks: &Path, token: &str, jti: &str) {
    let out = joserfc_verify(python, jwks, token, AUDIENCE);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "joserfc refused the AAT:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), format!("verified {jti}"));
}

fn assert_joserfc_rejects(python: &str, jwks: &Path, token: &str, audience: &str, why: &str) -> String {
    let out = joserfc_verify(python, jwks, token, audience);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "joserfc accepted {why}:\n{stdout}");
    assert!(stdout.starts_with("rejected: "), "{why}: {stdout}");
    stdout
}

/// The RFC 7638 thumbprint of the agent's public key (`agent.json`), computed by joserfc.
fn joserfc_thumbprint(python: &str, agent_json: &Path) -> String {
    let code = "import json, sys\n\
                from joserfc.jwk import ECKey, OKPKey\n\
                k = json.load(open(sys.argv[1]))['aid']['public_key']\n\
                print((OKPKey if k['kty'] == 'OKP' else ECKey).import_key(k).thumbprint())";
    ok(Command::new(python)
        .args(["-c", code])
        .arg(agent_json)
        .output()
        .unwrap())
    .trim()
    .to_owned()
}

/// Every audit record's actor, action, subject and details, one line each.
fn audit_log_text(database_url: &str) -> String {
    query_text(
        database_url,
        "SELECT actor, action, subject, details FROM audit_log ORDER BY seq",
    )
    .iter()
    .map(|row| row.join(" "))
    .collect::<Vec<_>>()
    .join("\n")
}

/// `aip-ca token … --json` for the agent in `agent_dir`.
fn fetch_token(issuer: &str, agent_dir: &Path, tools: Option<&str>, api_key: Option<&str>) -> Output {
    let mut args = vec![
        "token",
        "--agent-dir",
        agent_dir.to_str().unwrap(),
        "--audience",
        AUDIENCE,
        "--issuer",
        issuer,
        "--json",
    ];
    if let Some(tools) = tools {
        args.extend(["--tools", tools]);
    }
    if let Some(key) = api_key {
        args.extend(["--user-api-key", key]);
    }
    run(&args)
}

/// `aip-ca verify --issuer-url` with the AIP audience: the claims.
fn verify(issuer: &str, aat: &str) -> Value {
    json_of(run(&[
        "verify",
        "--aat",
        aat,
        "--issuer-url",
        issuer,
        "--audience",
        AUDIENCE,
    ]))
}

fn flow(database: Option<&str>) {
    let python = aip_tests::joserfc_python("the independent joserfc checks of the issuer flow did not run");
    let tmp = tempfile::tempdir().unwrap();
    let authority = tmp.path().join("aip");
    let dir = authority.to_str().unwrap().to_owned();
    let mut serve_args = vec!["--dir", &dir, "--insecure-no-passphrase"];
    if let Some(url) = database {
        serve_args.extend(["--database-url", url]);
    }
    let server = Server::start(&serve_args);
    let admin = server.admin_token();
    let remote = |url: &str, args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--registry", url, "--token", &admin]);
        run(&all)
    };

    // 1. The README flow: an agent, a user, an AAT for the tools both allow.
    let agent_dir = tmp.path().join("agent");
    let registered = json_of(remote(
        &server.url,
        &[
            "register-agent",
            "--name",
            "files agent",
            "--capabilities",
            "read_file,list_directory",
            "--out-dir",
            agent_dir.to_str().unwrap(),
            "--insecure-no-passphrase",
            "--json",
        ],
    ));
    let agent_id = registered["agent_id"].as_str().unwrap().to_owned();
    let agent_json: Value =
        serde_json::from_str(&std::fs::read_to_string(agent_dir.join("agent.json")).unwrap()).unwrap();
    assert_eq!(agent_json["agent_id"], agent_id.as_str());
    let thumbprint = agent_json["aid"]["public_key"]["kid"].as_str().unwrap().to_owned();
    assert_eq!(registered["key_id"], thumbprint.as_str());

    let alice = json_of(remote(
        &server.url,
        &[
            "users",
            "create",
            "--id",
            "alice",
            "--delegatable",
            "read_file,write_file",
            "--json",
        ],
    ));
    assert_eq!(alice["user_id"], "alice");
    assert_eq!(alice["delegatable_tools"], json!(["read_file", "write_file"]));
    let alice_key = alice["api_key"].as_str().unwrap().to_owned();
    assert!(alice_key.len() > 20, "{alice_key}");

    let before = now();
    let issued = json_of(fetch_token(
        &server.url,
        &agent_dir,
        Some("read_file,list_directory"),
        Some(&alice_key),
    ));
    assert_eq!(issued["token_type"], "aat+jwt");
    assert_eq!(issued["capabilities_granted"]["tools"], json!(["read_file"]));
    assert_eq!(issued["capabilities_denied"]["tools"], json!(["list_directory"]));
    let expires_in = issued["expires_in"].as_u64().unwrap();
    assert!((1..=86_400).contains(&expires_in), "{issued}");
    assert!(issued.get("expires_at").is_none(), "{issued}");
    let after = now();
    let aat = issued["aat"].as_str().unwrap().to_owned();

    let claims = verify(&server.url, &aat);
    assert_eq!(claims["sub"], agent_id.as_str());
    assert_eq!(claims["agent"]["id"], agent_id.as_str());
    assert_eq!(claims["agent"]["public_key_thumbprint"], thumbprint.as_str());
    assert_eq!(claims["cnf"]["jkt"], thumbprint.as_str());
    assert_eq!(claims["user_binding"]["user_id"], "alice");
    assert_eq!(claims["user_binding"]["auth_method"], "api_key");
    assert_eq!(claims["capabilities"]["tools"], json!(["read_file"]));
    assert!(
        claims["aud"] == AUDIENCE || claims["aud"] == json!([AUDIENCE]),
        "{claims}"
    );
    // `exp` is the issuer's clock plus `expires_in`.
    let exp = claims["exp"].as_u64().unwrap();
    assert!((before + expires_in..=after + expires_in).contains(&exp), "{claims}");
    assert!(claims["iss"].as_str().is_some_and(|iss| !iss.is_empty()), "{claims}");
    let jti = claims["jti"].as_str().unwrap().to_owned();
    let session = claims["context"]["session_id"].as_str().unwrap().to_owned();
    // `verify` checks the audience too.
    failed(
        &run(&[
            "verify",
            "--aat",
            &aat,
            "--issuer-url",
            &server.url,
            "--audience",
            "other",
        ]),
        "audience",
    );

    let header = jwt_header(&aat);
    assert_eq!(header["typ"], "aat+jwt");
    let old_kid = header["kid"].as_str().unwrap().to_owned();
    let keys = json_of(run(&["keys", "list", "--dir", &dir, "--json"]));
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1, "{keys}");
    assert_eq!(keys["keys"][0]["kid"], old_kid.as_str());
    assert_eq!(keys["keys"][0]["state"], "current");

    // An agent registered as autonomous gets AATs without a user; the others do not.
    let bot_dir = tmp.path().join("bot");
    let bot = json_of(remote(
        &server.url,
        &[
            "register-agent",
            "--name",
            "nightly bot",
            "--capabilities",
            "read_file",
            "--autonomous",
            "--out-dir",
            bot_dir.to_str().unwrap(),
            "--insecure-no-passphrase",
            "--json",
        ],
    ));
    let bot_aat = json_of(fetch_token(&server.url, &bot_dir, None, None))["aat"]
        .as_str()
        .unwrap()
        .to_owned();
    let bot_claims = verify(&server.url, &bot_aat);
    assert_eq!(bot_claims["sub"], bot["agent_id"]);
    assert_eq!(bot_claims["capabilities"]["tools"], json!(["read_file"]));
    assert!(bot_claims.get("user_binding").is_none(), "{bot_claims}");
    failed(&fetch_token(&server.url, &agent_dir, None, None), "user_auth_failed");

    // 2. An independent JOSE library agrees, and refuses tampered tokens.
    let (status, body) = http_get(&format!("{}/v1/jwks", server.url), None);
    assert_eq!(status, 200, "{body}");
    let jwks_file = tmp.path().join("jwks.json");
    std::fs::write(&jwks_file, &body).unwrap();
    assert!(
        jwks_kids(&serde_json::from_str(&body).unwrap()).contains(&old_kid),
        "{body}"
    );
    if let Some(python) = &python {
        assert_joserfc_accepts(python, &jwks_file, &aat, &jti);
        assert_joserfc_accepts(python, &jwks_file, &bot_aat, bot_claims["jti"].as_str().unwrap());
        assert_eq!(joserfc_thumbprint(python, &agent_dir.join("agent.json")), thumbprint);
        assert_joserfc_rejects(python, &jwks_file, &aat, "other", "the wrong audience");

        let parts: Vec<&str> = aat.split('.').collect();
        let mut payload = parts[1].as_bytes().to_vec();
        let middle = payload.len() / 2;
        payload[middle] = if payload[middle] == b'A' { b'B' } else { b'A' };
        let flipped = format!("{}.{}.{}", parts[0], String::from_utf8(payload).unwrap(), parts[2]);
        assert_joserfc_rejects(python, &jwks_file, &flipped, AUDIENCE, "a flipped payload character");

        // A well-formed forgery: more capabilities under the original signature.
        let mut forged: Value = serde_json::from_slice(&b64url_decode(parts[1])).unwrap();
        forged["capabilities"]["tools"] = json!(["read_file", "write_file"]);
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64url_encode(&serde_json::to_vec(&forged).unwrap()),
            parts[2]
        );
        let why = assert_joserfc_rejects(python, &jwks_file, &forged, AUDIENCE, "forged claims");
        assert!(why.contains("bad_signature"), "{why}");
        failed(
            &run(&[
                "verify",
                "--aat",
                &forged,
                "--issuer-url",
                &server.url,
                "--audience",
                AUDIENCE,
            ]),
            "signature",
        );
    }

    // 3. A wrong API key: one error line naming the reason, and the key is not echoed.
    let wrong_key = "aip_uk_NotAliceKeyNotAliceKeyNotAliceKey0123456";
    let refused = failed(
        &fetch_token(&server.url, &agent_dir, Some("read_file"), Some(wrong_key)),
        "user_auth_failed",
    );
    assert!(!refused.contains(wrong_key), "the API key was echoed: {refused}");
    assert!(
        !refused.contains("NotAliceKey"),
        "part of the API key was echoed: {refused}"
    );

    // 4. Revoking the user revokes its AATs and sessions, publicly, and for good.
    let revoked = json_of(remote(
        &server.url,
        &["users", "revoke", "alice", "--reason", "left the team", "--json"],
    ));
    assert!(revoked["tokens"].as_u64().unwrap() >= 1, "{revoked}");
    assert!(revoked["sessions"].as_u64().unwrap() >= 1, "{revoked}");
    let revocations_url = format!("{}/v1/revocations", server.url);
    assert_eq!(http_get(&revocations_url, None).0, 401);
    let (status, body) = http_get(&revocations_url, Some(&admin));
    assert_eq!(status, 200, "{body}");
    let revocations: Value = serde_json::from_str(&body).unwrap();
    let listed = |list: &str, field: &str, value: &str| {
        revocations[list]
            .as_array()
            .unwrap()
            .iter()
            .any(|entry| entry[field] == value)
    };
    assert!(listed("revoked_aats", "jti", &jti), "{revocations}");
    assert!(listed("revoked_sessions", "session_id", &session), "{revocations}");
    assert!(listed("revoked_users", "user_id", "alice"), "{revocations}");
    failed(
        &fetch_token(&server.url, &agent_dir, Some("read_file"), Some(&alice_key)),
        "user_auth_failed",
    );
    let users = json_of(remote(&server.url, &["users", "list", "--json"]));
    let alice_row = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user_id"] == "alice")
        .unwrap();
    assert!(alice_row["revoked_at"].is_string(), "{users}");

    // 5. Key rotation: the new key is published at once, used after a restart, and the old
    //    key stays published for the AATs it signed.
    let bob = json_of(remote(
        &server.url,
        &["users", "create", "--id", "bob", "--delegatable", "read_file", "--json"],
    ));
    let bob_key = bob["api_key"].as_str().unwrap().to_owned();
    let rotated = json_of(run(&[
        "keys",
        "rotate",
        "--dir",
        &dir,
        "--insecure-no-passphrase",
        "--json",
    ]));
    let new_kid = rotated["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, old_kid);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = http_get(&format!("{}/v1/jwks", server.url), None);
        assert_eq!(status, 200, "{body}");
        let kids = jwks_kids(&serde_json::from_str(&body).unwrap());
        if kids.contains(&new_kid) {
            assert!(kids.contains(&old_kid), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the running server never published {new_kid}: {body}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // Until the restart the running server still signs with the key it started with.
    let old_aat = json_of(fetch_token(&server.url, &agent_dir, None, Some(&bob_key)))["aat"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(jwt_header(&old_aat)["kid"], old_kid.as_str());
    let old_claims = verify(&server.url, &old_aat);
    assert_eq!(old_claims["user_binding"]["user_id"], "bob");

    let status = server.terminate();
    assert!(status.success(), "aip-ca serve exited with {status:?} after SIGTERM");
    let server = Server::start(&serve_args);
    assert!(server.stdout.is_empty(), "no new authority expected: {}", server.stdout);

    let new_aat = json_of(fetch_token(&server.url, &agent_dir, None, Some(&bob_key)))["aat"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(jwt_header(&new_aat)["kid"], new_kid.as_str());
    let new_claims = verify(&server.url, &new_aat);
    assert_eq!(new_claims["sub"], agent_id.as_str());
    assert_eq!(new_claims["cnf"]["jkt"], thumbprint.as_str());
    assert_eq!(verify(&server.url, &old_aat)["jti"], old_claims["jti"]);

    let keys = json_of(run(&["keys", "list", "--dir", &dir, "--json"]));
    let states: Vec<(&str, &str)> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["kid"].as_str().unwrap(), k["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states.len(), 2, "{keys}");
    assert!(states.contains(&(new_kid.as_str(), "current")), "{keys}");
    assert!(states.contains(&(old_kid.as_str(), "published")), "{keys}");

    let (status, body) = http_get(&format!("{}/v1/jwks", server.url), None);
    assert_eq!(status, 200, "{body}");
    let kids = jwks_kids(&serde_json::from_str(&body).unwrap());
    assert!(kids.contains(&old_kid) && kids.contains(&new_kid), "{body}");
    if let Some(python) = &python {
        std::fs::write(&jwks_file, &body).unwrap();
        assert_joserfc_accepts(python, &jwks_file, &old_aat, old_claims["jti"].as_str().unwrap());
        assert_joserfc_accepts(python, &jwks_file, &new_aat, new_claims["jti"].as_str().unwrap());
    }
    assert!(server.terminate().success());

    // 6. The audit log: an intact chain that records the issuance but holds no secret.
    let mut audit_args = vec!["audit", "verify", "--dir", &dir, "--json"];
    if let Some(url) = database {
        audit_args.extend(["--database-url", url]);
    }
    let audit = json_of(run(&audit_args));
    assert_eq!(audit["ok"], true, "{audit}");
    let database_url = database.map_or_else(
        || format!("sqlite://{}?mode=ro", authority.join("aip.db").display()),
        str::to_owned,
    );
    let log = audit_log_text(&database_url);
    assert_eq!(
        audit["records"].as_u64().unwrap(),
        u64::try_from(log.lines().count()).unwrap()
    );
    assert!(
        log.lines().any(|l| l.contains("token.issue") && l.contains(&jti)),
        "no issuance record for {jti}:\n{log}"
    );
    assert!(log.contains("user_auth_failed"), "the refusal is not recorded:\n{log}");
    for (what, secret) in [
        ("alice's API key", alice_key.as_str()),
        ("bob's API key", bob_key.as_str()),
        ("the wrong API key", wrong_key),
        ("the admin token", admin.as_str()),
    ] {
        assert!(!log.contains(secret), "the audit log holds {what}:\n{log}");
    }
    for token in [&aat, &bot_aat, &old_aat, &new_aat] {
        let signature = token.rsplit('.').next().unwrap();
        assert!(!log.contains(signature), "the audit log holds an AAT:\n{log}");
    }
}

/// `count` copies of the agent `agent_id` (new ids, names and key thumbprints) and of the user
/// `user_id` (new ids and key digests), made in two statements: listing, not registration, is
/// under test. Ids are `ag_00000000-0000-4000-8000-<n>` and `user-<n>`, `n` from `first`.
fn copy_principals(url: &str, agent_id: &str, user_id: &str, first: u32, count: u32) {
    let padded = if url.starts_with("postgres") {
        "right('000000000000' || i, 12)"
    } else {
        "substr('000000000000' || i, -12)"
    };
    let numbers = format!(
        "WITH RECURSIVE n(i) AS (SELECT {first} UNION ALL SELECT i + 1 FROM n WHERE i < {})",
        first + count - 1
    );
    execute_sql(
        url,
        &format!(
            "{numbers} INSERT INTO agents (agent_id, name, capabilities, autonomous, status, created_at, \
             key_thumbprint, public_key) \
             SELECT 'ag_00000000-0000-4000-8000-' || {padded}, 'copy ' || i, a.capabilities, a.autonomous, \
             'active', a.created_at, a.key_thumbprint || '-' || i, a.public_key \
             FROM n, agents a WHERE a.agent_id = '{agent_id}'"
        ),
    );
    execute_sql(
        url,
        &format!(
            "{numbers} INSERT INTO users (user_id, key_digest, delegatable_tools, delegation_scope, created_at) \
             SELECT 'user-' || {padded}, u.key_digest || '-' || i, u.delegatable_tools, u.delegation_scope, \
             u.created_at FROM n, users u WHERE u.user_id = '{user_id}'"
        ),
    );
}

/// Pages of `GET path` (each at most 1 000 items under `member`) until one without `next`.
fn pages(url: &str, path: &str, member: &str, token: &str) -> Vec<Vec<String>> {
    let id = if member == "agents" { "agent_id" } else { "user_id" };
    let mut pages = Vec::new();
    let mut after = String::new();
    loop {
        let (status, body) = http_get(&format!("{url}{path}?limit=1000{after}"), Some(token));
        assert_eq!(status, 200, "{body}");
        let page: Value = serde_json::from_str(&body).unwrap();
        pages.push(
            page[member]
                .as_array()
                .unwrap()
                .iter()
                .map(|item| item[id].as_str().unwrap().to_owned())
                .collect(),
        );
        match page["next"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => return pages,
        }
    }
}

/// 1 001 agents and users: the API answers a page of 1 000 with a `next` cursor that
/// continues where it stopped even after an insert before it (keyset, not offset), and
/// `aip-ca agents list` and `aip-ca users list` show every one.
fn listings(database: Option<&str>) {
    let tmp = tempfile::tempdir().unwrap();
    let authority = tmp.path().join("aip");
    let dir = authority.to_str().unwrap().to_owned();
    let sqlite = format!("sqlite://{}", authority.join("aip.db").display());
    let url = database.unwrap_or(&sqlite);
    let mut serve_args = vec!["--dir", &dir, "--insecure-no-passphrase"];
    if let Some(url) = database {
        serve_args.extend(["--database-url", url]);
    }
    let server = Server::start(&serve_args);
    let admin = server.admin_token();
    let remote = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--registry", &server.url, "--token", &admin]);
        run(&all)
    };
    let agent_dir = tmp.path().join("agent");
    let registered = json_of(remote(&[
        "register-agent",
        "--name",
        "lister",
        "--out-dir",
        agent_dir.to_str().unwrap(),
        "--insecure-no-passphrase",
        "--json",
    ]));
    let agent_id = registered["agent_id"].as_str().unwrap().to_owned();
    ok(remote(&[
        "users",
        "create",
        "--id",
        "zoe",
        "--delegatable",
        "read_file",
    ]));
    copy_principals(url, &agent_id, "zoe", 1, 1000);

    for (path, member) in [("/v1/agents", "agents"), ("/v1/users", "users")] {
        let listed = pages(&server.url, path, member, &admin);
        assert_eq!(listed.iter().map(Vec::len).collect::<Vec<_>>(), [1000, 1], "{member}");
    }
    let agents = json_of(remote(&["agents", "list", "--json"]));
    assert_eq!(agents.as_array().unwrap().len(), 1001);
    assert!(
        agents
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["agent_id"] == agent_id.as_str())
    );
    let users = json_of(remote(&["users", "list", "--json"]));
    assert_eq!(users["users"].as_array().unwrap().len(), 1001);
    assert!(users["users"].as_array().unwrap().iter().any(|u| u["user_id"] == "zoe"));
    assert!(users.get("next").is_none(), "{}", users["next"]);

    // Inserts before the cursor between two pages: the second page still starts after the
    // last item of the first, repeating nothing.
    let lists = [("/v1/agents", "agents"), ("/v1/users", "users")];
    let firsts: Vec<Value> = lists
        .iter()
        .map(|(path, _)| {
            let (status, body) = http_get(&format!("{}{path}?limit=1000", server.url), Some(&admin));
            assert_eq!(status, 200, "{body}");
            serde_json::from_str(&body).unwrap()
        })
        .collect();
    copy_principals(url, &agent_id, "zoe", 0, 1);
    for ((path, member), first) in lists.iter().zip(&firsts) {
        let next = first["next"].as_str().unwrap();
        let (status, body) = http_get(&format!("{}{path}?limit=1000&after={next}", server.url), Some(&admin));
        assert_eq!(status, 200, "{body}");
        let second: Value = serde_json::from_str(&body).unwrap();
        let first = first[*member].as_array().unwrap();
        let second = second[*member].as_array().unwrap();
        assert_eq!(second.len(), 1, "{member}: {second:?}");
        assert!(
            !first.contains(&second[0]),
            "{member}: {second:?} repeats the first page"
        );
    }
    assert_eq!(
        json_of(remote(&["agents", "list", "--json"])).as_array().unwrap().len(),
        1002
    );
    assert_eq!(
        json_of(remote(&["users", "list", "--json"]))["users"]
            .as_array()
            .unwrap()
            .len(),
        1002
    );
}

#[test]
fn listings_page_through_everything_on_sqlite() {
    listings(None);
}

#[test]
fn listings_page_through_everything_on_postgres() {
    if let Some(db) = PostgresDb::create() {
        listings(Some(&db.url));
    }
}

#[test]
fn issuer_flow_on_sqlite() {
    flow(None);
}

#[test]
fn issuer_flow_on_postgres() {
    if let Some(db) = PostgresDb::create() {
        flow(Some(&db.url));
    }
}
