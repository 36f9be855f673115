//! `aip-ca keygen` and `aip-ca verify`, run as real child processes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use aip_aat::clock::Clock as _;
use aip_aat::clock::SystemClock;
use aip_aat::ids::{AgentId, Jti};
use aip_aat::keyfile::{self, KeyFileError, Passphrase};
use aip_aat::keys::{Algorithm, Jwks, KeyPair};
use aip_aat::token::{AAT_VERSION, AatClaims, AgentClaims, Audience, ContextClaims, encode_aat};
use serde_json::Value;

fn aip_ca() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aip-ca"));
    cmd.env_remove("AIP_PASSPHRASE").stdin(Stdio::null());
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn keygen_insecure_prints_the_public_jwk_and_writes_a_private_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("k.json");
    let o = run(aip_ca()
        .args([
            "keygen",
            "--alg",
            "ed25519",
            "--insecure-no-passphrase",
            "--json",
            "--out",
        ])
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    let printed: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let key = keyfile::read(&out, None).unwrap();
    assert_eq!(printed["kid"], key.key_id().as_str());
    assert_eq!(printed["jwk"]["kty"], "OKP");
    assert_eq!(printed["jwk"]["kid"], key.key_id().as_str());
    assert!(printed["jwk"].get("d").is_none());
    assert_eq!(printed["encrypted"], false);
    assert!(stderr(&o).contains("warning:"));
    #[cfg(unix)]
    assert_eq!(mode(&out), 0o600);
}

#[test]
fn keygen_encrypts_with_a_passphrase_file() {
    let dir = tempfile::tempdir().unwrap();
    let (out, pass) = (dir.path().join("k.json"), dir.path().join("pass"));
    std::fs::write(&pass, "s3cret phrase\n").unwrap();
    let o = run(aip_ca()
        .args(["keygen", "--alg", "p256", "--passphrase-file"])
        .arg(&pass)
        .arg("--out")
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("kid: "), "{}", stdout(&o));
    let key = keyfile::read(&out, Some(&Passphrase::new("s3cret phrase"))).unwrap();
    assert_eq!(key.algorithm(), Algorithm::ES256);
    assert!(stdout(&o).contains(key.key_id().as_str()));
    assert!(matches!(
        keyfile::read(&out, Some(&Passphrase::new("wrong"))),
        Err(KeyFileError::WrongPassphrase)
    ));
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(!text.contains("s3cret"));
}

#[test]
fn keygen_takes_the_passphrase_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("k.json");
    let o = run(aip_ca()
        .env("AIP_PASSPHRASE", "from-env")
        .args(["keygen", "--out"])
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    keyfile::read(&out, Some(&Passphrase::new("from-env"))).unwrap();
}

#[test]
fn keygen_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("k.json");
    std::fs::write(&out, "precious").unwrap();
    let o = run(aip_ca().args(["keygen", "--insecure-no-passphrase", "--out"]).arg(&out));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).starts_with("error: "), "{}", stderr(&o));
    assert!(stderr(&o).contains("already exists"));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "precious");
}

#[test]
fn keygen_without_a_passphrase_source_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("k.json");
    let o = run(aip_ca().args(["keygen", "--out"]).arg(&out));
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 2, "{err}");
    assert!(err.starts_with("error: no passphrase given"), "{err}");
    assert!(err.lines().nth(1).unwrap().starts_with("hint: "), "{err}");
    assert!(!out.exists());

    let o = run(aip_ca().env("AIP_PASSPHRASE", "").args(["keygen", "--out"]).arg(&out));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("empty"));
    assert!(!out.exists());
}

