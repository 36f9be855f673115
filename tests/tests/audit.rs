//! The authority's audit log against a full re-chain, with the real `aip-ca` on SQLite and
//! PostgreSQL: the registry key signs the chain's head every `audit.checkpoint_every` records
//! and when the authority stops, and `aip-ca audit verify` finds a log whose records were
//! rewritten with every hash recomputed, and checkpoints signed by another key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Output;

use aip_aat::chain::GENESIS_HASH;
use aip_aat::checkpoint::Checkpoint;
use aip_aat::keyfile;
use aip_tests::{PostgresDb, Server, execute_sql, ok, query_text, run};
use serde_json::{Value, json};

struct Authority {
    dir: String,
}

impl Authority {
    fn verify(&self, extra: &[&str]) -> Output {
        let mut args = vec!["audit", "verify", "--dir", &self.dir];
        args.extend(extra);
        run(&args)
    }

    fn verified(&self, extra: &[&str]) -> Value {
        serde_json::from_str(&ok(self.verify(&[extra, &["--json"]].concat()))).unwrap()
    }

    fn refused(&self, extra: &[&str], needle: &str) {
        let output = self.verify(extra);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
        assert!(stderr.lines().next().unwrap().starts_with("error: "), "{stderr}");
        assert!(stderr.lines().count() <= 2, "one line and a hint: {stderr}");
    }
}

/// Rewrites record `seq` as a database writer can: `actor` changed, and its hash and every
/// later one recomputed (and the recorded head with them), so the chain itself is intact.
fn rechain(database: &str, seq: u64, actor: &str) {
    let rows = query_text(
        database,
        "SELECT CAST(seq AS TEXT), CAST(at AS TEXT), actor, action, subject, details FROM audit_log ORDER BY seq",
    );
    let mut prev = GENESIS_HASH.to_owned();
    for row in rows {
        let number: u64 = row[0].parse().unwrap();
        let at: i64 = row[1].parse().unwrap();
        let actor = if number == seq { actor } else { row[2].as_str() };
        let details: Value = serde_json::from_str(&row[5]).unwrap();
        let record = json!({
            "seq": number, "at": at, "actor": actor, "action": row[3], "subject": row[4],
            "details": details, "prev_hash": prev,
        });
        let hash = aip_aat::jcs::sha256_hex(&record).unwrap();
        execute_sql(
            database,
            &format!(
                "UPDATE audit_log SET actor = '{actor}', prev_hash = '{prev}', hash = '{hash}' WHERE seq = {number}"
            ),
        );
        prev = hash;
    }
    execute_sql(
        database,
        &format!("UPDATE registry_state SET audit_head = '{prev}' WHERE id = 1"),
    );
}

fn checkpoints(database: Option<&str>) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("aip");
    let dir = root.to_str().unwrap().to_owned();
    let mut init = vec!["init", "--dir", &dir, "--insecure-no-passphrase", "--json"];
    if let Some(url) = database {
        init.extend(["--database-url", url]);
    }
    let init: Value = serde_json::from_str(&ok(run(&init))).unwrap();
    let database = database.map_or_else(|| format!("sqlite://{}", root.join("aip.db").display()), str::to_owned);
    let authority = Authority { dir: dir.clone() };
    let admin = init["admin_token"].as_str().unwrap().to_owned();

    // `init` leaves its two records signed.
    let report = authority.verified(&[]);
    assert_eq!(
        (
            &report["records"],
            &report["checkpoint"]["seq"],
            &report["unsigned_tail"]
        ),
        (&json!(2), &json!(2), &json!(0)),
        "{report}"
    );

    // A checkpoint every three records: the third is signed as it is written.
    let config = root.join("aip.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[audit]\ncheckpoint_every = 3\n");
    std::fs::write(&config, text).unwrap();
    let server = Server::start(&["--dir", &dir]);
    for _ in 0..3 {
        ok(run(&[
            "access-token",
            "create",
            "--role",
            "reader",
            "--json",
            "--registry",
            &server.url,
            "--token",
            &admin,
        ]));
    }
    authority.refused(
        &[],
        "2 record(s) after the last signed checkpoint (record 3) are not signed",
    );
    let running = authority.verified(&["--allow-unsigned-tail"]);
    assert_eq!(
        (
            &running["records"],
            &running["checkpoint"]["seq"],
            &running["unsigned_tail"]
        ),
        (&json!(5), &json!(3), &json!(2)),
        "{running}"
    );

    // Stopping signs the rest.
    assert!(server.terminate().success());
    let stopped = authority.verified(&[]);
    assert_eq!(
        (&stopped["checkpoint"]["seq"], &stopped["unsigned_tail"]),
        (&json!(5), &json!(0)),
        "{stopped}"
    );
    assert_eq!(stopped["checkpoint"]["head"], stopped["head"], "{stopped}");
    let text = String::from_utf8(authority.verify(&[]).stdout).unwrap();
    assert!(text.contains("last signed checkpoint: record 5 at "), "{text}");

    // The registry's public key, given explicitly, works as the key file does.
    let registry_key = keyfile::read(&root.join("keys/registry.key"), None).unwrap();
    let public = tmp.path().join("registry.jwk");
    std::fs::write(
        &public,
        serde_json::to_string(&registry_key.public_key().to_jwk()).unwrap(),
    )
    .unwrap();
    assert_eq!(
        authority.verified(&["--public-key", public.to_str().unwrap()])["checkpoint"]["seq"],
        5
    );

    // Another key does not vouch for the log.
    let other_path = tmp.path().join("other.key");
    ok(run(&[
        "keygen",
        "--out",
        other_path.to_str().unwrap(),
        "--insecure-no-passphrase",
    ]));
    authority.refused(
        &["--public-key", other_path.to_str().unwrap()],
        "which is not the audit key",
    );

    // A full re-chain: record 3 gets another actor, every later hash is recomputed.
    rechain(&database, 3, "admin:someone-else");
    authority.refused(
        &[],
        "record 3 is not the record signed at its checkpoint: the log was rewritten",
    );
    authority.refused(&["--allow-unsigned"], "the log was rewritten");

    // With the checkpoints gone the chain alone verifies, so only an explicit flag accepts it.
    execute_sql(&database, "DELETE FROM audit_checkpoints");
    authority.refused(&[], "the log has 5 record(s) and no signed checkpoint");
    authority.refused(&["--allow-unsigned-tail"], "no signed checkpoint");
    assert_eq!(authority.verified(&["--allow-unsigned"])["unsigned_tail"], 5);

    // Checkpoints the rewriter signs with a key of its own are refused.
    let other = keyfile::read(&other_path, None).unwrap();
    let head = query_text(&database, "SELECT audit_head FROM registry_state")[0][0].clone();
    let (forged, jws) = Checkpoint::sign(5, &head, 1_800_000_000, &other).unwrap();
    execute_sql(
        &database,
        &format!(
            "INSERT INTO audit_checkpoints (seq, at, kid, jws) VALUES (5, {}, '{}', '{jws}')",
            forged.at, forged.kid
        ),
    );
    authority.refused(
        &[],
        &format!(
            "a checkpoint is signed by key {}, which is not the audit key",
            other.key_id()
        ),
    );
}

#[test]
fn audit_checkpoints_catch_a_rechain_on_sqlite() {
    checkpoints(None);
}

#[test]
fn audit_checkpoints_catch_a_rechain_on_postgres() {
    if let Some(db) = PostgresDb::create() {
        checkpoints(Some(&db.url));
    }
}
