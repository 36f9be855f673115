//! The README's flow with the real binary: serve → register-agent → agents show → revoke →
//! crl, with openssl checking the certificate against the CRL before and after, the audit
//! log verified, a graceful stop, and a restart that still knows the agent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

use aip_tests::{PostgresDb, Server, ok, run};
use serde_json::Value;

fn openssl_verify(dir: &Path, authority: &Path, crl: &Path) -> Output {
    let chain = std::fs::read_to_string(dir.join("agent/agent.crt")).unwrap();
    let leaf_end = chain.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----\n".len();
    std::fs::write(dir.join("leaf.pem"), &chain[..leaf_end]).unwrap();
    Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(authority.join("ca/root.pem"))
        .arg("-untrusted")
        .arg(authority.join("ca/issuing.pem"))
        .arg("-crl_check")
        .arg("-CRLfile")
        .arg(crl)
        .arg(dir.join("leaf.pem"))
        .output()
        .unwrap()
}

fn flow(database: Option<&str>) {
    let tmp = tempfile::tempdir().unwrap();
    let authority = tmp.path().join("aip");
    let dir = authority.to_str().unwrap().to_owned();
    let mut serve_args = vec!["--dir", &dir, "--insecure-no-passphrase"];
    if let Some(url) = database {
        serve_args.extend(["--database-url", url]);
    }
    let server = Server::start(&serve_args);
    let token = server.admin_token();
    let remote = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--registry", &server.url, "--token", &token]);
        run(&all)
    };

    let agent_dir = tmp.path().join("agent");
    let registered: Value = serde_json::from_str(&ok(remote(&[
        "register-agent",
        "--name",
        "demo agent",
        "--capabilities",
        "read_file,list_directory",
        "--out-dir",
        agent_dir.to_str().unwrap(),
        "--insecure-no-passphrase",
        "--json",
    ])))
    .unwrap();
    let id = registered["agent_id"].as_str().unwrap().to_owned();
    for file in ["agent.key", "agent.json", "agent.crt"] {
        assert!(agent_dir.join(file).exists(), "{file}");
    }

    let shown: Value = serde_json::from_str(&ok(remote(&["agents", "show", &id, "--json"]))).unwrap();
    assert_eq!(shown["status"], "active");
    assert_eq!(shown["certificates"][0]["state"], "valid");

    let crl = tmp.path().join("crl.pem");
    ok(remote(&["crl", "--out", crl.to_str().unwrap()]));
    let verified = openssl_verify(tmp.path(), &authority, &crl);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    assert!(String::from_utf8_lossy(&verified.stdout).contains("OK"));

    ok(remote(&["agents", "revoke", &id, "--reason", "end of demo"]));
    ok(remote(&["crl", "--out", crl.to_str().unwrap()]));
    let refused = openssl_verify(tmp.path(), &authority, &crl);
    assert!(!refused.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(text.contains("certificate revoked"), "{text}");

    let shown: Value = serde_json::from_str(&ok(remote(&["agents", "show", &id, "--json"]))).unwrap();
    assert_eq!(shown["status"], "revoked");
    assert_eq!(shown["status_reason"], "end of demo");

    // The server is running: what it wrote since its last checkpoint is not signed yet.
    let mut audit_args = vec!["audit", "verify", "--dir", &dir, "--json", "--allow-unsigned-tail"];
    if let Some(url) = database {
        audit_args.extend(["--database-url", url]);
    }
    let audit: Value = serde_json::from_str(&ok(run(&audit_args))).unwrap();
    assert_eq!(audit["ok"], true);
    assert_eq!(
        audit["records"], 4,
        "admin token, token signing key, registration, revocation"
    );
    assert_eq!(
        audit["checkpoint"]["seq"], 2,
        "signed when the authority was created: {audit}"
    );
    assert_eq!(audit["unsigned_tail"], 2, "{audit}");

    let status = server.terminate();
    assert!(status.success(), "aip-ca serve exited with {status:?} after SIGTERM");

    // The authority survives a restart.
    let server = Server::start(&serve_args);
    assert!(
        server.stdout.is_empty(),
        "no new authority, no new admin token: {}",
        server.stdout
    );
    let shown: Value = serde_json::from_str(&ok(run(&[
        "agents",
        "show",
        &id,
        "--json",
        "--registry",
        &server.url,
        "--token",
        &token,
    ])))
    .unwrap();
    assert_eq!(shown["status"], "revoked");
    assert!(server.terminate().success());
}

#[test]
fn readme_flow_on_sqlite() {
    flow(None);
}

#[test]
fn readme_flow_on_postgres() {
    if let Some(db) = PostgresDb::create() {
        flow(Some(&db.url));
    }
}
