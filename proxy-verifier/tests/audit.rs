//! The audit log: concurrent writers, resuming a chain, and every kind of tampering `verify`
//! must catch, each at the right line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use aip_proxy_verifier::audit::{AuditLog, GENESIS_HASH, Record, VerifyError, verify};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn log_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("aip-audit.jsonl")
}

fn head_of(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.head", path.display()))
}

fn record(tool: &str) -> Record {
    let mut record = Record::new("upstream", "ALLOW", "enforce", false);
    record.method = Some("tools/call".into());
    record.tool = Some(tool.into());
    record
}

/// Writes `n` records to a new log and closes it.
fn write_log(path: &Path, n: usize) {
    let log = AuditLog::open(path).unwrap();
    for i in 0..n {
        log.record(record(&format!("tool_{i}")));
    }
    log.close().unwrap();
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    fs::write(path, text).unwrap();
}

fn parse(line: &str) -> Value {
    serde_json::from_str(line).unwrap()
}

/// The hash a record would have: SHA-256 of its canonical form without `hash`.
fn rehash(value: &mut Value) {
    let map = value.as_object_mut().unwrap();
    map.remove("hash");
    let hash = hex::encode(Sha256::digest(aip_aat::jcs::to_vec(&*map).unwrap()));
    map.insert("hash".into(), Value::String(hash));
}

#[test]
fn concurrent_writers_produce_one_valid_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let log = AuditLog::open(&path).unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let log = &log;
            s.spawn(move || {
                for i in 0..25 {
                    log.record(record(&format!("t{t}_{i}")));
                }
            });
        }
    });
    log.close().unwrap();

    let report = verify(&path).unwrap();
    assert_eq!(report.records, 100);
    assert!(report.head_checked);
    let lines = lines(&path);
    assert_eq!(lines.len(), 100);
    let mut tools = HashSet::new();
    let mut last_per_thread = [None::<u64>; 4];
    for (n, line) in lines.iter().enumerate() {
        let value = parse(line);
        assert_eq!(value["seq"], n as u64 + 1);
        let tool = value["tool"].as_str().unwrap().to_owned();
        // Each thread's records keep their order.
        let (t, i) = tool[1..].split_once('_').unwrap();
        let (t, i): (usize, u64) = (t.parse().unwrap(), i.parse().unwrap());
        assert!(last_per_thread[t].is_none_or(|last| last < i));
        last_per_thread[t] = Some(i);
        tools.insert(tool);
    }
    assert_eq!(tools.len(), 100);
    assert_eq!(report.last_hash, parse(&lines[99])["hash"]);
    let head: Value = serde_json::from_slice(&fs::read(head_of(&path)).unwrap()).unwrap();
    assert_eq!(head, json!({"seq": 100, "hash": report.last_hash}));
}

#[test]
fn reopening_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    write_log(&path, 5);
    let first = verify(&path).unwrap();
    assert_eq!(first.records, 5);

    let log = AuditLog::open(&path).unwrap();
    for i in 0..5 {
        log.record(record(&format!("again_{i}")));
    }
    log.close().unwrap();

    let report = verify(&path).unwrap();
    assert_eq!(report.records, 10);
    let lines = lines(&path);
    let (fifth, sixth) = (parse(&lines[4]), parse(&lines[5]));
    assert_eq!(sixth["seq"], 6);
    assert_eq!(sixth["prev_hash"], fifth["hash"]);
    assert_eq!(fifth["hash"], first.last_hash.as_str());
    assert_eq!(parse(&lines[0])["prev_hash"], GENESIS_HASH);
}

#[test]
fn records_written_before_drop_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    {
        let log = AuditLog::open(&path).unwrap();
        for i in 0..7 {
            log.record(record(&format!("tool_{i}")));
        }
    }
    assert_eq!(verify(&path).unwrap().records, 7);
}

#[test]
fn sync_writes_everything_queued_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let log = AuditLog::open(&path).unwrap();
    for i in 0..3 {
        log.record(record(&format!("tool_{i}")));
    }
    log.sync().unwrap();
    assert_eq!(lines(&path).len(), 3);
    assert_eq!(verify(&path).unwrap().records, 3);
    log.close().unwrap();
}

