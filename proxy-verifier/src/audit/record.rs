//! One audit record ([`Record`], spec 12.1 and 12.2 plus the chain fields), its RFC 8785
//! canonical form, and the timestamp format `YYYY-MM-DDTHH:MM:SS.mmmZ`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use aip_aat::clock::Clock;

use crate::clock::now_utc;
use crate::dlp::DlpEvent;

/// One audit record (spec 12.1 and 12.2, plus the chain fields).
///
/// Optional fields left `None` are omitted from the log. `seq`, `prev_hash` and `hash` are set
/// by the [`AuditLog`](super::AuditLog) writer; whatever the caller puts there is replaced. Fields are declared
/// in the order RFC 8785 sorts their names, so that serializing the struct directly already
/// gives the canonical form (checked by `direct_serialization_is_canonical`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Why an AAT was refused: the spec 11.2 `aat_error` string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aat_error: Option<String>,
    /// AAT issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aat_issuer: Option<String>,
    /// AAT unique identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aat_jti: Option<String>,
    /// Agent identifier (from the AAT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// Human-readable agent name (from the AAT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<String>,
    /// Tool arguments, already hashed or redacted by the caller: never the raw arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
    /// Lowercase hex SHA-256 of the canonical arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_hash: Option<String>,
    /// Tools an AAT grants (`AAT_VALIDATED` records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities_granted: Option<Vec<String>>,
    /// For a delegated AAT: every agent on its chain, the issuer's agent first and `agent_id`
    /// (the last delegatee) last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegation_chain: Option<Vec<String>>,
    /// For a delegated AAT: the revocation id (hex) of each of its blocks, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegation_revocation_ids: Option<Vec<String>>,
    /// `true` when `agent_id` and `aat_jti` were read from a token that failed validation:
    /// what it claims, not who sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims_unverified: Option<bool>,
    /// `ALLOW`, `BLOCK`, `ALLOW_MONITOR`, `RATE_LIMITED`, `ASK`, …
    pub decision: String,
    /// Delegation scope (from the AAT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegation_scope: Option<String>,
    /// `upstream` (client to server) or `downstream` (server to client).
    pub direction: String,
    /// DLP matches per rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dlp: Option<Vec<DlpCount>>,
    /// Time spent deciding, in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_us: Option<u64>,
    /// JSON-RPC error code sent back, when refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<i32>,
    /// What happened, for records that are events: `DLP_TRIGGERED`, `HITL_RESOLVED`,
    /// `POLICY_RELOADED`, `AAT_VALIDATED`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Argument that failed validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_arg: Option<String>,
    /// Pattern that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_rule: Option<String>,
    /// Identifier of a call held for human approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_id: Option<String>,
    /// JSON-RPC method name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Revocation mode of a `REGISTRY_REVOCATION_CHECK` (`online`, `cached`, `crl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Policy hash at decision time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_hash: Option<String>,
    /// `enforce` or `monitor`.
    pub policy_mode: String,
    /// `hash` of the previous record, [`GENESIS_HASH`](super::GENESIS_HASH) for the first (set by the log).
    #[serde(default)]
    pub prev_hash: String,
    /// How the caller showed it holds the AAT's key: `call` (a per-call proof), `dpop` (a
    /// DPoP proof of the HTTP request) or `dpop_call` (a DPoP proof bound to the call);
    /// absent when no proof came with the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
    /// Why, in one sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// JSON-RPC request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<Value>,
    /// Revocation list version after a `REGISTRY_REVOCATION_CHECK`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_list_version: Option<u64>,
    /// Position in the chain, from 1 (set by the log).
    #[serde(default)]
    pub seq: u64,
    /// Session identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Time of the decision, RFC 3339 UTC with milliseconds (`2026-02-19T10:30:45.123Z`); left
    /// empty, the [`AuditLog`](super::AuditLog) stamps it with its clock when it is recorded.
    pub timestamp: String,
    /// Identity token nonce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// Tool name (for `tools/call`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// How the user authenticated (from the AAT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_auth_method: Option<String>,
    /// Authorizing user (from the AAT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Whether a policy violation was detected.
    pub violation: bool,
    /// Arguments whose canonical SHA-256 the writer thread stores in `args_hash`, so that the
    /// call path does not pay for canonicalization and hashing. Never written to the log.
    #[serde(skip)]
    pub hash_args: Option<Value>,
    /// SHA-256 of the canonical record without this field (set by the log).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
}

