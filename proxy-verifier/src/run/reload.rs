//! Reloading the policy on SIGHUP: a policy that loads, and changes nothing only a restart can
//! change, is put in force; either way the attempt is audited.

use aip_aat::keys::PublicKey;

use crate::audit::{AuditLog, Record};
use crate::engine::Engine;
use crate::hitl::Hitl;
use crate::metrics;
use crate::state::PolicyHandle;

use super::options::{RunError, load_policy};

/// SIGHUP: load the policy again; a bad one keeps the old in force.
pub(super) fn reload(
    path: &std::path::Path,
    key: Option<&PublicKey>,
    handle: &PolicyHandle,
    audit: &AuditLog,
    hitl: &Hitl,
) {
    let previous = handle.current();
    let mut record = Record::new("upstream", "ALLOW", previous.policy().mode().as_str(), false).stamped(audit.clock());
    record.event = Some("POLICY_RELOADED".into());
    let loaded = load_policy(path, key).and_then(|policy| {
        let before = previous.policy();
        if policy.aat() != before.aat() || policy.registry() != before.registry() || policy.server() != before.server()
        {
            return Err(RunError::Reload(
                "the aat, registry and server sections change only with a restart".into(),
            ));
        }
        Ok(policy)
    });
    match loaded {
        Ok(policy) => {
            record.policy_mode = policy.mode().as_str().into();
            record.policy_hash = Some(policy.hash().to_owned());
            metrics::record_policy_hash(policy.name(), policy.hash());
            hitl.update_settings(policy.hitl().clone());
            let name = policy.name().to_owned();
            handle.replace(Engine::new(policy));
            // Said once the new policy is in force: a call after this line sees it.
            tracing::warn!(policy = name, hash = record.policy_hash.as_deref(), "policy reloaded");
        }
        Err(e) => {
            tracing::error!("policy reload refused, keeping the previous policy: {e}");
            record.event = Some("POLICY_RELOAD_FAILED".into());
            record.decision = "BLOCK".into();
            record.reason = Some(e.to_string());
            record.policy_hash = Some(previous.policy().hash().to_owned());
        }
    }
    audit.record(record);
}
