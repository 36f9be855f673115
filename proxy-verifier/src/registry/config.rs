//! What the link needs of `spec.registry`: the revocation mode, the files, and the intervals.

use std::path::PathBuf;
use std::time::Duration;

use crate::policy::{RegistrySettings, RevocationMode};

/// The revocation mode, without its settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    Online,
    Cached,
    Crl,
}

impl Mode {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Cached => "cached",
            Self::Crl => "crl",
        }
    }
}

/// What the link's thread needs of the settings.
pub(super) struct Config {
    pub(super) mode: Mode,
    pub(super) crl_path: Option<PathBuf>,
    pub(super) jwks_file: Option<PathBuf>,
    pub(super) check_interval: Duration,
    pub(super) max_staleness: Duration,
    pub(super) key_ttl: Duration,
}

impl Config {
    pub(super) fn from_settings(settings: &RegistrySettings) -> Self {
        let (mode, crl_path) = match &settings.revocation {
            RevocationMode::Online => (Mode::Online, None),
            RevocationMode::Cached => (Mode::Cached, None),
            RevocationMode::Crl { path } => (Mode::Crl, Some(path.clone())),
        };
        Self {
            mode,
            crl_path,
            jwks_file: settings.jwks_file.clone(),
            // A zero interval would poll in a loop; the policy loader refuses less than 1 s.
            check_interval: settings.check_interval.max(Duration::from_millis(10)),
            max_staleness: settings.max_staleness,
            key_ttl: settings.cache_ttl.max(Duration::from_millis(10)),
        }
    }
}