#[test]
fn empty_log_verifies_with_zero_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    fs::write(&path, "").unwrap();
    let report = verify(&path).unwrap();
    assert_eq!(report.records, 0);
    assert_eq!(report.last_hash, GENESIS_HASH);
    assert!(!report.head_checked);

    // Opening and closing without records leaves a valid empty log.
    AuditLog::open(&path).unwrap().close().unwrap();
    assert_eq!(verify(&path).unwrap().records, 0);
}

#[test]
fn missing_log_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = verify(&dir.path().join("nope.jsonl")).unwrap_err();
    assert!(matches!(err, VerifyError::Io { .. }), "{err}");
}

#[test]
fn edited_field_is_detected_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    write_log(&path, 10);
    let mut lines = lines(&path);
    assert!(lines[4].contains("\"decision\":\"ALLOW\""));
    lines[4] = lines[4].replace("\"decision\":\"ALLOW\"", "\"decision\":\"BLOCK\"");
    write_lines(&path, &lines);
    let err = verify(&path).unwrap_err();
    assert!(matches!(err, VerifyError::Edited { line: 5, seq: 5 }), "{err}");
    assert!(err.to_string().contains("line 5"), "{err}");
}

#[test]
fn edited_and_rehashed_record_breaks_the_next_link() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    write_log(&path, 10);
    let mut lines = lines(&path);
    let mut value = parse(&lines[4]);
    value["tool"] = json!("something_else");
    rehash(&mut value);
    lines[4] = value.to_string();
    write_lines(&path, &lines);
    let err = verify(&path).unwrap_err();
    assert!(matches!(err, VerifyError::ChainBroken { line: 6, seq: 6 }), "{err}");
}

#[test]
fn deleted_line_is_detected_at_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    write_log(&path, 10);
    let mut lines = lines(&path);
    lines.remove(4);
    write_lines(&path, &lines);
    let err = verify(&path).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Deleted {
                line: 5,
                expected: 5,
                found: 6
            }
        ),
        "{err}"
    );
    assert_eq!(err.line(), Some(5));
}

#[test]
fn swapped_lines_are_detected_as_reordered() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    write_log(&path, 10);
    let mut lines = lines(&path);
    lines.swap(3, 4);
    write_lines(&path, &lines);
    let err = verify(&path).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Reordered {
                line: 4,
                expected: 4,
                found: 5
            }
        ),
        "{err}"
    );
}

#[test]
fn dropped_tail_is_detected_by_the_head_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    write_log(&path, 10);
    let lines = lines(&path);
    write_lines(&path, &lines[..7]);
    let err = verify(&path).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::TailTruncated {
                line: 7,
                records: 7,
                head_seq: 10
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("last 3 record(s)"), "{err}");

    // Resuming on top of it is refused too.
    let err = AuditLog::open(&path).unwrap_err();
    assert!(err.to_string().contains("aip-proxy audit verify"), "{err}");

    // Without the head file the shortened chain is self-consistent: the head is what catches it.
    fs::remove_file(head_of(&path)).unwrap();
    let report = verify(&path).unwrap();
    assert_eq!((report.records, report.head_checked), (7, false));
}

#[test]
fn replaced_tail_is_detected_by_the_head_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    write_log(&path, 10);
    let head = fs::read(head_of(&path)).unwrap();
    // Rewrite the log from scratch with the same number of records: a different chain.
    fs::remove_file(&path).unwrap();
    fs::remove_file(head_of(&path)).unwrap();
    let log = AuditLog::open(&path).unwrap();
    for i in 0..10 {
        log.record(record(&format!("other_{i}")));
    }
    log.close().unwrap();
    fs::write(head_of(&path), head).unwrap();
    let err = verify(&path).unwrap_err();
    assert!(matches!(err, VerifyError::HeadMismatch { line: 10, seq: 10 }), "{err}");
}

