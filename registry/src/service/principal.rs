//! [`Principal`]: who is calling, as the bearer token says.

use std::time::Instant;

use super::error::RegistryError;

/// What the registry remembers of a recently seen access token.
#[derive(Clone, Debug)]
pub(super) struct CachedAccessToken {
    /// Whose it is.
    pub(super) principal: Principal,
    /// Its expiry (`None`: never).
    pub(super) expires_at: Option<i64>,
    /// When it was read from the database.
    pub(super) seen: Instant,
}

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// An administrator.
    Admin {
        /// Access token id.
        token_id: String,
    },
    /// A reader (proxies, dashboards).
    Reader {
        /// Access token id.
        token_id: String,
    },
    /// A holder of a registration token.
    Registrar {
        /// Registration token id.
        token_id: String,
        /// Its digest.
        digest: String,
    },
}

impl Principal {
    /// How the audit log names the principal.
    pub fn actor(&self) -> String {
        match self {
            Self::Admin { token_id } => format!("admin:{token_id}"),
            Self::Reader { token_id } => format!("reader:{token_id}"),
            Self::Registrar { token_id, .. } => format!("registration-token:{token_id}"),
        }
    }

    /// Whether the principal may read agents and revocation data.
    pub fn can_read(&self) -> bool {
        matches!(self, Self::Admin { .. } | Self::Reader { .. })
    }

    /// Refuses anyone but an administrator.
    pub fn require_admin(&self) -> Result<(), RegistryError> {
        match self {
            Self::Admin { .. } => Ok(()),
            _ => Err(RegistryError::Forbidden("this operation needs an admin token")),
        }
    }
}
