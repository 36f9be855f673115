//! What the HTTP server reads and answers with: the relay's live policy, schema book and hold
//! queue, the admin token, the metrics handle and the AAT checks.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::FromRef;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::audit::AuditLog;
use crate::engine::SchemaBook;
use crate::hitl::Hitl;
use crate::identity::Identity;
use crate::state::PolicyHandle;

use super::admin::AdminToken;

/// What the server reads and answers with.
#[derive(Clone, Debug)]
pub struct ServerState {
    pub(super) policy: Arc<PolicyHandle>,
    pub(super) schemas: Arc<SchemaBook>,
    pub(super) hitl: Arc<Hitl>,
    pub(super) token: AdminToken,
    pub(super) metrics: Option<PrometheusHandle>,
    pub(super) started: Instant,
    pub(super) identity: Option<Arc<Identity>>,
    pub(super) audit: Option<Arc<AuditLog>>,
}

impl ServerState {
    /// The state over the relay's live policy, schema book and hold queue. `metrics` is the
    /// handle from [`install_metrics`](crate::metrics::install_metrics); without it `/metrics` answers 503.
    pub fn new(
        policy: Arc<PolicyHandle>,
        schemas: Arc<SchemaBook>,
        hitl: Arc<Hitl>,
        token: AdminToken,
        metrics: Option<PrometheusHandle>,
    ) -> Self {
        Self {
            policy,
            schemas,
            hitl,
            token,
            metrics,
            started: Instant::now(),
            identity: None,
            audit: None,
        }
    }

    /// Operator decisions taken through the API (accepting a changed tool) are written to
    /// `audit`.
    #[must_use]
    pub fn with_audit(mut self, audit: Option<Arc<AuditLog>>) -> Self {
        self.audit = audit;
        self
    }

    /// Validations also check the AAT (`X-AIP-AAT`, or `aat.header_name`) and its proof
    /// (`X-AIP-Proof`) with `identity`.
    #[must_use]
    pub fn with_identity(mut self, identity: Option<Arc<Identity>>) -> Self {
        self.identity = identity;
        self
    }
}

impl FromRef<ServerState> for AdminToken {
    fn from_ref(state: &ServerState) -> Self {
        state.token.clone()
    }
}
