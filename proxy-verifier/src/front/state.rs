//! The front door's state ([`Door`]): the proxy's shared parts (policy, schemas, audit, holds,
//! AAT checks), the resource it answers for, what it fronts, and its sessions.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::audit::AuditLog;
use crate::engine::SchemaBook;
use crate::hitl::Hitl;
use crate::identity::Identity;
use crate::policy::{Action, RegistrySettings};
use crate::relay::{Relay, RelayOptions};
use crate::state::PolicyHandle;

use super::session::Sessions;
use super::upstream::HttpServer;

/// How long the upstream may take to answer a request when the policy sets no
/// `spec.call_timeout`.
pub(super) const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// What the front door fronts.
#[derive(Debug)]
pub(super) enum Server {
    /// A remote MCP server.
    Http(HttpServer),
    /// A stdio server command, started once per session.
    Stdio(String),
}

/// Everything the handlers share.
pub(super) struct Door {
    pub(super) policy: Arc<PolicyHandle>,
    pub(super) schemas: Arc<SchemaBook>,
    pub(super) audit: Arc<AuditLog>,
    pub(super) hitl: Arc<Hitl>,
    pub(super) identity: Option<Arc<Identity>>,
    pub(super) relay_options: RelayOptions,
    /// The canonical resource URI: the AATs' audience and the DPoP proofs' `htu`.
    pub(super) resource: String,
    /// Where its protected resource metadata is published.
    pub(super) metadata_url: String,
    /// Origins a browser may call from (`Origin`), besides none at all.
    pub(super) origins: Vec<String>,
    pub(super) server: Server,
    pub(super) sessions: Sessions,
    /// The registry, whose authorization server metadata names the issuer.
    pub(super) registry: Option<RegistrySettings>,
    /// The authority's RFC 8414 `issuer`, once fetched.
    pub(super) issuer: Mutex<Option<String>>,
    /// Whether checking a call may wait for the network: revocation in `online` mode, or the
    /// Redis replay store. Otherwise the checks only read memory and local files (and, for a
    /// token naming an unknown key, wait at most a bounded key refresh).
    pub(super) checks_may_block: bool,
}

impl std::fmt::Debug for Door {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Door")
            .field("resource", &self.resource)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Door {
    /// A relay for one exchange or one stream, over the shared parts.
    pub(super) fn relay(&self) -> Arc<Relay> {
        Relay::new(
            Arc::clone(&self.policy),
            Arc::clone(&self.schemas),
            Arc::clone(&self.audit),
            Arc::clone(&self.hitl),
            self.identity.clone(),
            self.relay_options.clone(),
        )
    }

    /// The tools the policy allows, space-separated and sorted: the scopes a client asks for.
    pub(super) fn scopes(&self) -> String {
        let engine = self.policy.current();
        let policy = engine.policy();
        let mut tools: Vec<&str> = policy
            .allowed_tools()
            .iter()
            .map(String::as_str)
            .chain(
                policy
                    .rules()
                    .filter(|(_, r)| r.action != Action::Block)
                    .map(|(t, _)| t),
            )
            .filter(|t| !t.is_empty() && !t.contains(char::is_whitespace))
            .collect();
        tools.sort_unstable();
        tools.dedup();
        tools.join(" ")
    }

    /// How long the upstream may take to answer a request.
    pub(super) fn call_timeout(&self) -> Duration {
        self.policy
            .current()
            .policy()
            .call_timeout()
            .unwrap_or(DEFAULT_CALL_TIMEOUT)
    }

    /// The authority's `issuer`, fetched once from its metadata (`None` while it cannot be).
    pub(super) async fn issuer(&self) -> Option<String> {
        if let Some(issuer) = self.issuer.lock().unwrap_or_else(PoisonError::into_inner).clone() {
            return Some(issuer);
        }
        let registry = self.registry.as_ref()?;
        match crate::registry::authorization_server(registry).await {
            Ok(issuer) => {
                *self.issuer.lock().unwrap_or_else(PoisonError::into_inner) = Some(issuer.clone());
                Some(issuer)
            }
            Err(e) => {
                tracing::warn!("the authority's authorization server metadata cannot be read: {e}");
                None
            }
        }
    }
}
