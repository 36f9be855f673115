//! End-to-end tests of the audit log's signed checkpoints, through the real `aip-proxy`: the
//! proxy signs the chain's head with its audit key every N records and at exit, and
//! `aip-proxy audit verify --key` finds a log re-chained from an edited record (its head file
//! deleted), checkpoints signed by another key, and unsigned records.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use aip_aat::chain::GENESIS_HASH;
use aip_aat::checkpoint::Checkpoint;
use aip_aat::keyfile::{self, Protection};
use aip_aat::keys::{Algorithm, KeyPair};
use serde_json::{Value, json};
use support::{Fixture, run, tool_call};

/// A key file as `aip-ca keygen --insecure-no-passphrase` writes it.
fn key_file(fx: &Fixture, name: &str) -> (PathBuf, KeyPair) {
    let key = KeyPair::generate(Algorithm::EdDSA).unwrap();
    let path = fx.path(name);
    keyfile::write(&path, &key, Protection::InsecureNone).unwrap();
    (path, key)
}

/// Runs the proxy over the fake server, makes `calls` tool calls and lets it exit.
fn session(fx: &Fixture, extra: &[&str], calls: usize) {
    let mut proxy = fx.start(extra);
    for i in 0..calls {
        let tool = if i % 2 == 0 { "echo" } else { "rm_rf" };
        proxy.call(&tool_call(&i.to_string(), tool, &json!({"n": i})));
    }
    assert!(proxy.finish().success(), "{}", proxy.stderr());
}

