//! What the link reports as it works (for the audit log and the operator's log): the events,
//! where a list came from, and its entries by kind.

use std::fmt;

use aip_aat::revocation::RevocationList;

/// Where a revocation list came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateSource {
    /// A periodic (or first) request of `/v1/revocations`.
    Poll,
    /// A request of `/v1/revocations` prompted by an event of the stream.
    Stream,
    /// The signed list file (`crl` mode).
    File,
    /// A request of `/v1/revocations` made for a validation (`online` mode).
    Online,
}

impl UpdateSource {
    /// `poll`, `stream`, `file` or `online`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Poll => "poll",
            Self::Stream => "stream",
            Self::File => "file",
            Self::Online => "online",
        }
    }
}

impl fmt::Display for UpdateSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Entries of a revocation list, by kind (spec 12.4 `REGISTRY_REVOCATION_CHECK`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListCounts {
    /// Revoked agents.
    pub agents_revoked: usize,
    /// Revoked AATs.
    pub aats_revoked: usize,
    /// Revoked sessions.
    pub sessions_revoked: usize,
    /// Users whose delegations were revoked.
    pub users_revoked: usize,
    /// Blocks of delegable AATs revoked by their revocation id.
    pub delegations_revoked: usize,
    /// Suspended agents.
    pub agents_suspended: usize,
    /// Agent keys replaced by a rotation.
    pub keys_superseded: usize,
}

impl From<&RevocationList> for ListCounts {
    fn from(list: &RevocationList) -> Self {
        Self {
            agents_revoked: list.revoked_agents.len(),
            aats_revoked: list.revoked_aats.len(),
            sessions_revoked: list.revoked_sessions.len(),
            users_revoked: list.revoked_users.len(),
            delegations_revoked: list.revoked_delegations.len(),
            agents_suspended: list.suspended_agents.len(),
            keys_superseded: list.superseded_keys.len(),
        }
    }
}

/// What the link reports as it works, for the audit log and the operator's log. The callback
/// runs on the link's own thread: it must return quickly and must not call back into the link.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistryEvent {
    /// A revocation list with a new version is in force (also the first one).
    ListUpdated {
        /// `online`, `cached` or `crl`.
        mode: &'static str,
        /// Its version.
        version: u64,
        /// Where it came from.
        source: UpdateSource,
        /// Its entries.
        counts: ListCounts,
    },
    /// Revocation data could not be fetched, read or accepted; the previous list stays.
    CheckFailed {
        /// `online`, `cached` or `crl`.
        mode: &'static str,
        /// Why (one line, no secrets).
        reason: String,
    },
    /// The issuer keys were (re)loaded.
    KeysRefreshed {
        /// How many keys are in force.
        count: usize,
    },
    /// The issuer keys could not be reloaded; the previous keys stay.
    KeysFailed {
        /// Why (one line, no secrets).
        reason: String,
    },
}
