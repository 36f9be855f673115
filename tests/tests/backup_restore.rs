//! `aip-ca backup` and `aip-ca restore` against a real `aip-ca serve`: a backup taken while
//! agents are registered and revoked and tokens minted; the restored authority serving every
//! agent registered before the backup began, its audit chain verifying, and its first
//! revocation list and CRL newer than anything the original published (also after the
//! backup), as the proxy's own registry link sees it. Damaged archives and overwrites are
//! refused and leave nothing behind. On PostgreSQL (`AIP_TEST_POSTGRES_URL`), the archive
//! holds the keys and configuration only and the restore moves the database's counters.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aip_aat::ids::AgentId;
use aip_proxy_verifier::policy::{Policy, RegistrySettings, SignaturePolicy};
use aip_proxy_verifier::registry::{RegistryEvent, RegistryLink};
use aip_tests::{PostgresDb, command, free_port, http_get, init_authority, ok, query_text, run, within};
use serde_json::Value;

fn json(output: Output) -> Value {
    serde_json::from_str(&ok(output)).unwrap()
}

/// `aip-ca serve --dir dir` (with `extra`), once it answers `/health` at `url`.
fn serve(dir: &Path, url: &str, log: &Path, extra: &[&str]) -> Child {
    let mut child = command()
        .args(["serve", "--dir", dir.to_str().unwrap()])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(File::create(log).unwrap())
        .spawn()
        .unwrap();
    let up = within(Duration::from_secs(60), || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "aip-ca serve exited with {status}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        http_get(&format!("{url}/health"), None).0 == 200
    });
    assert!(up, "aip-ca serve did not answer on {url}");
    child
}

/// SIGTERM, and wait for the exit (the server signs its audit head as it stops).
fn stop(mut child: Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let stopped = within(Duration::from_secs(15), || child.try_wait().unwrap().is_some());
    if !stopped {
        let _ = child.kill();
        let _ = child.wait();
        panic!("aip-ca serve did not stop within 15 s of SIGTERM");
    }
}

/// `aip-ca args… --registry url --token admin`, its JSON output.
fn remote(url: &str, admin: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--registry", url, "--token", admin]);
    json(run(&all))
}

/// Registers an autonomous agent `name` into `out`; its id.
fn register(url: &str, admin: &str, name: &str, out: &Path) -> String {
    let registered = remote(
        url,
        admin,
        &[
            "register-agent",
            "--name",
            name,
            "--capabilities",
            "read_file",
            "--autonomous",
            "--out-dir",
            out.to_str().unwrap(),
            "--insecure-no-passphrase",
            "--json",
        ],
    );
    registered["agent_id"].as_str().unwrap().to_owned()
}

/// The version of the revocation list the authority at `url` publishes now.
fn list_version(url: &str, reader: &str) -> u64 {
    let (status, body) = http_get(&format!("{url}/v1/revocations"), Some(reader));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["version"]
        .as_u64()
        .unwrap()
}