fn verify(fx: &Fixture, extra: &[&str]) -> Output {
    let mut args = vec![
        "audit".to_owned(),
        "verify".to_owned(),
        fx.audit().display().to_string(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    run(args, None)
}

fn verified(fx: &Fixture, extra: &[&str]) -> Value {
    let output = verify(fx, &[extra, &["--json"]].concat());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn refused(fx: &Fixture, extra: &[&str], needle: &str) {
    let output = verify(fx, extra);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn checkpoints_file(fx: &Fixture) -> PathBuf {
    fx.path("audit.jsonl.checkpoints")
}

/// Rewrites the log as an attacker with write access can: record `seq` edited by `edit`, and
/// every hash from there on recomputed, so the chain itself verifies.
fn rechain(log: &Path, seq: u64, edit: impl Fn(&mut serde_json::Map<String, Value>)) {
    let text = std::fs::read_to_string(log).unwrap();
    let mut prev = GENESIS_HASH.to_owned();
    let mut out = String::new();
    for line in text.lines() {
        let Value::Object(mut record) = serde_json::from_str(line).unwrap() else {
            panic!("not a record: {line}")
        };
        record.remove("hash");
        if record["seq"] == seq {
            edit(&mut record);
        }
        record.insert("prev_hash".into(), json!(prev));
        let hash = aip_aat::jcs::sha256_hex(&record).unwrap();
        record.insert("hash".into(), json!(hash));
        prev = hash;
        out.push_str(&serde_json::to_string(&record).unwrap());
        out.push('\n');
    }
    std::fs::write(log, out).unwrap();
}

#[test]
fn an_untouched_log_verifies_and_reports_its_last_checkpoint() {
    let fx = Fixture::new("  allowed_tools: [echo]\n");
    let (key, _) = key_file(&fx, "audit.key");
    session(
        &fx,
        &["--audit-key", path_str(&key), "--audit-checkpoint-every", "2"],
        5,
    );

    // A checkpoint whenever the records written reach a multiple of two, and at exit for the
    // rest. Records the writer takes together share one, so how many there are depends on its
    // batching: at least the exit's, at most one per two records and the exit's.
    let signed = std::fs::read_to_string(checkpoints_file(&fx)).unwrap();
    let records = fx.records().len() as u64;
    assert_eq!(records, 5, "{signed}");
    assert!((1..=3).contains(&signed.lines().count()), "{signed}");
    let report = verified(&fx, &["--key", path_str(&key)]);
    assert_eq!(report["records"], records, "{report}");
    assert_eq!(report["checkpoint"]["seq"], records, "{report}");
    assert_eq!(report["unsigned_tail"], 0, "{report}");
    assert!(report["checkpoint"]["at"].as_i64().unwrap() > 1_700_000_000, "{report}");

    let text = verify(&fx, &["--key", path_str(&key)]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(
        stdout.contains(&format!("last signed checkpoint: seq {records} at 20")),
        "{stdout}"
    );

    // Without the key, the checkpoints cannot be checked and the log is not vouched for.
    refused(&fx, &[], "the audit key is needed");
}

#[test]
fn a_rechained_log_without_its_head_file_fails() {
    let fx = Fixture::new("  allowed_tools: [echo]\n");
    let (key, _) = key_file(&fx, "audit.key");
    session(
        &fx,
        &["--audit-key", path_str(&key), "--audit-checkpoint-every", "2"],
        4,
    );
    assert_eq!(verified(&fx, &["--key", path_str(&key)])["checkpoint"]["seq"], 4);

    // The refused call becomes an allowed one; every later hash is recomputed, the head file
    // removed: the chain alone is intact.
    rechain(&fx.audit(), 2, |record| {
        assert_eq!(record["decision"], "BLOCK");
        record.insert("decision".into(), json!("ALLOW"));
    });
    std::fs::remove_file(fx.path("audit.jsonl.head")).unwrap();
    let chain_only = aip_proxy_verifier::audit::verify(&fx.audit()).unwrap();
    assert_eq!(chain_only.records, 4);

    // The first checkpoint at or after record 2 gives it away (which one depends on how the
    // writer batched the records).
    refused(
        &fx,
        &["--key", path_str(&key)],
        "is not the record signed at its checkpoint: the log was rewritten",
    );
    // Accepting unsigned records does not excuse a signed one that changed.
    refused(
        &fx,
        &["--key", path_str(&key), "--allow-unsigned"],
        "the log was rewritten",
    );
}

#[test]
fn checkpoints_signed_by_another_key_fail() {
    let fx = Fixture::new("  allowed_tools: [echo]\n");
    let (key, _) = key_file(&fx, "audit.key");
    let (other_path, other) = key_file(&fx, "other.key");
    session(&fx, &["--audit-key", path_str(&key)], 3);

    // The attacker re-chains the log and signs its own checkpoints.
    rechain(&fx.audit(), 1, |record| {
        record.insert("tool".into(), json!("rm_rf"));
    });
    std::fs::remove_file(fx.path("audit.jsonl.head")).unwrap();
    let last: Value =
        serde_json::from_str(std::fs::read_to_string(fx.audit()).unwrap().lines().last().unwrap()).unwrap();
    let (_, forged) = Checkpoint::sign(3, last["hash"].as_str().unwrap(), 1_800_000_000, &other).unwrap();
    std::fs::write(checkpoints_file(&fx), format!("{forged}\n")).unwrap();

    refused(
        &fx,
        &["--key", path_str(&key)],
        &format!("signed by key {}, which is not the audit key", other.key_id()),
    );
    // Checked with the forger's key, it passes: the trust is in the key given.
    assert_eq!(verified(&fx, &["--key", path_str(&other_path)])["checkpoint"]["seq"], 3);

    // The public key works as well as the key file.
    let public = fx.path("other.pub.jwk");
    std::fs::write(&public, serde_json::to_string(&other.public_key().to_jwk()).unwrap()).unwrap();
    assert_eq!(verified(&fx, &["--key", path_str(&public)])["checkpoint"]["seq"], 3);
}

#[test]
fn unsigned_records_fail_unless_accepted() {
    let fx = Fixture::new("  allowed_tools: [echo]\n");
    let (key, _) = key_file(&fx, "audit.key");

    // Written without a key: no checkpoint at all.
    session(&fx, &[], 2);
    refused(
        &fx,
        &["--key", path_str(&key)],
        "the log has 2 record(s) and no signed checkpoint",
    );
    refused(&fx, &[], "--allow-unsigned");
    assert_eq!(verified(&fx, &["--allow-unsigned"])["unsigned_tail"], 2);

    // Continued with the key (one checkpoint every 1000 records): the checkpoint written at
    // exit covers the new record and the earlier ones.
    session(&fx, &["--audit-key", path_str(&key)], 1);
    assert_eq!(verified(&fx, &["--key", path_str(&key)])["checkpoint"]["seq"], 3);
    assert_eq!(
        std::fs::read_to_string(checkpoints_file(&fx)).unwrap().lines().count(),
        1
    );

    // Continued without it again: the new records are an unsigned tail.
    session(&fx, &[], 2);
    refused(
        &fx,
        &["--key", path_str(&key)],
        "2 record(s) after the last signed checkpoint (record 3)",
    );
    let report = verified(&fx, &["--key", path_str(&key), "--allow-unsigned-tail"]);
    assert_eq!(
        (report["checkpoint"]["seq"].clone(), report["unsigned_tail"].clone()),
        (json!(3), json!(2))
    );
}
