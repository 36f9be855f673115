//! What both directions of the relay share: the [`Relay`] itself (the live policy, the schema
//! book, the audit log, the hold queue and the AAT checks), its options, and the protocol-error
//! record either side may write.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;

use aip_aat::token::VerifiedAat;

use crate::audit::{AuditLog, Record};
use crate::engine::SchemaBook;
use crate::hitl::Hitl;
use crate::identity::Identity;
use crate::state::PolicyHandle;

use super::pending::Pending;

/// Default cap on one message, each direction.
pub const DEFAULT_MAX_MESSAGE: usize = 16 << 20;

/// How tool arguments appear in the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditArgs {
    /// Only `args_hash` (default): nothing of the content is kept.
    Hash,
    /// `args` with every string DLP-redacted, plus `args_hash`.
    Redacted,
}

/// Relay settings.
#[derive(Clone, Debug)]
pub struct RelayOptions {
    /// The longest accepted message, in bytes, in either direction.
    pub max_message: usize,
    /// How arguments are recorded.
    pub audit_args: AuditArgs,
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self {
            max_message: DEFAULT_MAX_MESSAGE,
            audit_args: AuditArgs::Hash,
        }
    }
}

/// The state both directions share.
pub struct Relay {
    pub(super) policy: Arc<PolicyHandle>,
    pub(super) schemas: Arc<SchemaBook>,
    pub(super) audit: Arc<AuditLog>,
    pub(super) hitl: Arc<Hitl>,
    pub(super) identity: Option<Arc<Identity>>,
    pub(super) options: RelayOptions,
    /// Ids (raw JSON text) of `tools/list` requests awaiting their response, with the AAT the
    /// request carried.
    pub(super) lists: Mutex<HashMap<Box<str>, Option<Arc<VerifiedAat>>>>,
    /// Requests forwarded to the server and not answered yet.
    pub(super) pending: Pending,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// Builds a relay over shared state.
    pub fn new(
        policy: Arc<PolicyHandle>,
        schemas: Arc<SchemaBook>,
        audit: Arc<AuditLog>,
        hitl: Arc<Hitl>,
        identity: Option<Arc<Identity>>,
        options: RelayOptions,
    ) -> Arc<Self> {
        Arc::new(Self {
            policy,
            schemas,
            audit,
            hitl,
            identity,
            options,
            lists: Mutex::new(HashMap::new()),
            pending: Pending::default(),
        })
    }

    /// Records a message the relay could not take (`PROTOCOL_ERROR`), in either direction,
    /// with its `id` (JSON text) when it could be read.
    pub(super) fn audit_protocol(&self, direction: &str, why: &str, id: Option<&str>) {
        let engine = self.policy.current();
        let mut record = Record::new(direction, "BLOCK", engine.policy().mode().as_str(), true);
        record.event = Some("PROTOCOL_ERROR".into());
        record.reason = Some(why.to_owned());
        record.request_id = id.and_then(|id| serde_json::from_str(id).ok());
        record.policy_hash = Some(engine.policy().hash().to_owned());
        self.audit.record(record);
        tracing::warn!("{direction}: {why}");
    }
}

/// The `data` of a JSON-RPC error that only explains itself.
pub(super) fn reason(text: &str) -> Value {
    serde_json::json!({ "reason": text })
}

/// Microseconds since `started`, for `duration_us`.
pub(super) fn elapsed_us(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}
