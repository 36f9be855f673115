//! Renewing the issuing CA with the real binaries: `aip-ca ca renew-issuing` on a stopped
//! authority makes a new issuing CA under the same root; certificates the old one signed keep
//! verifying with `openssl`, and its CRL keeps being published (revocations made after the
//! renewal included), while new certificates chain to the new CA. Refusals change nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aip_tests::{Server, free_port, http_get, ok, run};

const PASSPHRASE: &str = "renewal test passphrase";

/// `openssl args…` in `dir`: (success, stdout + stderr).
fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The files a renewal may touch, with their contents (absent ones as `None`).
fn snapshot(dir: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    let mut files = vec![
        dir.join("ca/issuing.pem"),
        dir.join("keys/issuing-ca.key"),
        dir.join("ca/issuing.pem.renewing"),
        dir.join("keys/issuing-ca.key.renewing"),
    ];
    for sub in ["ca/retired", "keys/retired"] {
        if let Ok(entries) = std::fs::read_dir(dir.join(sub)) {
            files.extend(entries.map(|e| e.unwrap().path()));
        }
    }
    files.sort();
    files.into_iter().map(|p| (p.clone(), std::fs::read(&p).ok())).collect()
}

fn renew(dir: &Path, passphrase_file: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "ca",
        "renew-issuing",
        "--dir",
        dir.to_str().unwrap(),
        "--passphrase-file",
        passphrase_file.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(&args)
}

/// `aip-ca args… --registry URL --token T`, which must succeed; its JSON output.
fn remote(url: &str, token: &str, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["--registry", url, "--token", token]);
    serde_json::from_str(&ok(run(&all))).unwrap()
}

fn register(url: &str, token: &str, work: &Path, name: &str) -> (String, PathBuf) {
    let out = work.join(name);
    let registered = remote(
        url,
        token,
        &[
            "register-agent",
            "--name",
            name,
            "--out-dir",
            out.to_str().unwrap(),
            "--insecure-no-passphrase",
            "--json",
        ],
    );
    (
        registered["agent_id"].as_str().unwrap().to_owned(),
        out.join("agent.crt"),
    )
}

fn serial(work: &Path, cert: &Path) -> String {
    let (done, text) = openssl(work, &["x509", "-in", cert.to_str().unwrap(), "-noout", "-serial"]);
    assert!(done, "{text}");
    text.trim().trim_start_matches("serial=").to_uppercase()
}