/// How many times one DLP rule matched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlpCount {
    /// Number of matches replaced.
    pub count: u64,
    /// The rule name.
    pub rule: String,
}

impl From<DlpEvent> for DlpCount {
    fn from(event: DlpEvent) -> Self {
        Self {
            rule: event.rule,
            count: u64::try_from(event.count).unwrap_or(u64::MAX),
        }
    }
}

/// RFC 8785 form of a record. The struct's fields are declared in canonical order, so plain
/// serialization is canonical unless a free-form value (`args`, `request_id`) holds a
/// floating-point number or a key outside the Basic Multilingual Plane, where serde_json and
/// RFC 8785 may differ; those rare records go through the full canonicalizer.
pub(super) fn canonical_record(record: &Record) -> Result<Vec<u8>, String> {
    let free_form = [record.args.as_ref(), record.request_id.as_ref()];
    if free_form.into_iter().flatten().any(|v| !plain_json(v, 0)) {
        return aip_aat::jcs::to_vec(record).map_err(|e| e.to_string());
    }
    serde_json::to_vec(record).map_err(|e| e.to_string())
}

/// Whether serde_json writes `value` exactly as RFC 8785 does.
fn plain_json(value: &Value, depth: usize) -> bool {
    match value {
        Value::Number(n) => !n.is_f64(),
        Value::Array(items) => depth < 64 && items.iter().all(|v| plain_json(v, depth + 1)),
        Value::Object(map) => {
            depth < 64
                && map
                    .iter()
                    .all(|(k, v)| k.chars().all(|c| c <= '\u{FFFF}') && plain_json(v, depth + 1))
        }
        Value::Null | Value::Bool(_) | Value::String(_) => true,
    }
}

impl Record {
    /// A record of the four required decision fields, not yet stamped: the log stamps it when
    /// it is recorded (see [`Record::stamped`] for a record recorded later than it is made).
    pub fn new(
        direction: impl Into<String>,
        decision: impl Into<String>,
        policy_mode: impl Into<String>,
        violation: bool,
    ) -> Self {
        Self {
            direction: direction.into(),
            decision: decision.into(),
            policy_mode: policy_mode.into(),
            violation,
            ..Self::default()
        }
    }

    /// The record stamped with the time `clock` reads now.
    #[must_use]
    pub fn stamped(mut self, clock: &dyn Clock) -> Self {
        self.stamp(clock);
        self
    }

    /// Stamps the record with the time `clock` reads now.
    pub fn stamp(&mut self, clock: &dyn Clock) {
        self.timestamp = format_timestamp(now_utc(clock));
    }
}

