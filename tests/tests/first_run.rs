//! The files of a new authority: `aip-ca init` and the first `aip-ca serve` make the
//! configuration, the database (and SQLite's companion files) and the keys readable by their
//! owner only, and when stdout is not a terminal the first admin token goes to a 0600 file
//! instead of the output.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Stdio;

use aip_tests::{Server, aip_ca, command, http_get, isolated, ok};
use serde_json::Value;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Every file `init` makes that holds a secret or the database is 0600.
fn assert_private(dir: &Path, extra: &[&str]) {
    for file in [
        "aip.toml",
        "aip.db",
        "keys/root-ca.key",
        "keys/issuing-ca.key",
        "keys/registry.key",
    ]
    .iter()
    .chain(extra)
    {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
}

/// Serves the authority in `dir` and checks that `token` is an admin token there, and that
/// the database's write-ahead log and shared-memory files are private too.
fn assert_admin(dir: &Path, token: &str) {
    let server = Server::start(&["--dir", dir.to_str().unwrap(), "--insecure-no-passphrase"]);
    let (status, body) = http_get(&format!("{}/v1/whoami", server.url), Some(token));
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["role"], "admin");
    assert_private(dir, &["aip.db-wal", "aip.db-shm"]);
    server.terminate();
}

#[test]
fn init_through_a_pipe_writes_the_admin_token_to_a_private_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("aip");
    let output = command()
        .args(["init", "--dir", dir.to_str().unwrap(), "--insecure-no-passphrase"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let stdout = ok(output);
    assert!(
        !stdout.contains("aip_at_") && !stderr.contains("aip_at_"),
        "{stdout}{stderr}"
    );

    let token_file = dir.join("admin-token");
    assert!(stdout.contains(&token_file.display().to_string()), "{stdout}");
    assert_private(&dir, &["admin-token"]);
    let token = std::fs::read_to_string(&token_file).unwrap();
    let token = token.trim_end();
    assert!(token.starts_with("aip_at_"), "{token}");
    assert_admin(&dir, token);
}

#[test]
fn init_json_prints_the_admin_token_and_writes_no_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("aip");
    let output = command()
        .args([
            "init",
            "--dir",
            dir.to_str().unwrap(),
            "--insecure-no-passphrase",
            "--json",
        ])
        .output()
        .unwrap();
    let init: Value = serde_json::from_str(&ok(output)).unwrap();
    let token = init["admin_token"].as_str().unwrap();
    assert!(token.starts_with("aip_at_"), "{init}");
    assert!(!dir.join("admin-token").exists());
    assert_private(&dir, &[]);
    assert_admin(&dir, token);
}

#[test]
fn init_on_a_terminal_prints_the_admin_token() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("aip");
    // `script` runs the command on a pseudo-terminal of its own.
    let line = format!(
        "{} init --dir {} --insecure-no-passphrase",
        aip_ca().display(),
        dir.display()
    );
    let Ok(output) = isolated(Path::new("script"))
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::null())
        .output()
    else {
        eprintln!("SKIPPED: `script` (util-linux) is not installed; the terminal case did not run");
        return;
    };
    let stdout = ok(output);
    let at = stdout
        .find("aip_at_")
        .unwrap_or_else(|| panic!("no admin token printed: {stdout}"));
    let token = stdout[at..].split_whitespace().next().unwrap();
    assert!(!dir.join("admin-token").exists());
    assert_private(&dir, &[]);
    assert_admin(&dir, token);
}

#[test]
fn the_first_serve_makes_private_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("aip");
    let server = Server::start(&["--dir", dir.to_str().unwrap(), "--insecure-no-passphrase"]);
    // The helper reads the token from the file the output names, and checks it was not printed.
    let token = server.admin_token();
    let (status, body) = http_get(&format!("{}/v1/whoami", server.url), Some(&token));
    assert_eq!(status, 200, "{body}");
    assert_private(&dir, &["admin-token", "aip.db-wal", "aip.db-shm"]);
    server.terminate();
}