/// The number of the CRL the authority at `url` publishes now, as openssl reads it.
fn crl_number(url: &str, scratch: &Path) -> u64 {
    let file = scratch.join(format!("crl-{}.der", free_port()));
    let fetched = Command::new("curl")
        .args(["-sSf", "--max-time", "10", "-o", file.to_str().unwrap()])
        .arg(format!("{url}/v1/crl"))
        .status()
        .unwrap();
    assert!(fetched.success(), "GET /v1/crl failed");
    let out = Command::new("openssl")
        .args([
            "crl",
            "-inform",
            "DER",
            "-noout",
            "-crlnumber",
            "-in",
            file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = ok(out);
    let hex = text
        .trim()
        .strip_prefix("crlNumber=")
        .unwrap_or_else(|| panic!("{text}"));
    u64::from_str_radix(hex.trim_start_matches("0x"), 16).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// The signed revocation list (`/v1/revocations.jws`), what a `crl`-mode proxy reads.
fn signed_list(url: &str, reader: &str) -> String {
    let (status, body) = http_get(&format!("{url}/v1/revocations.jws"), Some(reader));
    assert_eq!(status, 200, "{body}");
    body
}

/// Replaces `path` the way an updater should: a new file renamed into place.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

fn crl_mode_settings(jwks: &Path, list: &Path) -> RegistrySettings {
    let text = format!(
        "apiVersion: aip.io/v1alpha3\nkind: AgentPolicy\nmetadata:\n  name: restore-test\nspec:\n  registry:\n    \
         enabled: true\n    endpoint: \"http://127.0.0.1:9\"\n    jwks_file: \"{}\"\n    revocation:\n      \
         mode: crl\n      crl_path: \"{}\"\n      check_interval: 1s\n      max_staleness: 60s\n",
        jwks.display(),
        list.display()
    );
    let policy = Policy::parse(&text, None, SignaturePolicy::NoKey).unwrap();
    policy.registry().cloned().unwrap()
}

/// Files in `dir` whose names start with `prefix`.
fn leftovers(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(prefix))
        .collect()
}

/// The error text of a command that must have failed.
/// `aip-ca backup --dir DIR --out ARCHIVE --json`, which must succeed: its report.
fn back_up(dir: &Path, archive: &Path) -> Value {
    json(run(&[
        "backup",
        "--dir",
        dir.to_str().unwrap(),
        "--out",
        archive.to_str().unwrap(),
        "--json",
    ]))
}

fn refused(output: Output) -> String {
    assert!(
        !output.status.success(),
        "succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr).unwrap()
}

#[test]
fn sqlite_backup_under_load_restores_the_same_agents_with_newer_lists() {
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path();
    let dir = scratch.join("aip");
    let listen = format!("127.0.0.1:{}", free_port());
    let url = format!("http://{listen}");
    let admin = init_authority(&dir, &["--listen", &listen]);
    let original = serve(&dir, &url, &scratch.join("serve-1.log"), &[]);
    let reader = remote(&url, &admin, &["access-token", "create", "--role", "reader", "--json"])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut before: Vec<String> = (0..3)
        .map(|i| {
            register(
                &url,
                &admin,
                &format!("before-{i}"),
                &scratch.join(format!("before-{i}")),
            )
        })
        .collect();
    let token_dir = scratch.join("before-0");

    // Load: agents registered and revoked, AATs and access tokens minted, CRLs published.
    let stop_load = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let registered = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let load = {
        let (stop_load, rounds, registered) = (stop_load.clone(), rounds.clone(), registered.clone());
        let (url, admin, scratch, token_dir) = (url.clone(), admin.clone(), scratch.to_owned(), token_dir.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop_load.load(Ordering::SeqCst) {
                n += 1;
                let name = format!("load-{n}");
                let id = register(&url, &admin, &name, &scratch.join(&name));
                if n % 2 == 0 {
                    remote(&url, &admin, &["agents", "revoke", &id, "--reason", "load", "--json"]);
                }
                registered.lock().unwrap().push(id);
                json(run(&[
                    "token",
                    "--json",
                    "--issuer",
                    &url,
                    "--audience",
                    "files-proxy",
                    "--agent-dir",
                    token_dir.to_str().unwrap(),
                ]));
                remote(&url, &admin, &["access-token", "create", "--role", "reader", "--json"]);
                crl_number(&url, &scratch);
                rounds.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let wait_rounds = |at_least: u64| {
        assert!(
            within(Duration::from_secs(120), || rounds.load(Ordering::SeqCst) >= at_least),
            "the load stalled"
        );
    };
    wait_rounds(2);

    // Everything registered so far was registered before the backup began.
    before.extend(registered.lock().unwrap().iter().cloned());
    let archive = scratch.join("backup.tar");
    let backup = back_up(&dir, &archive);
    assert_eq!(backup["backend"], "sqlite", "{backup}");
    assert_eq!(backup["database_included"], true, "{backup}");
    let done = rounds.load(Ordering::SeqCst);
    wait_rounds(done + 2);
    stop_load.store(true, Ordering::SeqCst);
    load.join().unwrap();

    // The archive: mode 0600, a tar that tar reads, the manifest first.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&archive).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
    }
    let listing = ok(Command::new("tar").arg("-tf").arg(&archive).output().unwrap());
    let names: Vec<&str> = listing.lines().collect();
    assert_eq!(names[0], "aip-backup.json", "{listing}");
    for name in [
        "aip.toml",
        "aip.db",
        "keys/registry.key",
        "keys/issuing-ca.key",
        "ca/root.pem",
    ] {
        assert!(names.contains(&name), "{name} missing from {listing}");
    }
    assert!(
        !names.iter().any(|n| n.ends_with("-wal") || n.ends_with("-shm")),
        "{listing}"
    );

    // A second backup to the same file is refused and leaves it as it was.
    let original_bytes = std::fs::read(&archive).unwrap();
    let error = refused(run(&[
        "backup",
        "--dir",
        dir.to_str().unwrap(),
        "--out",
        archive.to_str().unwrap(),
    ]));
    assert!(error.contains("exists"), "{error}");
    assert_eq!(std::fs::read(&archive).unwrap(), original_bytes);
    assert!(leftovers(scratch, ".backup.tar.").is_empty());

    // What the original published last (after the backup), and what a proxy holds.
    let last_version = list_version(&url, &reader);
    let last_crl = crl_number(&url, scratch);
    let last_list = signed_list(&url, &reader);
    let jwks = scratch.join("jwks.json");
    let (status, body) = http_get(&format!("{url}/v1/jwks"), None);
    assert_eq!(status, 200, "{body}");
    std::fs::write(&jwks, body).unwrap();
    let list_file = scratch.join("revocations.jws");
    replace(&list_file, &last_list);
    let events = Arc::new(std::sync::Mutex::new(Vec::<RegistryEvent>::new()));
    let sink = events.clone();
    let link = RegistryLink::start(
        &crl_mode_settings(&jwks, &list_file),
        Box::new(move |e| sink.lock().unwrap().push(e)),
    )
    .unwrap();
    assert_eq!(link.status().version, last_version);
    stop(original);

    // A damaged archive (one byte changed, or cut short) restores nothing.
    for (label, bytes) in [
        ("flipped", {
            let mut b = original_bytes.clone();
            let middle = b.len() / 2;
            b[middle] ^= 0x40;
            b
        }),
        ("truncated", original_bytes[..original_bytes.len() * 2 / 3].to_vec()),
    ] {
        let bad = scratch.join(format!("{label}.tar"));
        std::fs::write(&bad, bytes).unwrap();
        let target = scratch.join(format!("restored-{label}"));
        let error = refused(run(&[
            "restore",
            "--from",
            bad.to_str().unwrap(),
            "--data-dir",
            target.to_str().unwrap(),
        ]));
        assert!(error.contains("not a usable backup"), "{label}: {error}");
        assert!(!target.exists(), "{label}: {} was left behind", target.display());
        assert!(leftovers(scratch, &format!(".restored-{label}")).is_empty(), "{label}");
    }

    // The restore, into a new directory; a second one into it is refused.
    let restored = scratch.join("restored");
    let report = json(run(&[
        "restore",
        "--from",
        archive.to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
        "--json",
    ]));
    let error = refused(run(&[
        "restore",
        "--from",
        archive.to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
    ]));
    assert!(error.contains("not empty"), "{error}");

    // The restored authority, on the same address: every agent registered before the backup.
    let second = serve(&restored, &url, &scratch.join("serve-2.log"), &[]);
    for id in &before {
        let (status, body) = http_get(&format!("{url}/v1/agents/{id}"), Some(&admin));
        assert_eq!(status, 200, "{id}: {body}");
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["agent_id"], id.as_str());
    }
    // Its first list and CRL are newer than the last ones the original published.
    let first_version = list_version(&url, &reader);
    assert_eq!(
        first_version,
        report["revocation_version"].as_u64().unwrap(),
        "{report}"
    );
    assert!(first_version > last_version, "{first_version} <= {last_version}");
    // Without the move, the restored authority would have published an older list than the
    // original's last: the load went on after the backup.
    let moved_by = report["moved_by"].as_u64().unwrap();
    assert!(first_version - moved_by < last_version, "{report} / {last_version}");
    let first_crl = crl_number(&url, scratch);
    assert!(first_crl > last_crl, "{first_crl} <= {last_crl}");
    // A proxy holding the original's newest list takes the restored authority's next one.
    replace(&list_file, &signed_list(&url, &reader));
    assert!(
        within(Duration::from_secs(10), || link.status().version == first_version),
        "the proxy kept version {}: {:?}",
        link.status().version,
        events.lock().unwrap()
    );
    assert!(
        !events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, RegistryEvent::CheckFailed { .. }))
    );
    // The restored registry still works: a revocation reaches the proxy.
    let revoked = before[1].clone();
    remote(
        &url,
        &admin,
        &["agents", "revoke", &revoked, "--reason", "after restore", "--json"],
    );
    replace(&list_file, &signed_list(&url, &reader));
    let revoked: AgentId = revoked.parse().unwrap();
    assert!(within(Duration::from_secs(10), || {
        aip_aat::validate::RevocationView::is_agent_revoked(&*link, &revoked)
    }));
    drop(link);
    stop(second);

    let verified = json(run(&["audit", "verify", "--dir", restored.to_str().unwrap(), "--json"]));
    assert_eq!(verified["ok"], true, "{verified}");
}

#[test]
fn postgres_backup_holds_keys_and_configuration_and_restore_moves_the_counters() {
    let Some(db) = PostgresDb::create() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path();
    let dir = scratch.join("aip");
    let listen = format!("127.0.0.1:{}", free_port());
    let url = format!("http://{listen}");
    let admin = init_authority(&dir, &["--listen", &listen, "--database-url", &db.url]);
    let original = serve(&dir, &url, &scratch.join("serve-1.log"), &[]);
    let agent = register(&url, &admin, "pg-bot", &scratch.join("pg-bot"));
    remote(
        &url,
        &admin,
        &["agents", "revoke", &agent, "--reason", "test", "--json"],
    );
    crl_number(&url, scratch);

    let archive = scratch.join("backup.tar");
    let backup = back_up(&dir, &archive);
    assert_eq!(backup["backend"], "postgres", "{backup}");
    assert_eq!(backup["database_included"], false, "{backup}");
    let listing = ok(Command::new("tar").arg("-tf").arg(&archive).output().unwrap());
    assert!(
        listing.contains("keys/registry.key") && listing.contains("aip.toml"),
        "{listing}"
    );
    assert!(!listing.contains("aip.db"), "{listing}");
    let text = ok(run(&[
        "backup",
        "--dir",
        dir.to_str().unwrap(),
        "--out",
        scratch.join("second.tar").to_str().unwrap(),
    ]));
    assert!(text.contains("pg_dump"), "{text}");
    stop(original);

    // The database stays where it is (as if restored with pg_restore); the restore moves its
    // counters past anything the lost authority published.
    let counters = |url: &str| -> (u64, u64) {
        let rows = query_text(
            url,
            "SELECT CAST(revocation_version AS TEXT), CAST(crl_number AS TEXT) FROM registry_state",
        );
        (rows[0][0].parse().unwrap(), rows[0][1].parse().unwrap())
    };
    let (version, crl) = counters(&db.url);
    let restored = scratch.join("restored");
    // A database pg_restore has not filled is refused, and nothing is left behind.
    let empty = PostgresDb::create().unwrap();
    let error = refused(run(&[
        "restore",
        "--from",
        archive.to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
        "--database-url",
        &empty.url,
    ]));
    assert!(error.contains("holds no authority"), "{error}");
    assert!(!restored.exists());
    drop(empty);
    let report = json(run(&[
        "restore",
        "--from",
        archive.to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
        "--database-url",
        &db.url,
        "--json",
    ]));
    let (moved_version, moved_crl) = counters(&db.url);
    assert_eq!(report["revocation_version"].as_u64(), Some(moved_version), "{report}");
    assert!(
        moved_version > version && moved_crl > crl,
        "{version}/{crl} -> {moved_version}/{moved_crl}"
    );
    assert!(!restored.join("aip.db").exists());

    let second = serve(&restored, &url, &scratch.join("serve-2.log"), &[]);
    let (status, body) = http_get(&format!("{url}/v1/agents/{agent}"), Some(&admin));
    assert_eq!(status, 200, "{body}");
    assert!(crl_number(&url, scratch) > moved_crl);
    stop(second);
    let verified = json(run(&["audit", "verify", "--dir", restored.to_str().unwrap(), "--json"]));
    assert_eq!(verified["ok"], true, "{verified}");
}
