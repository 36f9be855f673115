//! `spec.server` (spec 3.8): the HTTP server, the failover mode and what `fail_open` may still
//! let through.

use std::path::PathBuf;
use std::time::Duration;

use crate::normalize::normalize;

use super::error::{PolicyError, line_of};
use super::raw;
use super::units::{duration_field, parse_duration};

/// What happens when a remote dependency (validation server, registry) is unreachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailoverMode {
    /// Refuse (default).
    FailClosed,
    /// Allow, within `fail_open_constraints`.
    FailOpen,
    /// Decide with the local policy alone.
    LocalPolicy,
}

/// `spec.server.fail_open_constraints`: what `fail_open` may still let through.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FailOpenConstraints {
    /// Only these tools (normalized) pass while failing open; empty means any.
    pub allowed_tools: Vec<String>,
    /// How long failing open may last.
    pub max_duration: Option<Duration>,
    /// How many calls may pass while failing open.
    pub max_requests: Option<u64>,
    /// Webhook to alert when failing open.
    pub alert_webhook: Option<String>,
    /// Whether the local policy must still allow the call.
    pub require_local_policy: bool,
}

/// `spec.server` (spec 3.8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSettings {
    /// Whether the HTTP server runs.
    pub enabled: bool,
    /// Listen address.
    pub listen: String,
    /// Failover behaviour.
    pub failover_mode: FailoverMode,
    /// Validation timeout.
    pub timeout: Duration,
    /// TLS certificate and key files (PEM).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Limits on `fail_open`.
    pub fail_open: FailOpenConstraints,
    /// Endpoint paths: validate, health, metrics.
    pub validate_path: String,
    /// Health endpoint path.
    pub health_path: String,
    /// Metrics endpoint path.
    pub metrics_path: String,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: "127.0.0.1:9443".into(),
            failover_mode: FailoverMode::FailClosed,
            timeout: Duration::from_secs(5),
            tls: None,
            fail_open: FailOpenConstraints::default(),
            validate_path: "/v1/validate".into(),
            health_path: "/health".into(),
            metrics_path: "/metrics".into(),
        }
    }
}

pub(super) fn compile_server(server: Option<raw::Server>) -> Result<ServerSettings, PolicyError> {
    let Some(server) = server else {
        return Ok(ServerSettings::default());
    };
    let defaults = ServerSettings::default();
    let failover_mode = match server.failover_mode.as_ref().map(|s| s.value.as_str()) {
        None | Some("fail_closed") => FailoverMode::FailClosed,
        Some("fail_open") => FailoverMode::FailOpen,
        Some("local_policy") => FailoverMode::LocalPolicy,
        Some(other) => {
            return Err(PolicyError::invalid_at(
                "spec.server.failover_mode",
                server.failover_mode.as_ref().and_then(line_of),
                format!("unknown value {other:?}: use fail_closed, fail_open or local_policy"),
            ));
        }
    };
    let listen = match &server.listen {
        None => defaults.listen.clone(),
        Some(text) => {
            text.value
                .parse::<std::net::SocketAddr>()
                .map_err(|_| PolicyError::invalid("spec.server.listen", text, "use HOST:PORT with an IP address"))?;
            text.value.clone()
        }
    };
    let tls = match server.tls {
        Some(raw::Tls {
            cert: Some(cert),
            key: Some(key),
        }) => Some((PathBuf::from(cert), PathBuf::from(key))),
        Some(raw::Tls { cert: None, key: None }) | None => None,
        Some(_) => {
            return Err(PolicyError::invalid_at(
                "spec.server.tls",
                None,
                "give both cert and key",
            ));
        }
    };
    let fail_open = match server.fail_open_constraints {
        None => FailOpenConstraints::default(),
        Some(c) => FailOpenConstraints {
            allowed_tools: c
                .allowed_tools
                .unwrap_or_default()
                .iter()
                .map(|t| normalize(t).into_owned())
                .collect(),
            max_duration: match &c.max_duration {
                None => None,
                Some(text) => Some(
                    parse_duration(&text.value)
                        .map_err(|m| PolicyError::invalid("spec.server.fail_open_constraints.max_duration", text, m))?,
                ),
            },
            max_requests: c.max_requests,
            alert_webhook: c.alert_webhook,
            require_local_policy: c.require_local_policy.unwrap_or(true),
        },
    };
    let endpoints = server.endpoints.unwrap_or_default();
    let path = |p: Option<String>, default: String| -> Result<String, PolicyError> {
        match p {
            Some(p) if !p.starts_with('/') => Err(PolicyError::invalid_at(
                "spec.server.endpoints",
                None,
                format!("endpoint {p:?} must start with '/'"),
            )),
            Some(p) => Ok(p),
            None => Ok(default),
        }
    };
    Ok(ServerSettings {
        enabled: server.enabled.unwrap_or(false),
        listen,
        failover_mode,
        timeout: duration_field("spec.server.timeout", server.timeout.as_ref(), defaults.timeout)?,
        tls,
        fail_open,
        validate_path: path(endpoints.validate, defaults.validate_path)?,
        health_path: path(endpoints.health, defaults.health_path)?,
        metrics_path: path(endpoints.metrics, defaults.metrics_path)?,
    })
}
