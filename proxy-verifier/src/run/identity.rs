//! Starting the AAT checks the policy asks for, over the registry link, with every change of
//! revocation data audited.

use std::sync::Arc;

use aip_aat::clock::Clock;

use crate::audit::{AuditLog, Record};
use crate::identity::{Identity, RevocationSource};
use crate::policy::Policy;
use crate::registry::{RegistryEvent, RegistryLink};

use super::options::RunError;

/// The AAT verifier and the registry link that feeds it.
pub(super) type IdentityLink = (Arc<Identity>, Arc<RegistryLink>);

/// The AAT checks the policy asks for, over a link to its registry that keeps issuer keys and
/// revocation data fresh; every change of revocation data is audited
/// (`REGISTRY_REVOCATION_CHECK`, spec 12.4). AATs must name `audience` when given (the front
/// door's resource URI, whose DPoP proofs are then remembered as a front door's:
/// [`crate::replay::open`]), else the policy's.
pub(super) fn start_identity(
    policy: &Policy,
    audience: Option<&str>,
    audit: &Arc<AuditLog>,
    clock: &Arc<dyn Clock>,
) -> Result<Option<IdentityLink>, RunError> {
    let (Some(aat), Some(registry)) = (policy.aat(), policy.registry()) else {
        return Ok(None);
    };
    let policy_mode = policy.mode().as_str();
    let events = Arc::clone(audit);
    let on_event = Box::new(move |event: RegistryEvent| {
        let mut record = Record::new("upstream", "ALLOW", policy_mode, false);
        record.event = Some("REGISTRY_REVOCATION_CHECK".into());
        match event {
            RegistryEvent::ListUpdated {
                mode,
                version,
                source,
                counts,
            } => {
                tracing::info!(mode, version, %source, "revocation list updated");
                record.mode = Some(mode.into());
                record.revocation_list_version = Some(version);
                record.reason = Some(format!(
                    "list version {version} from {source}: {} agents revoked, {} suspended, {} AATs, {} \
                     sessions, {} users, {} delegations, {} superseded keys",
                    counts.agents_revoked,
                    counts.agents_suspended,
                    counts.aats_revoked,
                    counts.sessions_revoked,
                    counts.users_revoked,
                    counts.delegations_revoked,
                    counts.keys_superseded
                ));
            }
            RegistryEvent::CheckFailed { mode, reason } => {
                tracing::warn!(mode, "revocation check failed: {reason}");
                record.mode = Some(mode.into());
                record.decision = "BLOCK".into();
                record.reason = Some(reason);
            }
            RegistryEvent::KeysRefreshed { count } => {
                tracing::info!(count, "issuer keys loaded");
                return;
            }
            RegistryEvent::KeysFailed { reason } => {
                tracing::warn!("issuer keys could not be reloaded: {reason}");
                return;
            }
        }
        events.record(record);
    });
    let front_door_since = audience.map(|_| clock.now());
    let replay = crate::replay::open(&aat.replay_store, front_door_since).map_err(RunError::ReplayStore)?;
    let link = RegistryLink::start_with_clock(registry, on_event, Arc::clone(clock))?;
    let (snapshot_link, fresh_link) = (Arc::clone(&link), Arc::clone(&link));
    let revocation = RevocationSource {
        snapshot: Arc::new(move || snapshot_link.revocations()),
        fresh: Arc::new(move || fresh_link.ensure_fresh().map_err(|e| e.to_string())),
    };
    let mut aat = aat.clone();
    if let Some(audience) = audience {
        audience.clone_into(&mut aat.audience);
    }
    let identity = Identity::with_clock(
        &aat,
        policy.server(),
        Arc::clone(&link) as _,
        Some(revocation),
        Arc::clone(clock),
        replay,
    );
    tracing::info!(
        audience = aat.audience,
        require = aat.require,
        mode = link.status().mode,
        "AAT verification on, keys and revocation from {}",
        registry.endpoint
    );
    Ok(Some((Arc::new(identity), link)))
}
