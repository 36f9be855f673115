//! [`AuthorityError`]: why an authority could not be created, opened or served.

use std::path::{Path, PathBuf};

use aip_aat::keyfile::KeyFileError;
use aip_aat::keys::KeyError;
use aip_db::DbError;
use aip_issuer::keys::KeysError;
use aip_issuer::service::IssuerError;
use aip_registry::ca::CaError;
use aip_registry::service::RegistryError;

use crate::config::ConfigError;

/// The authority could not be created or opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorityError {
    /// There is already an authority there.
    #[error("{0}")]
    AlreadyInitialized(String),
    /// No authority there.
    #[error("no authority in {0} (run `aip-ca init`)")]
    NotInitialized(PathBuf),
    /// Another process holds the authority directory (a running server, or an offline command).
    #[error("{0}")]
    InUse(String),
    /// A renewal asked for a validity out of range.
    #[error("{0}")]
    InvalidValidity(String),
    /// A renewal of the issuing CA was interrupted before it was complete.
    #[error("{0}: the issuing CA key does not match its certificate: a renewal of the issuing CA was interrupted")]
    InterruptedRenewal(PathBuf),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A key file could not be read or written.
    #[error("{path}: {source}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: KeyFileError,
    },
    /// A key could not be generated.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The CA certificates could not be made.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] DbError),
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The token issuer's signing keys could not be made or read.
    #[error(transparent)]
    IssuerKeys(#[from] KeysError),
    /// The token issuer failed to start.
    #[error(transparent)]
    Issuer(#[from] IssuerError),
}

/// An I/O failure on `path`.
pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AuthorityError + '_ {
    move |source| AuthorityError::Io {
        path: path.to_owned(),
        source,
    }
}
