//! Prometheus metrics: names, and the process-wide recorder `/metrics` renders.
//!
//! Every latency is a histogram with fixed buckets (`_bucket{le}`, `_sum`, `_count`), never a
//! summary: quantiles computed in one process cannot be combined, while the buckets of any
//! number of replicas add up (`sum by (le) (rate(…_bucket[5m]))`). The buckets are constants,
//! the same in every replica; docs/registry.md, "Metrics" lists them.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// HTTP requests, by method, route and status.
pub const HTTP_REQUESTS: &str = "aip_http_requests_total";
/// HTTP request latency in seconds, by route.
pub const HTTP_DURATION: &str = "aip_http_request_duration_seconds";
/// Agents registered.
pub const AGENTS_REGISTERED: &str = "aip_registry_agents_registered_total";
/// Agent certificates issued.
pub const CERTIFICATES_ISSUED: &str = "aip_registry_certificates_issued_total";
/// Status changes, by new status.
pub const STATUS_CHANGES: &str = "aip_registry_status_changes_total";
/// Current revocation list version.
pub const REVOCATION_VERSION: &str = "aip_registry_revocation_version";
/// CRL generation time in seconds.
pub const CRL_GENERATION_SECONDS: &str = "aip_registry_crl_generation_seconds";
/// Open revocation event streams.
pub const EVENT_SUBSCRIBERS: &str = "aip_registry_event_subscribers";

/// Buckets of [`HTTP_DURATION`], in seconds: from a JWKS or health answer (well under a
/// millisecond) through token issuance (a few ms) and registration under load (tens of ms) to
/// a large revocation list (half a second and more).
pub const HTTP_DURATION_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets of [`CRL_GENERATION_SECONDS`], in seconds: a handful of entries takes milliseconds,
/// 100 000 entries about 0.3 s.
pub const CRL_GENERATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The process's Prometheus recorder, installed on first use. `None` if another recorder was
/// installed first (then `/metrics` says so instead of failing).
pub fn handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = histograms().build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            aip_http::metrics_upkeep::keep_up(handle.clone());
            Some(handle)
        })
        .as_ref()
}

/// A builder with the buckets of every latency metric.
fn histograms() -> PrometheusBuilder {
    let with_buckets = [
        (HTTP_DURATION, HTTP_DURATION_BUCKETS),
        (CRL_GENERATION_SECONDS, CRL_GENERATION_BUCKETS),
    ]
    .into_iter()
    .try_fold(PrometheusBuilder::new(), |builder, (name, buckets)| {
        builder.set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)
    });
    // Refused only for an empty list of buckets, and these are non-empty constants.
    with_buckets.unwrap_or_else(|e| {
        tracing::error!(error = %e, "metrics buckets refused; latencies are reported as summaries");
        PrometheusBuilder::new()
    })
}

fn describe() {
    metrics::describe_counter!(HTTP_REQUESTS, "HTTP requests by method, route and status");
    metrics::describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "Time to answer an HTTP request (to the response head), by route"
    );
    metrics::describe_counter!(AGENTS_REGISTERED, "Agents registered");
    metrics::describe_counter!(CERTIFICATES_ISSUED, "Agent certificates issued");
    metrics::describe_counter!(STATUS_CHANGES, "Agent status changes and revocations, by kind");
    metrics::describe_gauge!(REVOCATION_VERSION, "The newest revocation list version published");
    metrics::describe_histogram!(
        CRL_GENERATION_SECONDS,
        metrics::Unit::Seconds,
        "Time to make, sign and store a CRL"
    );
    metrics::describe_gauge!(EVENT_SUBSCRIBERS, "Open revocation event streams");
}
