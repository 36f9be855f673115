//! The proxy's Prometheus metrics (spec 6.4): their names, the recorder `/metrics` renders, and
//! the recording of each evaluated message, shared by the relay and the HTTP API.

use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use metrics::SharedString;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::engine::{Decision, Denial, DenialKind};

/// `aip_requests_total`: messages evaluated (relayed calls and validations).
pub const METRIC_REQUESTS: &str = "aip_requests_total";
/// `aip_decisions_total{decision}`: decisions by type.
pub const METRIC_DECISIONS: &str = "aip_decisions_total";
/// `aip_violations_total{type}`: policy violations by type.
pub const METRIC_VIOLATIONS: &str = "aip_violations_total";
/// `aip_request_duration_seconds`: evaluation latency.
pub const METRIC_DURATION: &str = "aip_request_duration_seconds";
/// `aip_policy_hash{policy,hash}`: 1 for the policy in force, 0 for those replaced.
pub const METRIC_POLICY_HASH: &str = "aip_policy_hash";

/// Buckets of [`METRIC_DURATION`], in seconds: a policy-only decision takes about 10 µs, one
/// with an AAT, its proof and DLP some 50 µs, a call under load a few ms, and a call held for
/// approval (`action: ask`) up to its timeout (60 s by default). A histogram, not a summary, so
/// that the series of several proxies add up; docs/proxy.md, "HTTP API" lists the buckets.
pub const DURATION_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Installs the process-wide Prometheus recorder (once; later calls return the same handle)
/// and describes the spec 6.4 metrics. `None` when another recorder was installed first.
pub fn install_metrics() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(METRIC_DURATION.into()),
                    DURATION_BUCKETS,
                )
                // Refused only for an empty list of buckets, and this is a non-empty constant.
                .unwrap_or_else(|e| {
                    tracing::error!(error = %e, "metrics buckets refused; latency is reported as a summary");
                    PrometheusBuilder::new()
                });
            match builder.install_recorder() {
                Ok(handle) => {
                    describe_metrics();
                    aip_http::metrics_upkeep::keep_up(handle.clone());
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot install the metrics recorder; /metrics is unavailable");
                    None
                }
            }
        })
        .clone()
}

fn describe_metrics() {
    metrics::describe_counter!(
        METRIC_REQUESTS,
        "Messages evaluated: relayed tool calls and validation requests"
    );
    metrics::describe_counter!(
        METRIC_DECISIONS,
        "Decisions by type (allow/allow_monitor/block/rate_limited/ask)"
    );
    metrics::describe_counter!(METRIC_VIOLATIONS, "Policy violations by type");
    metrics::describe_histogram!(
        METRIC_DURATION,
        metrics::Unit::Seconds,
        "Time to evaluate a message against the policy"
    );
    metrics::describe_gauge!(
        METRIC_POLICY_HASH,
        "The policy in force (1) by name and hash; 0 for replaced ones"
    );
}

/// The label for a decision in metrics: the audit decision (spec 12.1) in lower case.
pub fn decision_label(decision: Decision) -> &'static str {
    match decision {
        Decision::Allow => "allow",
        Decision::AllowMonitor => "allow_monitor",
        Decision::Block => "block",
        Decision::RateLimited => "rate_limited",
        Decision::Ask => "ask",
    }
}

/// The violation type of a refusal, for `aip_violations_total{type}` and the `violations` of
/// `/v1/validate`.
pub fn violation_type(denial: &Denial) -> &'static str {
    match denial.kind {
        DenialKind::Forbidden
            if denial
                .failed_rule
                .as_deref()
                .is_some_and(|r| r.starts_with("confusable:")) =>
        {
            "confusable_name"
        }
        DenialKind::Forbidden if denial.failed_arg.is_some() => "argument_invalid",
        DenialKind::Forbidden => "forbidden",
        DenialKind::RateLimited => "rate_limited",
        DenialKind::UserDenied => "user_denied",
        DenialKind::UserTimeout => "user_timeout",
        DenialKind::MethodNotAllowed => "method_not_allowed",
        DenialKind::ProtectedPath => "protected_path",
        DenialKind::SchemaMismatch => "schema_mismatch",
        DenialKind::DlpFailed => "dlp_failed",
        DenialKind::CapabilityDenied { .. } => "aat_capability_denied",
    }
}

/// Label values known in advance, so the common case does not allocate.
const KNOWN_LABELS: &[&str] = &[
    "allow",
    "allow_monitor",
    "block",
    "rate_limited",
    "ask",
    "confusable_name",
    "argument_invalid",
    "forbidden",
    "user_denied",
    "user_timeout",
    "method_not_allowed",
    "protected_path",
    "schema_mismatch",
    "dlp_failed",
    "dlp",
    "aat_capability_denied",
    "policy_violation",
];

fn label(value: &str) -> SharedString {
    match KNOWN_LABELS.iter().find(|k| k.eq_ignore_ascii_case(value)) {
        Some(known) => SharedString::from(*known),
        None => SharedString::from(value.to_ascii_lowercase()),
    }
}

/// Records one evaluated message: `aip_requests_total`, `aip_decisions_total{decision}`,
/// `aip_violations_total{type}` when there was a violation, and the evaluation time. Labels are
/// lower-cased (so `ALLOW` and [`decision_label`] agree). A no-op when no recorder is installed.
pub fn record_decision(decision: &str, violation_type: Option<&str>, duration: Duration) {
    metrics::counter!(METRIC_REQUESTS).increment(1);
    metrics::counter!(METRIC_DECISIONS, "decision" => label(decision)).increment(1);
    if let Some(kind) = violation_type {
        metrics::counter!(METRIC_VIOLATIONS, "type" => label(kind)).increment(1);
    }
    metrics::histogram!(METRIC_DURATION).record(duration.as_secs_f64());
}

/// Sets `aip_policy_hash{policy,hash}` to 1 for this policy, and to 0 for the one it replaces.
/// `/metrics` calls it before every scrape; the relay may call it on reload.
pub fn record_policy_hash(policy: &str, hash: &str) {
    static CURRENT: Mutex<Option<(String, String)>> = Mutex::new(None);
    let mut current = CURRENT.lock().unwrap_or_else(PoisonError::into_inner);
    if current.as_ref().is_some_and(|(p, h)| p == policy && h == hash) {
        return;
    }
    if let Some((old_policy, old_hash)) = current.take() {
        metrics::gauge!(METRIC_POLICY_HASH, "policy" => old_policy, "hash" => old_hash).set(0.0);
    }
    metrics::gauge!(METRIC_POLICY_HASH, "policy" => policy.to_owned(), "hash" => hash.to_owned()).set(1.0);
    *current = Some((policy.to_owned(), hash.to_owned()));
}
