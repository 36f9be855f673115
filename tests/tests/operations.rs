//! Operating the authority through the real binary: TLS with a private CA, onboarding with
//! registration tokens, key rotation, suspension, roles, and the audit log catching tampering.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

use aip_tests::{Server, execute_sql, ok, run};
use serde_json::Value;

fn failed(output: &Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    assert!(stderr.lines().any(|l| l.starts_with("error: ")), "{stderr}");
}

fn json(output: Output) -> Value {
    serde_json::from_str(&ok(output)).unwrap()
}

fn openssl(args: &[&str], dir: &Path) {
    let output = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A private CA and a server certificate for 127.0.0.1 it issued: (CA certificate, server
/// certificate, server key), all PEM.
fn tls_files(dir: &Path) -> (String, String, String) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        &[
            &[
                "req",
                "-x509",
                "-days",
                "1",
                "-subj",
                "/CN=test private CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
            ][..],
            &ec[..],
        ]
        .concat(),
        dir,
    );
    openssl(
        &[
            &["req", "-subj", "/CN=localhost", "-keyout", "tls.key", "-out", "tls.csr"][..],
            &ec[..],
        ]
        .concat(),
        dir,
    );
    std::fs::write(
        dir.join("tls.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-days",
            "1",
            "-in",
            "tls.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-extfile",
            "tls.ext",
            "-out",
            "tls.crt",
        ],
        dir,
    );
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    (path("ca.crt"), path("tls.crt"), path("tls.key"))
}

#[test]
fn serves_tls_and_clients_trust_a_private_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("aip");
    let (ca, cert, key) = tls_files(tmp.path());
    let server = Server::start(&[
        "--dir",
        dir.to_str().unwrap(),
        "--insecure-no-passphrase",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]);
    assert!(server.url.starts_with("https://127.0.0.1:"), "{}", server.url);
    let token = server.admin_token();

    let health = Command::new("curl")
        .args(["--silent", "--fail", "--cacert", &ca])
        .arg(format!("{}/health", server.url))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&health.stdout), r#"{"status":"ok"}"#);
    let plain = Command::new("curl")
        .args(["--silent", "--fail"])
        .arg(format!("{}/health", server.url.replace("https", "http")))
        .output()
        .unwrap();
    assert!(!plain.status.success(), "plain HTTP must not be served on the TLS port");

    let listed = json(run(&[
        "agents",
        "list",
        "--json",
        "--registry",
        &server.url,
        "--token",
        &token,
        "--ca-cert",
        &ca,
    ]));
    assert_eq!(listed, serde_json::json!([]));
    let untrusted = run(&["agents", "list", "--registry", &server.url, "--token", &token]);
    failed(&untrusted, 2, "cannot reach the registry");
    assert!(
        String::from_utf8_lossy(&untrusted.stderr).contains("UnknownIssuer"),
        "the root cause is reported"
    );
    assert!(server.terminate().success());
}

#[test]
fn refuses_a_public_listener_without_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("aip");
    let output = run(&[
        "serve",
        "--dir",
        dir.to_str().unwrap(),
        "--insecure-no-passphrase",
        "--listen",
        "0.0.0.0:0",
    ]);
    failed(&output, 2, "refusing to listen on 0.0.0.0:0 without TLS");
}

#[test]
fn onboarding_rotation_suspension_roles_and_tamper_evidence() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("aip");
    let server = Server::start(&["--dir", dir.to_str().unwrap(), "--insecure-no-passphrase"]);
    let admin = server.admin_token();
    let with = |token: &str, args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--registry", &server.url, "--token", token]);
        run(&all)
    };

    // Onboarding with a single-use registration token.
    let created = json(with(
        &admin,
        &[
            "registration-token",
            "create",
            "--uses",
            "1",
            "--expires",
            "1h",
            "--json",
        ],
    ));
    let registration = created["token"].as_str().unwrap().to_owned();
    assert!(registration.starts_with("aip_rt_"));
    let agent_dir = tmp.path().join("agent");
    let registered = json(with(
        &registration,
        &[
            "register-agent",
            "--name",
            "ops agent",
            "--out-dir",
            agent_dir.to_str().unwrap(),
            "--insecure-no-passphrase",
            "--json",
        ],
    ));
    let id = registered["agent_id"].as_str().unwrap().to_owned();
    let second = with(
        &registration,
        &[
            "register-agent",
            "--name",
            "second",
            "--out-dir",
            tmp.path().join("second").to_str().unwrap(),
            "--insecure-no-passphrase",
        ],
    );
    failed(&second, 1, "invalid_token");
    assert!(
        !tmp.path().join("second").exists(),
        "a failed registration leaves no key behind"
    );

    // Key rotation from the agent directory.
    let before = std::fs::read_to_string(agent_dir.join("agent.key")).unwrap();
    ok(with(
        &admin,
        &["agents", "rotate-key", "--agent-dir", agent_dir.to_str().unwrap()],
    ));
    assert_ne!(std::fs::read_to_string(agent_dir.join("agent.key")).unwrap(), before);
    assert_eq!(
        std::fs::read_to_string(agent_dir.join("agent.key.previous")).unwrap(),
        before
    );
    let shown = json(with(&admin, &["agents", "show", &id, "--json"]));
    assert_eq!(shown["previous_keys"].as_array().unwrap().len(), 1);
    assert_eq!(shown["certificates"].as_array().unwrap().len(), 2);

    // Suspension puts the certificate on hold; reactivation lifts it.
    let suspended = json(with(
        &admin,
        &["agents", "suspend", &id, "--reason", "review", "--json"],
    ));
    assert_eq!(suspended["status"], "suspended");
    let crl = json(with(&admin, &["crl", "--json"]));
    assert!(crl["pem"].as_str().unwrap().starts_with("-----BEGIN X509 CRL-----"));
    assert_eq!(
        json(with(&admin, &["agents", "reactivate", &id, "--json"]))["status"],
        "active"
    );
    failed(&with(&admin, &["agents", "reactivate", &id]), 1, "conflict");

    // A reader token reads but cannot change anything.
    let reader = json(with(&admin, &["access-token", "create", "--role", "reader", "--json"]))["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        json(with(&reader, &["agents", "list", "--json"]))
            .as_array()
            .unwrap()
            .len(),
        1
    );
    failed(&with(&reader, &["agents", "revoke", &id]), 1, "insufficient_scope");

    assert!(server.terminate().success());

    // The audit log is intact, then an edit made behind the registry's back is caught.
    let audit = json(run(&["audit", "verify", "--dir", dir.to_str().unwrap(), "--json"]));
    assert_eq!(audit["ok"], true);
    let database = format!("sqlite://{}", dir.join("aip.db").display());
    execute_sql(
        &database,
        "UPDATE audit_log SET actor = 'admin:someone-else' WHERE seq = 3",
    );
    let broken = run(&["audit", "verify", "--dir", dir.to_str().unwrap()]);
    failed(&broken, 1, "record 3 was modified");
}
