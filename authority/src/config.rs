//! `aip.toml`: the authority's configuration file. The file-level parts (its version, the
//! listener, the database, the key files, TLS) are the authority's; the registry's and the
//! token issuer's parts are theirs (`aip_registry::config`, `aip_issuer::config`), and each
//! validates its own.
//!
//! The file is versioned and strict (unknown members are errors). Environment variables
//! (`AIP_*`, see [`env`]) override it, and command-line flags override both.

use std::path::{Path, PathBuf};

use aip_aat::checkpoint::DEFAULT_CHECKPOINT_EVERY;
use aip_http::connections::ConnectionSettings;
use aip_issuer::config::{IssuerSection, IssuerSettings};
use aip_registry::config::{AgentSettings, CertificateSettings, RegistryConfig, RegistrySettings};
use serde::{Deserialize, Serialize};

use crate::connections::ConnectionSection;
use crate::rate_limit::RateLimitSection;

/// The configuration file's name inside an authority directory.
pub const CONFIG_FILE: &str = "aip.toml";
/// The configuration format this version reads and writes.
pub const CONFIG_VERSION: u32 = 1;
/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";

/// Names of the environment variables that override the file.
pub mod env {
    /// Authority directory.
    pub const DIR: &str = "AIP_DIR";
    /// Listen address.
    pub const LISTEN: &str = "AIP_LISTEN";
    /// Database URL.
    pub const DATABASE_URL: &str = "AIP_DATABASE_URL";
    /// Public base URL.
    pub const PUBLIC_URL: &str = "AIP_PUBLIC_URL";
}

/// A configuration problem, naming the member at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or ill-typed members.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's explanation, with line and column.
        message: String,
    },
    /// A value is out of range or malformed.
    #[error("{path}: `{member}`: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The member.
        member: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// The file as written on disk.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Format version; must be [`CONFIG_VERSION`].
    pub version: u32,
    /// SPIFFE trust domain of agent identities (`spiffe://<trust_domain>/agent/<id>`).
    pub trust_domain: String,
    /// Registry identifier in attestations (`registry_attestation.registry_id`).
    pub registry_id: String,
    /// Base URL clients reach the authority at (CRL distribution point, discovery, `iss`).
    pub public_url: String,
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Database URL; default: the SQLite file `aip.db` in the authority directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// Key and certificate files, relative to the authority directory.
    pub keys: KeyFiles,
    /// The registry's certificate and CRL lifetimes.
    #[serde(default)]
    pub certificates: CertificateSettings,
    /// The registry's agent policies.
    #[serde(default)]
    pub agents: AgentSettings,
    /// TLS for the listener (required on non-loopback addresses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
    /// The token issuer served beside the registry.
    #[serde(default)]
    pub issuer: IssuerSection,
    /// Limits on connections: how many, and how long a slow or idle one may stay.
    #[serde(default)]
    pub connections: ConnectionSection,
    /// Rate limits on registration, challenges, tokens and failed authentication (spec 8.4.2).
    #[serde(default)]
    pub rate_limits: RateLimitSection,

    /// The audit log's signed checkpoints.
    #[serde(default, skip_serializing_if = "AuditSection::is_default")]
    pub audit: AuditSection,
}

fn default_listen() -> String {
    DEFAULT_LISTEN.to_owned()
}

/// `[audit]`: how often the registry key signs the audit chain's head (besides when the
/// authority stops).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// Records between two signed checkpoints (1 or more).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
}

fn default_checkpoint_every() -> u64 {
    DEFAULT_CHECKPOINT_EVERY
}

impl Default for AuditSection {
    fn default() -> Self {
        Self {
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
        }
    }
}

impl AuditSection {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Where the authority's keys and CA certificates are.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFiles {
    /// Root CA certificate (PEM).
    pub root_ca_cert: PathBuf,
    /// Root CA key (encrypted key file); only `init` needs it, so it may be moved offline.
    pub root_ca_key: PathBuf,
    /// Issuing CA certificate (PEM).
    pub issuing_ca_cert: PathBuf,
    /// Issuing CA key (encrypted key file).
    pub issuing_ca_key: PathBuf,
    /// Registry attestation key (encrypted key file): signs AIDs and revocation lists.
    pub registry_key: PathBuf,
}

/// TLS certificate chain and key for the listener (PEM files).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key (PKCS#8 PEM).
    pub key: PathBuf,
}

