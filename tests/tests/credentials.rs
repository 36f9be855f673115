//! Credential lifecycle across replicas: two real `aip-ca serve` processes over one database
//! (PostgreSQL, and an SQLite file); an access token revoked through one is refused by the
//! other within a second, a revoked registration token registers nothing, and the CLI lists
//! tokens without their secrets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

use std::process::Output;
use std::time::{Duration, Instant};

use aip_tests::{PostgresDb, Server, http_get, ok, run};
use serde_json::Value;

/// How long the other replica may go on accepting a revoked token in this test: the design
/// allows 1 s; the bound leaves room for a loaded machine.
const REPLICA_BOUND: Duration = Duration::from_secs(3);

fn json(output: Output) -> Value {
    serde_json::from_str(&ok(output)).unwrap()
}

fn refused(output: &Output, needle: &str) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    assert!(stderr.lines().any(|l| l.starts_with("error: ")), "{stderr}");
    stderr
}

fn across_replicas(database: Option<&str>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("aip");
    let dir = dir.to_str().unwrap();
    let mut args = vec!["--dir", dir, "--insecure-no-passphrase"];
    if let Some(url) = database {
        args.extend(["--database-url", url]);
    }
    let a = Server::start(&args);
    let admin = a.admin_token();
    let b = Server::start(&args);
    let on = |server: &Server, command: &[&str]| {
        let mut all = command.to_vec();
        all.extend(["--registry", &server.url, "--token", &admin]);
        run(&all)
    };

    // A reader token made on A works on B, which now remembers it.
    let created = json(on(
        &a,
        &[
            "access-token",
            "create",
            "--role",
            "reader",
            "--label",
            "proxy",
            "--json",
        ],
    ));
    let reader = created["token"].as_str().unwrap().to_owned();
    let reader_id = created["token_id"].as_str().unwrap().to_owned();
    assert_eq!(http_get(&format!("{}/v1/agents", b.url), Some(&reader)).0, 200);

    let listed = ok(on(&b, &["access-token", "list"]));
    assert!(listed.contains(&reader_id) && listed.contains("proxy"), "{listed}");
    assert!(!listed.contains(&reader), "{listed}");
    let listed = json(on(&b, &["access-token", "list", "--json"]));
    assert_eq!(listed["access_tokens"].as_array().unwrap().len(), 2, "{listed}");
    assert!(!listed.to_string().contains("aip_at_"), "{listed}");

    // Revoked on A: B refuses it within the bound.
    assert_eq!(http_get(&format!("{}/v1/agents", b.url), Some(&reader)).0, 200);
    let revoked = Instant::now();
    let answer = ok(on(&a, &["access-token", "revoke", &reader_id]));
    assert!(answer.contains(&reader_id) && answer.contains("revoked"), "{answer}");
    loop {
        let (status, body) = http_get(&format!("{}/v1/agents", b.url), Some(&reader));
        if status == 401 {
            assert!(body.contains("invalid_token"), "{body}");
            break;
        }
        assert_eq!(status, 200, "{body}");
        assert!(
            revoked.elapsed() < REPLICA_BOUND,
            "B still accepts a token revoked on A {:?} ago",
            revoked.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("B refused the revoked token after {:?}", revoked.elapsed());

    // Revoking again, through B, changes nothing; an unknown id and the last admin token are
    // refused with a hint.
    let again = json(on(&b, &["access-token", "revoke", &reader_id, "--json"]));
    assert!(again["revoked_at"].is_string(), "{again}");
    let stderr = refused(
        &on(&b, &["access-token", "revoke", "at0123456789ab"]),
        "token_not_found",
    );
    assert!(stderr.contains("hint: check the token id"), "{stderr}");
    let whoami = http_get(&format!("{}/v1/whoami", a.url), Some(&admin)).1;
    let admin_id = serde_json::from_str::<Value>(&whoami).unwrap()["token_id"]
        .as_str()
        .unwrap()
        .to_owned();
    refused(
        &on(&a, &["access-token", "revoke", &admin_id]),
        "last unexpired admin token",
    );
    assert_eq!(http_get(&format!("{}/v1/agents", b.url), Some(&admin)).0, 200);

    // A registration token made on A (today's invocation), revoked on B: A registers nothing
    // with it.
    let registration = json(on(
        &a,
        &[
            "registration-token",
            "create",
            "--uses",
            "2",
            "--expires",
            "1h",
            "--label",
            "batch",
            "--json",
        ],
    ));
    let token = registration["token"].as_str().unwrap().to_owned();
    let token_id = registration["token_id"].as_str().unwrap().to_owned();
    let listed = ok(on(&b, &["registration-token", "list"]));
    assert!(listed.contains(&token_id) && listed.contains("batch"), "{listed}");
    assert!(!listed.contains(&token), "{listed}");
    ok(on(&b, &["registration-token", "revoke", &token_id]));
    let agent_dir = tmp.path().join("agent");
    let register = run(&[
        "register-agent",
        "--name",
        "late agent",
        "--capabilities",
        "read_file",
        "--out-dir",
        agent_dir.to_str().unwrap(),
        "--insecure-no-passphrase",
        "--registry",
        &a.url,
        "--token",
        &token,
    ]);
    refused(&register, "revoked");

    // Both revocations are in the audit chain, which holds, signed up to its head once both
    // replicas have stopped.
    b.terminate();
    a.terminate();
    let audit = ok(run(&["audit", "verify", "--dir", dir, "--json"]
        .into_iter()
        .chain(database.map(|url| ["--database-url", url]).into_iter().flatten())
        .collect::<Vec<_>>()));
    assert!(audit.contains("\"ok\":true"), "{audit}");
}

#[test]
fn a_revocation_holds_on_another_replica_postgres() {
    let Some(db) = PostgresDb::create() else {
        return;
    };
    across_replicas(Some(&db.url));
}

#[test]
fn a_revocation_holds_on_another_replica_sqlite() {
    across_replicas(None);
}