#[test]
fn keygen_rejects_conflicting_flags() {
    let o = run(aip_ca().args([
        "keygen",
        "--out",
        "x",
        "--insecure-no-passphrase",
        "--passphrase-file",
        "p",
    ]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot be used with"));
}

struct Issuer {
    key: KeyPair,
    jwks: PathBuf,
    _dir: tempfile::TempDir,
}

fn issuer() -> Issuer {
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate(Algorithm::EdDSA).unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(
        &jwks,
        serde_json::to_string(&Jwks::from_keys([key.public_key()])).unwrap(),
    )
    .unwrap();
    Issuer { key, jwks, _dir: dir }
}

fn token(issuer: &Issuer, iat: i64, exp: i64) -> String {
    let agent = KeyPair::generate(Algorithm::EdDSA).unwrap();
    let id = AgentId::random().unwrap();
    let claims = AatClaims {
        aat_version: AAT_VERSION.into(),
        iss: "https://issuer.test".into(),
        sub: id.clone(),
        aud: Audience::one("proxy-a"),
        iat,
        exp,
        nbf: None,
        jti: Jti::random().unwrap(),
        agent: AgentClaims {
            id,
            name: None,
            public_key_thumbprint: agent.key_id().clone(),
            aid_hash: None,
        },
        user_binding: None,
        capabilities: Default::default(),
        context: ContextClaims {
            session_id: "s".into(),
            policy_hash: None,
            registry_id: None,
        },
        cnf: None,
    };
    encode_aat(&claims, &issuer.key).unwrap()
}

#[test]
fn verify_prints_the_verified_claims() {
    let issuer = issuer();
    let now = SystemClock.now();
    let aat = token(&issuer, now - 10, now + 600);
    let o = run(aip_ca()
        .args([
            "verify",
            "--audience",
            "proxy-a",
            "--issuer",
            "https://issuer.test",
            "--aat",
            &aat,
            "--jwks",
        ])
        .arg(&issuer.jwks));
    assert!(o.status.success(), "{}", stderr(&o));
    let claims: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(claims["iss"], "https://issuer.test");
    assert_eq!(claims["aat_version"], "aip/v1alpha3");

    // The same through standard input.
    let mut child = aip_ca()
        .args(["verify", "--audience", "proxy-a", "--aat", "-", "--jwks"])
        .arg(&issuer.jwks)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{aat}\n").as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn verify_reports_one_line_with_the_aat_error() {
    let issuer = issuer();
    let now = SystemClock.now();
    let cases = [
        (token(&issuer, now - 1_000, now - 100), vec![], "proxy-a", "aat_expired"),
        (token(&issuer, now, now + 600), vec![], "proxy-b", "audience_mismatch"),
        (
            token(&issuer, now, now + 600),
            vec!["--issuer", "https://other.test"],
            "proxy-a",
            "untrusted_issuer",
        ),
        ("not.a.token".to_owned(), vec![], "proxy-a", "malformed_aat"),
    ];
    for (aat, extra, audience, expected) in cases {
        let o = run(aip_ca()
            .args(["verify", "--audience", audience, "--aat", &aat])
            .args(&extra)
            .arg("--jwks")
            .arg(&issuer.jwks));
        assert_eq!(o.status.code(), Some(1), "{expected}");
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(expected), "{err}");
        assert!(!err.contains(&aat), "the token must not be echoed");
        assert!(stdout(&o).is_empty());
    }
    let aat = token(&issuer, now - 1_000, now - 100);
    let o = run(aip_ca()
        .args(["verify", "--json", "--audience", "proxy-a", "--aat", &aat, "--jwks"])
        .arg(&issuer.jwks));
    assert_eq!(o.status.code(), Some(1));
    let report: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(report["aat_error"], "aat_expired");
    assert_eq!(report["valid"], false);
}

#[test]
fn verify_explains_a_bad_jwks_file() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, "{\"keys\": 5}").unwrap();
    let o = run(aip_ca()
        .args(["verify", "--audience", "a", "--aat", "x.y.z", "--jwks"])
        .arg(&jwks));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("is not a JWK Set"), "{}", stderr(&o));
    let o = run(aip_ca()
        .args(["verify", "--audience", "a", "--aat", "x.y.z", "--jwks"])
        .arg(dir.path().join("missing")));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot read"));
}

#[test]
fn every_committed_aat_vector_through_the_binary() {
    let vectors: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../aat/tests/vectors/aat.json")).unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (i, v) in vectors.iter().enumerate() {
        let jwks = dir.path().join(format!("jwks-{i}.json"));
        std::fs::write(&jwks, v["jwks"].to_string()).unwrap();
        let mut cmd = aip_ca();
        cmd.args([
            "verify",
            "--aat",
            v["token"].as_str().unwrap(),
            "--audience",
            v["audience"].as_str().unwrap(),
        ])
        .args(["--at", &v["now"].to_string(), "--jwks"])
        .arg(&jwks);
        for iss in v.get("trusted_issuers").and_then(Value::as_array).into_iter().flatten() {
            cmd.args(["--issuer", iss.as_str().unwrap()]);
        }
        let o = run(&mut cmd);
        match v["expect"].as_str().unwrap() {
            "valid" => assert!(o.status.success(), "{}: {}", v["name"], stderr(&o)),
            error => {
                assert_eq!(o.status.code(), Some(1), "{}", v["name"]);
                assert!(
                    stderr(&o).contains(&format!(": {error}: ")),
                    "{}: {}",
                    v["name"],
                    stderr(&o)
                );
            }
        }
    }
}
