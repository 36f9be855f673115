//! `aip.toml`: the authority's configuration file, and the runtime settings built from it.
//!
//! The file is versioned and strict (unknown members are errors). Environment variables
//! (`AIP_*`, see [`env`]) override it, and command-line flags override both.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
    /// Base URL clients reach the authority at (CRL distribution point, discovery).
    pub public_url: String,
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Database URL; default: the SQLite file `aip.db` in the authority directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// Key and certificate files, relative to the authority directory.
    pub keys: KeyFiles,
    /// Certificate and CRL lifetimes.
    #[serde(default)]
    pub certificates: CertificateSettings,
    /// Agent policies.
    #[serde(default)]
    pub agents: AgentSettings,
    /// TLS for the listener (required on non-loopback addresses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
    /// The token issuer served beside the registry.
    #[serde(default)]
    pub issuer: IssuerSection,
}

fn default_listen() -> String {
    DEFAULT_LISTEN.to_owned()
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

/// Certificate lifetimes.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateSettings {
    /// Agent certificate validity.
    #[serde(default = "default_agent_validity")]
    pub agent_validity: String,
    /// CRL validity (`nextUpdate - thisUpdate`); a new CRL is made after half of it.
    #[serde(default = "default_crl_validity")]
    pub crl_validity: String,
}

fn default_agent_validity() -> String {
    "24h".into()
}
fn default_crl_validity() -> String {
    "1h".into()
}

impl Default for CertificateSettings {
    fn default() -> Self {
        Self {
            agent_validity: default_agent_validity(),
            crl_validity: default_crl_validity(),
        }
    }
}

/// Agent policies.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSettings {
    /// How long a rotated-out key stays valid (spec 8.3.4).
    #[serde(default = "default_grace")]
    pub key_grace_period: String,
    /// Validity of AID attestations.
    #[serde(default = "default_attestation_ttl")]
    pub attestation_ttl: String,
}

fn default_grace() -> String {
    "1h".into()
}
fn default_attestation_ttl() -> String {
    "24h".into()
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            key_grace_period: default_grace(),
            attestation_ttl: default_attestation_ttl(),
        }
    }
}

/// `[issuer]`: the token issuer's settings. Validated by the issuer (`aip-issuer`), which
/// names the member at fault.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSection {
    /// Lifetime of the AATs issued (at most 24 h).
    #[serde(default = "default_token_ttl")]
    pub token_ttl: String,
    /// How long a session can be refreshed after its first AAT (at most 30 days).
    #[serde(default = "default_session_lifetime")]
    pub session_lifetime: String,
    /// `local_user` authorization: off unless enabled; only ever from loopback clients.
    #[serde(default)]
    pub local_user: LocalUserSection,
    /// Trusted OpenID Connect identity providers (`oidc_id_token` authorization).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub oidc: Vec<OidcSection>,
}

fn default_token_ttl() -> String {
    "15m".into()
}
fn default_session_lifetime() -> String {
    "24h".into()
}

impl Default for IssuerSection {
    fn default() -> Self {
        Self {
            token_ttl: default_token_ttl(),
            session_lifetime: default_session_lifetime(),
            local_user: LocalUserSection::default(),
            oidc: Vec::new(),
        }
    }
}

/// `[issuer.local_user]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalUserSection {
    /// Accept `local_user` authorization from loopback clients.
    #[serde(default)]
    pub enabled: bool,
    /// Tools a local user may delegate (default: any, `["*"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegatable_tools: Option<Vec<String>>,
}

/// `[[issuer.oidc]]`: one trusted identity provider.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSection {
    /// The provider's `iss` value, exactly.
    pub issuer: String,
    /// The `aud` ID tokens must carry (the client id registered with the provider).
    pub audience: String,
    /// JWKS file, relative to the authority directory (exactly one of `jwks_file`, `jwks_url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
    /// JWKS URL (`https://`, or `http://` on loopback only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// Claim that becomes `user_id`: `sub` (default) or `email`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_claim: Option<String>,
    /// Tools users of this provider may delegate (default: any, `["*"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegatable_tools: Option<Vec<String>>,
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