#[test]
fn last_line_cut_in_half_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    write_log(&path, 10);
    let text = fs::read_to_string(&path).unwrap();
    let last_start = text[..text.len() - 1].rfind('\n').unwrap() + 1;
    let cut = last_start + (text.len() - last_start) / 2;
    fs::write(&path, &text[..cut]).unwrap();
    let err = verify(&path).unwrap_err();
    assert!(matches!(err, VerifyError::TruncatedLine { line: 10 }), "{err}");
    assert!(err.to_string().starts_with("line 10 "), "{err}");
}

#[test]
fn garbage_line_is_unparsable() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    write_log(&path, 3);
    let mut lines = lines(&path);
    lines[1] = "not json at all".into();
    write_lines(&path, &lines);
    let err = verify(&path).unwrap_err();
    assert!(matches!(err, VerifyError::Unparsable { line: 2, .. }), "{err}");
}

#[test]
fn duplicated_member_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    write_log(&path, 3);
    let mut lines = lines(&path);
    // A reader keeping the first member would see BLOCK; the hash covers ALLOW.
    lines[0] = lines[0].replacen('{', "{\"decision\":\"BLOCK\",", 1);
    write_lines(&path, &lines);
    let err = verify(&path).unwrap_err();
    assert!(matches!(err, VerifyError::Unparsable { line: 1, .. }), "{err}");
}

#[test]
fn resume_refuses_a_corrupt_last_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    write_log(&path, 3);
    let good = fs::read_to_string(&path).unwrap();

    for (what, broken) in [
        ("garbage line", format!("{good}{{\"seq\": 4, \"oops\n")),
        ("no trailing newline", good[..good.len() - 1].to_owned()),
        ("half a line", good[..good.len() - 40].to_owned()),
        ("edited last record", good.replace("\"tool_2\"", "\"tool_9\"")),
    ] {
        fs::write(&path, &broken).unwrap();
        let err = AuditLog::open(&path).expect_err(what);
        let message = err.to_string();
        assert!(message.contains("aip-proxy audit verify"), "{what}: {message}");
        assert!(message.contains(&path.display().to_string()), "{what}: {message}");
        // Nothing was appended.
        assert_eq!(fs::read_to_string(&path).unwrap(), broken, "{what}");
    }
}

#[test]
fn second_writer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let log = AuditLog::open(&path).unwrap();
    assert!(AuditLog::open(&path).is_err());
    log.close().unwrap();
    AuditLog::open(&path).unwrap().close().unwrap();
}

#[test]
fn log_and_head_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    write_log(&path, 1);
    for file in [path.clone(), head_of(&path)] {
        let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }
}

#[test]
fn args_are_stored_as_given() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let args = json!({
        "path": "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "content": "[REDACTED:AWS Key]",
        "n": 3,
        "ratio": 0.25,
        "nested": {"b": [true, null, "ü"], "a": {}}
    });
    let log = AuditLog::open(&path).unwrap();
    let mut rec = Record::new("upstream", "BLOCK", "enforce", true).stamped(&aip_aat::clock::SystemClock);
    rec.tool = Some("write_file".into());
    rec.args = Some(args.clone());
    rec.request_id = Some(json!(7));
    rec.error_code = Some(-32001);
    rec.failed_arg = Some("path".into());
    rec.failed_rule = Some("^/home/.*".into());
    rec.duration_us = Some(42);
    log.record(rec.clone());
    log.close().unwrap();

    verify(&path).unwrap();
    let lines = lines(&path);
    let value = parse(&lines[0]);
    assert_eq!(value["args"], args);
    let back: Record = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(back.args, Some(args));
    assert_eq!((back.seq, back.prev_hash.as_str()), (1, GENESIS_HASH));
    assert_eq!(back.hash.len(), 64);
    // Everything else the caller set comes back unchanged.
    let mut expected = rec;
    expected.seq = back.seq;
    expected.prev_hash.clone_from(&back.prev_hash);
    expected.hash.clone_from(&back.hash);
    assert_eq!(back, expected);
    // Unset optional fields are not written.
    assert!(value.get("session_id").is_none() && value.get("event").is_none());
}
