//! Prometheus metrics: names, and the process-wide recorder `/metrics` renders.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

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

/// The process's Prometheus recorder, installed on first use. `None` if another recorder was
/// installed first (then `/metrics` says so instead of failing).
pub fn handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok().map(|()| handle)
        })
        .as_ref()
}