/// A Unix time in the form of the records' `timestamp` (for reports about the log).
pub fn timestamp_of(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix).map_or_else(|_| unix.to_string(), format_timestamp)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, written digit by digit: this runs on the call path for every
/// record, where the formatting machinery cost more than the rest of the record.
fn format_timestamp(at: time::OffsetDateTime) -> String {
    fn digits(out: &mut [u8], value: u32) {
        let mut value = value;
        for slot in out.iter_mut().rev() {
            // A decimal digit: always below 10.
            *slot = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    let mut out = *b"0000-00-00T00:00:00.000Z";
    // `time` keeps years within ±9999; a clock set before year 0 reads as 0000.
    digits(&mut out[0..4], u32::try_from(at.year()).unwrap_or(0));
    digits(&mut out[5..7], u32::from(u8::from(at.month())));
    digits(&mut out[8..10], u32::from(at.day()));
    digits(&mut out[11..13], u32::from(at.hour()));
    digits(&mut out[14..16], u32::from(at.minute()));
    digits(&mut out[17..19], u32::from(at.second()));
    digits(&mut out[20..23], u32::from(at.millisecond()));
    // ASCII digits and separators only.
    std::str::from_utf8(&out).unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aip_aat::chain::GENESIS_HASH;

    #[test]
    fn direct_serialization_is_canonical() {
        let mut record = Record::new("upstream", "BLOCK", "enforce", true);
        let text = "tab\t quote\" back\\ ctl\u{1} é 😀 <>/";
        for field in [
            &mut record.event,
            &mut record.method,
            &mut record.tool,
            &mut record.args_hash,
            &mut record.reason,
            &mut record.failed_arg,
            &mut record.failed_rule,
            &mut record.policy_hash,
            &mut record.hold_id,
            &mut record.session_id,
            &mut record.token_id,
            &mut record.agent_id,
            &mut record.agent_name,
            &mut record.user_id,
            &mut record.user_auth_method,
            &mut record.delegation_scope,
            &mut record.aat_jti,
            &mut record.aat_issuer,
            &mut record.aat_error,
            &mut record.mode,
        ] {
            *field = Some(text.to_owned());
        }
        record.capabilities_granted = Some(vec![text.to_owned(), "read_file".into()]);
        record.revocation_list_version = Some(42);
        record.request_id = Some(serde_json::json!("id-1"));
        record.args = Some(serde_json::json!({"b": [1, -2, {"z": null, "a": true}], "a": text, "é": 3}));
        record.error_code = Some(-32001);
        record.duration_us = Some(12);
        record.dlp = Some(vec![DlpCount {
            rule: "AWS Key".into(),
            count: 2,
        }]);
        record.seq = 9;
        record.prev_hash = GENESIS_HASH.to_owned();
        assert_eq!(
            serde_json::to_vec(&record).unwrap(),
            aip_aat::jcs::to_vec(&record).unwrap()
        );
        assert_eq!(
            canonical_record(&record).unwrap(),
            aip_aat::jcs::to_vec(&record).unwrap()
        );
        record.args = Some(serde_json::json!({"x": 1.5e300}));
        assert_eq!(
            canonical_record(&record).unwrap(),
            aip_aat::jcs::to_vec(&record).unwrap()
        );
    }

    #[test]
    fn timestamp_is_rfc3339_utc_with_millis() {
        let ts = Record::new("upstream", "ALLOW", "enforce", false)
            .stamped(&aip_aat::clock::SystemClock)
            .timestamp;
        assert_eq!(ts.len(), 24, "{ts}");
        assert!(
            ts.ends_with('Z') && ts.as_bytes()[10] == b'T' && ts.as_bytes()[19] == b'.',
            "{ts}"
        );
        assert!(time::OffsetDateTime::parse(&ts, &time::format_description::well_known::Rfc3339).is_ok());
    }

    #[test]
    fn timestamps_are_zero_padded_and_truncated_to_milliseconds() {
        let at = time::macros::datetime!(2026-02-09 04:05:06.007_999 UTC);
        assert_eq!(format_timestamp(at), "2026-02-09T04:05:06.007Z");
        let at = time::macros::datetime!(0987-12-31 23:59:59.999_999_999 UTC);
        assert_eq!(format_timestamp(at), "0987-12-31T23:59:59.999Z");
        let at = time::macros::datetime!(2026-11-24 00:00:00 UTC);
        assert_eq!(format_timestamp(at), "2026-11-24T00:00:00.000Z");
    }

    #[test]
    fn optional_fields_are_omitted_and_round_trip() {
        let mut record = Record::new("downstream", "BLOCK", "monitor", true);
        record.tool = Some("read_file".into());
        record.dlp = Some(vec![
            DlpEvent {
                rule: "AWS Key".into(),
                count: 2,
            }
            .into(),
        ]);
        let value = serde_json::to_value(&record).unwrap();
        let keys: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "decision",
                "direction",
                "dlp",
                "policy_mode",
                "prev_hash",
                "seq",
                "timestamp",
                "tool",
                "violation"
            ]
        );
        assert_eq!(serde_json::from_value::<Record>(value).unwrap(), record);
    }
}