#[test]
fn renewed_issuing_ca_overlaps_the_old_one() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let dir = work.join("aip");
    let passphrase = work.join("passphrase");
    std::fs::write(&passphrase, format!("{PASSPHRASE}\n")).unwrap();
    let wrong = work.join("wrong-passphrase");
    std::fs::write(&wrong, "not the passphrase\n").unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let init: serde_json::Value = serde_json::from_str(&ok(run(&[
        "init",
        "--dir",
        dir.to_str().unwrap(),
        "--listen",
        &listen,
        "--passphrase-file",
        passphrase.to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    let admin = init["admin_token"].as_str().unwrap().to_owned();
    let serve_args = [
        "--dir",
        dir.to_str().unwrap(),
        "--passphrase-file",
        passphrase.to_str().unwrap(),
    ];

    // Agent A, certified by the first issuing CA.
    let server = Server::start_at(&listen, &serve_args);
    let url = server.url.clone();
    let (agent_a, cert_a) = register(&url, &admin, work, "agent-a");
    let old_issuing = work.join("old-issuing.pem");
    std::fs::copy(dir.join("ca/issuing.pem"), &old_issuing).unwrap();

    // Refused while the server holds the directory; nothing changed.
    let before = snapshot(&dir);
    let running = renew(&dir, &passphrase, &[]);
    assert!(!running.status.success());
    assert!(stderr(&running).contains("is running"), "{}", stderr(&running));
    assert_eq!(snapshot(&dir), before);
    assert_eq!(server.terminate().code(), Some(0));

    // Refusals with the server stopped: a wrong passphrase, a CA that would outlive the root
    // (20 years), a validity shorter than a day; each changes nothing.
    let refused = renew(&dir, &wrong, &[]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(stderr(&refused).contains("wrong passphrase"), "{}", stderr(&refused));
    assert_eq!(snapshot(&dir), before);
    let refused = renew(&dir, &passphrase, &["--validity", "7400d"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("would outlive the root CA"),
        "{}",
        stderr(&refused)
    );
    assert!(stderr(&refused).contains("hint:"), "{}", stderr(&refused));
    assert_eq!(snapshot(&dir), before);
    let refused = renew(&dir, &passphrase, &["--validity", "1h"]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("at least a day"), "{}", stderr(&refused));
    assert_eq!(snapshot(&dir), before);
    let audit_before = ok(run(&["audit", "verify", "--dir", dir.to_str().unwrap(), "--json"]));

    // The renewal.
    let renewed: serde_json::Value =
        serde_json::from_str(&ok(renew(&dir, &passphrase, &["--validity", "400d", "--json"]))).unwrap();
    let new_kid = renewed["key_id"].as_str().unwrap().to_owned();
    let old_kid = renewed["retired"]["key_id"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, old_kid);
    // Certificates record their issuing CA as they are made: none was left to label.
    assert_eq!(renewed["retired"]["labelled_certificates"], 0, "{renewed}");
    assert_eq!(renewed["retired"]["crl_uri"], format!("{url}/v1/crl/{old_kid}"));
    let new_issuing = dir.join("ca/issuing.pem");
    assert_ne!(
        std::fs::read(&new_issuing).unwrap(),
        std::fs::read(&old_issuing).unwrap()
    );
    // The old CA is kept: its certificate, and its key file exactly as it was (encrypted).
    let retired_pem = dir.join(format!("ca/retired/{old_kid}.pem"));
    assert_eq!(
        std::fs::read(&retired_pem).unwrap(),
        std::fs::read(&old_issuing).unwrap()
    );
    let old_key_file = before
        .iter()
        .find(|(p, _)| p.ends_with("keys/issuing-ca.key"))
        .and_then(|(_, c)| c.clone())
        .unwrap();
    assert_eq!(
        std::fs::read(dir.join(format!("keys/retired/{old_kid}.key"))).unwrap(),
        old_key_file
    );
    let new_key_file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("keys/issuing-ca.key")).unwrap()).unwrap();
    assert_eq!(new_key_file["kid"], new_kid.as_str());
    assert_eq!(
        new_key_file["protection"]["type"], "argon2id-xchacha20poly1305",
        "{new_key_file}"
    );
    // The renewal is audited; the chain still verifies.
    let audit_after = ok(run(&[
        "audit",
        "verify",
        "--dir",
        dir.to_str().unwrap(),
        "--json",
        "--allow-unsigned-tail",
    ]));
    assert_ne!(audit_before, audit_after);

    // The new CA: under the same root, from now, for 400 days, with a name of its own.
    let root = dir.join("ca/root.pem");
    let (done, text) = openssl(
        work,
        &[
            "verify",
            "-CAfile",
            root.to_str().unwrap(),
            new_issuing.to_str().unwrap(),
        ],
    );
    assert!(done, "{text}");
    let (_, subject) = openssl(
        work,
        &["x509", "-in", new_issuing.to_str().unwrap(), "-noout", "-subject"],
    );
    assert!(subject.contains(&format!("Issuing CA {}", &new_kid[..8])), "{subject}");

    // Restarted, the authority issues with the new CA; A is revoked after the renewal.
    let server = Server::start_at(&listen, &serve_args);
    let (_agent_b, cert_b) = register(&url, &admin, work, "agent-b");
    let chain_b = std::fs::read_to_string(&cert_b).unwrap();
    assert!(
        chain_b.ends_with(&std::fs::read_to_string(&new_issuing).unwrap()),
        "{chain_b}"
    );
    remote(&url, &admin, &["agents", "revoke", &agent_a, "--json"]);

    let new_crl = work.join("new.crl.pem");
    let old_crl = work.join("old.crl.pem");
    ok(run(&["crl", "--out", new_crl.to_str().unwrap(), "--registry", &url]));
    ok(run(&[
        "crl",
        "--issuer",
        &old_kid,
        "--out",
        old_crl.to_str().unwrap(),
        "--registry",
        &url,
    ]));
    // The current CA's CRL answers at its key id too; an unknown key id is 404.
    let (status, by_kid) = http_get(&format!("{url}/v1/crl/{new_kid}.pem"), None);
    assert_eq!(status, 200);
    assert_eq!(by_kid.trim(), std::fs::read_to_string(&new_crl).unwrap().trim());
    let (status, body) = http_get(&format!("{url}/v1/crl/{}", "A".repeat(43)), None);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("not_found"), "{body}");
    let refused = run(&["crl", "--issuer", "not-a-key-id", "--registry", &url]);
    assert_eq!(refused.status.code(), Some(2));

    let (root, old_issuing_s, new_issuing_s) = (
        root.to_str().unwrap(),
        old_issuing.to_str().unwrap(),
        new_issuing.to_str().unwrap(),
    );
    let (a, b) = (cert_a.to_str().unwrap(), cert_b.to_str().unwrap());
    let (old_crl_s, new_crl_s) = (old_crl.to_str().unwrap(), new_crl.to_str().unwrap());

    // Both chains verify, each through its own issuing CA.
    let (done, text) = openssl(work, &["verify", "-CAfile", root, "-untrusted", old_issuing_s, a]);
    assert!(done && text.contains(": OK"), "{text}");
    let (done, text) = openssl(work, &["verify", "-CAfile", root, "-untrusted", new_issuing_s, b]);
    assert!(done && text.contains(": OK"), "{text}");
    let (done, text) = openssl(work, &["verify", "-CAfile", root, "-untrusted", old_issuing_s, b]);
    assert!(!done, "B must not chain to the old issuing CA: {text}");

    // A, revoked after the renewal, is on the old CA's CRL; B passes with the new CA's.
    let (done, text) = openssl(
        work,
        &[
            "verify",
            "-crl_check",
            "-CAfile",
            root,
            "-untrusted",
            old_issuing_s,
            "-CRLfile",
            old_crl_s,
            a,
        ],
    );
    assert!(!done && text.contains("certificate revoked"), "{text}");
    let (done, text) = openssl(
        work,
        &[
            "verify",
            "-crl_check",
            "-CAfile",
            root,
            "-untrusted",
            new_issuing_s,
            "-CRLfile",
            new_crl_s,
            b,
        ],
    );
    assert!(done && text.contains(": OK"), "{text}");

    // B's issuer is the new CA; each CRL lists only its own CA's certificates.
    let (_, issuer_b) = openssl(work, &["x509", "-in", b, "-noout", "-issuer"]);
    assert!(
        issuer_b.contains(&format!("Issuing CA {}", &new_kid[..8])),
        "{issuer_b}"
    );
    let (_, old_list) = openssl(work, &["crl", "-in", old_crl_s, "-noout", "-text"]);
    let (_, new_list) = openssl(work, &["crl", "-in", new_crl_s, "-noout", "-text"]);
    assert!(old_list.contains(&serial(work, &cert_a)), "{old_list}");
    assert!(!new_list.contains(&serial(work, &cert_a)), "{new_list}");

    // Each CRL is signed by its CA, and only by it.
    let (done, text) = openssl(work, &["crl", "-in", old_crl_s, "-CAfile", old_issuing_s, "-noout"]);
    assert!(done && text.contains("verify OK"), "{text}");
    let (done, text) = openssl(work, &["crl", "-in", new_crl_s, "-CAfile", new_issuing_s, "-noout"]);
    assert!(done && text.contains("verify OK"), "{text}");
    let (done, text) = openssl(work, &["crl", "-in", old_crl_s, "-CAfile", new_issuing_s, "-noout"]);
    assert!(!done || !text.contains("verify OK"), "{text}");
    drop(server);
}
