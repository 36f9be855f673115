//! Why the registry link failed: one line naming the endpoint or file, never a token.

use std::path::PathBuf;

use super::limits::{CALL_TIMEOUT, MAX_KEYS};

/// The registry link failed. One line, naming the endpoint or file; never a token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The settings cannot be used.
    #[error("registry settings: {0}")]
    Config(&'static str),
    /// The CA certificate file cannot be used.
    #[error("registry CA certificate {}: {reason}", path.display())]
    CaCert {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The registry could not be reached, or did not answer in time.
    #[error("registry {url}: {reason}")]
    Transport {
        /// What was requested.
        url: String,
        /// Why it failed (the transport's error chain, without the URL).
        reason: String,
    },
    /// The registry answered with an error status.
    #[error("registry {url}: HTTP {status}{hint}")]
    Status {
        /// What was requested.
        url: String,
        /// The HTTP status.
        status: u16,
        /// What to check, when the status suggests it.
        hint: &'static str,
    },
    /// A file could not be read.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A response or file is larger than accepted.
    #[error("{source_name}: larger than {limit} bytes")]
    TooLarge {
        /// The URL or file.
        source_name: String,
        /// The limit.
        limit: usize,
    },
    /// A JWKS or revocation list is not valid JSON of the expected shape.
    #[error("{source_name}: {reason}")]
    Decode {
        /// The URL or file.
        source_name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A key set holds malformed keys.
    #[error("{source_name}: {reason}")]
    Keys {
        /// The URL or file.
        source_name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A key set holds no usable key, or more than [`MAX_KEYS`].
    #[error("{source_name}: {count} usable keys (expected 1 to {MAX_KEYS})")]
    KeyCount {
        /// The URL or file.
        source_name: String,
        /// How many usable keys it holds.
        count: usize,
    },
    /// A signed revocation list does not verify.
    #[error("{path}: {reason}")]
    SignedList {
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// A revocation list older than the one in force was refused.
    #[error(
        "{source_name}: revocation list version {offered} is older than version {loaded} in force (rollback refused)"
    )]
    Rollback {
        /// The URL or file.
        source_name: String,
        /// The version offered.
        offered: u64,
        /// The version in force.
        loaded: u64,
    },
    /// The revocation data in force is older than `max_staleness`.
    #[error("revocation data is stale: last loaded {age_ms} ms ago, max_staleness is {max_ms} ms")]
    Stale {
        /// Age of the data, in milliseconds.
        age_ms: u128,
        /// The bound, in milliseconds.
        max_ms: u128,
    },
    /// The signed revocation list in force is past its `expires_at`: the registry has signed a
    /// newer copy since, which the file should have been replaced with.
    #[error(
        "revocation data is stale: the signed list in force expired at {expires_at} (replace the file with a fresh copy of /v1/revocations.jws)"
    )]
    Expired {
        /// Its `expires_at`, RFC 3339.
        expires_at: String,
    },
    /// The registry did not answer within [`CALL_TIMEOUT`].
    #[error("registry {what} did not complete within {} ms", CALL_TIMEOUT.as_millis())]
    Timeout {
        /// What was waited for.
        what: &'static str,
    },
    /// Too many calls are already waiting for the registry.
    #[error("registry link is busy: too many calls are waiting for the registry")]
    Busy,
    /// The link was shut down, or could not start its thread.
    #[error("registry link is stopped")]
    Stopped,
}

impl LinkError {
    /// [`LinkError::Expired`] for a list that expired at `expires_at` (Unix time).
    pub(super) fn expired(expires_at: i64) -> Self {
        let expires_at = time::OffsetDateTime::from_unix_timestamp(expires_at)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_else(|| expires_at.to_string());
        Self::Expired { expires_at }
    }
}