/// Validated settings the registry runs with.
#[derive(Clone, Debug)]
pub struct RegistrySettings {
    /// SPIFFE trust domain.
    pub trust_domain: String,
    /// Registry identifier.
    pub registry_id: String,
    /// Public base URL, without a trailing slash.
    pub public_url: String,
    /// Agent certificate validity in seconds.
    pub agent_cert_validity: i64,
    /// CRL validity in seconds.
    pub crl_validity: i64,
    /// Key grace period in seconds.
    pub key_grace_period: i64,
    /// AID attestation validity in seconds.
    pub attestation_ttl: i64,
    /// How old a request proof may be, in seconds.
    pub request_proof_max_age: i64,
}

impl RegistrySettings {
    /// The CRL distribution point written into agent certificates.
    pub fn crl_url(&self) -> String {
        format!("{}/v1/crl", self.public_url)
    }
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
        config.settings(path)?;
        Ok(config)
    }

    /// The file as TOML text.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string_pretty(self)
    }

    /// The runtime settings, with every member checked.
    pub fn settings(&self, path: &Path) -> Result<RegistrySettings, ConfigError> {
        let invalid = |member: &'static str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            member,
            message,
        };
        check_trust_domain(&self.trust_domain).map_err(|m| invalid("trust_domain", m.into()))?;
        if self.registry_id.trim().is_empty() {
            return Err(invalid("registry_id", "must not be empty".into()));
        }
        let public_url = self.public_url.trim_end_matches('/').to_owned();
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            return Err(invalid("public_url", "must be an http:// or https:// URL".into()));
        }
        let duration = |member: &'static str, text: &str, min: i64, max: i64| {
            let secs = parse_duration(text).map_err(|m| invalid(member, m))?;
            if !(min..=max).contains(&secs) {
                return Err(invalid(member, format!("must be between {min} s and {max} s")));
            }
            Ok(secs)
        };
        Ok(RegistrySettings {
            trust_domain: self.trust_domain.clone(),
            registry_id: self.registry_id.clone(),
            public_url,
            agent_cert_validity: duration(
                "certificates.agent_validity",
                &self.certificates.agent_validity,
                60,
                397 * 86_400,
            )?,
            crl_validity: duration(
                "certificates.crl_validity",
                &self.certificates.crl_validity,
                60,
                7 * 86_400,
            )?,
            key_grace_period: duration("agents.key_grace_period", &self.agents.key_grace_period, 0, 30 * 86_400)?,
            attestation_ttl: duration("agents.attestation_ttl", &self.agents.attestation_ttl, 60, 30 * 86_400)?,
            request_proof_max_age: 300,
        })
    }
}

/// A SPIFFE trust domain: lowercase letters, digits, `.`, `-`, `_`; 1–255 characters.
pub fn check_trust_domain(domain: &str) -> Result<(), &'static str> {
    if domain.is_empty() || domain.len() > 255 {
        return Err("must be 1-255 characters");
    }
    if !domain
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err("may contain only lowercase letters, digits, '.', '-' and '_'");
    }
    Ok(())
}

/// Parses `90s`, `15m`, `24h`, `7d` (or a bare number of seconds) into seconds.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let value: i64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 15m, 24h or 7d"))?;
    let factor = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use s, m, h or d)")),
    };
    value.checked_mul(factor).ok_or_else(|| format!("{text:?} is too long"))
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
        let settings = config.settings(Path::new("aip.toml")).unwrap();
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
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("15m"), Ok(900));
        assert_eq!(parse_duration("7d"), Ok(604_800));
        assert_eq!(parse_duration("120"), Ok(120));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("-5s").is_err());
    }
}