impl FileConfig {
    /// Reads and checks `dir/aip.toml`.
    pub fn load(dir: &Path) -> Result<Self, ConfigError> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        Self::parse(&text, &path)
    }

    /// Parses configuration text (`path` is only used in messages).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        if config.version != CONFIG_VERSION {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                member: "version",
                message: format!(
                    "this program reads version {CONFIG_VERSION}, the file says {}",
                    config.version
                ),
            });
        }
        config.registry_settings(path)?;
        config.connection_settings(path)?;
        config
            .rate_limits
            .check()
            .map_err(|(member, message)| ConfigError::Invalid {
                path: path.to_owned(),
                member,
                message,
            })?;

        if config.audit.checkpoint_every == 0 {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                member: "audit.checkpoint_every",
                message: "must be at least 1".into(),
            });
        }
        Ok(config)
    }

    /// The file as TOML text.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string_pretty(self)
    }

    /// The registry's runtime settings, with every member checked.
    pub fn registry_settings(&self, path: &Path) -> Result<RegistrySettings, ConfigError> {
        RegistrySettings::from_config(RegistryConfig {
            trust_domain: &self.trust_domain,
            registry_id: &self.registry_id,
            public_url: &self.public_url,
            certificates: &self.certificates,
            agents: &self.agents,
        })
        .map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            member: e.member,
            message: e.message,
        })
    }

    /// The `[connections]` settings, checked.
    pub fn connection_settings(&self, path: &Path) -> Result<ConnectionSettings, ConfigError> {
        self.connections
            .settings()
            .map_err(|(member, message)| ConfigError::Invalid {
                path: path.to_owned(),
                member,
                message,
            })
    }

    /// The token issuer's runtime settings: `iss` is `public_url` (as the registry settings
    /// give it), relative JWKS files are read from `dir`.
    pub fn issuer_settings(&self, public_url: &str, dir: &Path) -> Result<IssuerSettings, ConfigError> {
        IssuerSettings::from_section(public_url, &self.issuer, dir).map_err(|message| ConfigError::Parse {
            path: dir.join(CONFIG_FILE),
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> String {
        r#"
version = 1
trust_domain = "aip.example"
registry_id = "https://aip.example"
public_url = "https://aip.example:8443/"

[keys]
root_ca_cert = "ca/root.pem"
root_ca_key = "keys/root-ca.key"
issuing_ca_cert = "ca/issuing.pem"
issuing_ca_key = "keys/issuing-ca.key"
registry_key = "keys/registry.key"
"#
        .into()
    }

    #[test]
    fn parses_with_defaults() {
        let config = FileConfig::parse(&sample(), Path::new("aip.toml")).unwrap();
        let settings = config.registry_settings(Path::new("aip.toml")).unwrap();
        assert_eq!(settings.public_url, "https://aip.example:8443");
        assert_eq!(settings.crl_url(), "https://aip.example:8443/v1/crl");
        assert_eq!(settings.agent_cert_validity, 86_400);
        assert_eq!(settings.key_grace_period, 3_600);
        assert_eq!(config.listen, DEFAULT_LISTEN);
        let again = FileConfig::parse(&config.to_toml().unwrap(), Path::new("x")).unwrap();
        assert_eq!(again.trust_domain, "aip.example");
    }

    #[test]
    fn errors_name_the_member_and_line() {
        let unknown = sample().replace("version = 1", "version = 1\nlisten_adress = \"0.0.0.0:1\"");
        let e = FileConfig::parse(&unknown, Path::new("aip.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen_adress") && e.contains("line"), "{e}");
        let bad = sample().replace("aip.example\"\nregistry", "AIP Example\"\nregistry");
        let e = FileConfig::parse(&bad, Path::new("aip.toml")).unwrap_err().to_string();
        assert!(e.contains("trust_domain"), "{e}");
        let newer = sample().replace("version = 1", "version = 2");
        assert!(
            FileConfig::parse(&newer, Path::new("aip.toml"))
                .unwrap_err()
                .to_string()
                .contains("version")
        );
        let short = sample() + "\n[certificates]\nagent_validity = \"5s\"\n";
        let e = FileConfig::parse(&short, Path::new("aip.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("certificates.agent_validity"), "{e}");
        let slow = sample() + "\n[connections]\nheader_read_timeout = \"0s\"\n";
        let e = FileConfig::parse(&slow, Path::new("aip.toml")).unwrap_err().to_string();
        assert!(e.contains("connections.header_read_timeout"), "{e}");
        let unlimited = sample() + "\n[rate_limits]\nfailed_auth_per_address = 0\n";
        let e = FileConfig::parse(&unlimited, Path::new("aip.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("rate_limits.failed_auth_per_address") && e.contains("enabled = false"),
            "{e}"
        );
        let off = sample() + "\n[rate_limits]\nenabled = false\n";
        assert!(
            !FileConfig::parse(&off, Path::new("aip.toml"))
                .unwrap()
                .rate_limits
                .enabled
        );
    }

    #[test]
    fn the_checkpoint_interval_defaults_and_must_be_positive() {
        let config = FileConfig::parse(&sample(), Path::new("aip.toml")).unwrap();
        assert_eq!(config.audit.checkpoint_every, DEFAULT_CHECKPOINT_EVERY);
        assert!(!config.to_toml().unwrap().contains("[audit]"));
        let every = sample() + "\n[audit]\ncheckpoint_every = 10\n";
        let config = FileConfig::parse(&every, Path::new("aip.toml")).unwrap();
        assert_eq!(config.audit.checkpoint_every, 10);
        assert!(config.to_toml().unwrap().contains("checkpoint_every = 10"));
        let zero = sample() + "\n[audit]\ncheckpoint_every = 0\n";
        let e = FileConfig::parse(&zero, Path::new("aip.toml")).unwrap_err().to_string();
        assert!(e.contains("audit.checkpoint_every") && e.contains("at least 1"), "{e}");
    }
}
