//! The registry's settings: its part of `aip.toml` — the identity fields at the top
//! (`trust_domain`, `registry_id`, `public_url`), `[certificates]` and `[agents]` — and the
//! validated [`RegistrySettings`] it runs with. The file itself (its version, the listener,
//! the database, the key files) belongs to whoever runs the registry (`aip-authority`).

use aip_aat::clock::parse_duration;
use serde::{Deserialize, Serialize};

/// `[certificates]`: certificate and CRL lifetimes.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateSettings {
    /// Agent certificate validity.
    #[serde(default = "default_agent_validity")]
    pub agent_validity: String,
    /// CRL validity (`nextUpdate - thisUpdate`); a new CRL is made after half of it.
    #[serde(default = "default_crl_validity")]
    pub crl_validity: String,
    /// Validity of a signed revocation list (`expires_at - issued_at`); the list is signed
    /// anew after half of it.
    #[serde(default = "default_revocation_list_validity")]
    pub revocation_list_validity: String,
}

fn default_revocation_list_validity() -> String {
    "1h".into()
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
            revocation_list_validity: default_revocation_list_validity(),
        }
    }
}

/// `[agents]`: agent policies.
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

/// The registry's part of the configuration, as written.
#[derive(Clone, Copy, Debug)]
pub struct RegistryConfig<'a> {
    /// SPIFFE trust domain of agent identities (`spiffe://<trust_domain>/agent/<id>`).
    pub trust_domain: &'a str,
    /// Registry identifier in attestations (`registry_attestation.registry_id`).
    pub registry_id: &'a str,
    /// Base URL clients reach the authority at (CRL distribution point, discovery).
    pub public_url: &'a str,
    /// `[certificates]`.
    pub certificates: &'a CertificateSettings,
    /// `[agents]`.
    pub agents: &'a AgentSettings,
}

/// A setting is out of range or malformed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{member}`: {message}")]
pub struct InvalidSetting {
    /// The member, as `aip.toml` names it (`certificates.agent_validity`).
    pub member: &'static str,
    /// What is wrong.
    pub message: String,
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
    /// Signed revocation list validity in seconds.
    pub revocation_list_validity: i64,
    /// Key grace period in seconds.
    pub key_grace_period: i64,
    /// AID attestation validity in seconds.
    pub attestation_ttl: i64,
    /// How old a request proof may be, in seconds.
    pub request_proof_max_age: i64,
}

impl RegistrySettings {
    /// The settings, with every member checked.
    pub fn from_config(config: RegistryConfig<'_>) -> Result<Self, InvalidSetting> {
        let invalid = |member: &'static str, message: String| InvalidSetting { member, message };
        check_trust_domain(config.trust_domain).map_err(|m| invalid("trust_domain", m.into()))?;
        if config.registry_id.trim().is_empty() {
            return Err(invalid("registry_id", "must not be empty".into()));
        }
        let public_url = config.public_url.trim_end_matches('/').to_owned();
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
        let (certificates, agents) = (config.certificates, config.agents);
        Ok(Self {
            trust_domain: config.trust_domain.to_owned(),
            registry_id: config.registry_id.to_owned(),
            public_url,
            agent_cert_validity: duration(
                "certificates.agent_validity",
                &certificates.agent_validity,
                60,
                397 * 86_400,
            )?,
            crl_validity: duration("certificates.crl_validity", &certificates.crl_validity, 60, 7 * 86_400)?,
            revocation_list_validity: duration(
                "certificates.revocation_list_validity",
                &certificates.revocation_list_validity,
                60,
                7 * 86_400,
            )?,
            key_grace_period: duration("agents.key_grace_period", &agents.key_grace_period, 0, 30 * 86_400)?,
            attestation_ttl: duration("agents.attestation_ttl", &agents.attestation_ttl, 60, 30 * 86_400)?,
            request_proof_max_age: 300,
        })
    }

    /// The CRL distribution point written into agent certificates.
    pub fn crl_url(&self) -> String {
        format!("{}/v1/crl", self.public_url)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config<'a>(certificates: &'a CertificateSettings, agents: &'a AgentSettings) -> RegistryConfig<'a> {
        RegistryConfig {
            trust_domain: "aip.example",
            registry_id: "https://aip.example",
            public_url: "https://aip.example:8443/",
            certificates,
            agents,
        }
    }

    #[test]
    fn defaults_and_the_crl_url() {
        let (certificates, agents) = (CertificateSettings::default(), AgentSettings::default());
        let settings = RegistrySettings::from_config(config(&certificates, &agents)).unwrap();
        assert_eq!(settings.public_url, "https://aip.example:8443");
        assert_eq!(settings.crl_url(), "https://aip.example:8443/v1/crl");
        assert_eq!(settings.agent_cert_validity, 86_400);
        assert_eq!(settings.key_grace_period, 3_600);
        assert_eq!(settings.revocation_list_validity, 3_600);
    }

    #[test]
    fn the_signed_list_validity_is_bounded() {
        let (mut certificates, agents) = (CertificateSettings::default(), AgentSettings::default());
        for (text, ok) in [
            ("1m", true),
            ("7d", true),
            ("59s", false),
            ("8d", false),
            ("soon", false),
        ] {
            certificates.revocation_list_validity = text.into();
            let result = RegistrySettings::from_config(config(&certificates, &agents));
            match result {
                Ok(s) => assert!(ok, "{text} accepted as {}", s.revocation_list_validity),
                Err(e) => {
                    assert!(!ok, "{text}: {e}");
                    assert_eq!(e.member, "certificates.revocation_list_validity");
                }
            }
        }
    }

    #[test]
    fn errors_name_the_member() {
        let (mut certificates, agents) = (CertificateSettings::default(), AgentSettings::default());
        let bad_domain = RegistryConfig {
            trust_domain: "AIP Example",
            ..config(&certificates, &agents)
        };
        assert_eq!(
            RegistrySettings::from_config(bad_domain).unwrap_err().member,
            "trust_domain"
        );
        certificates.agent_validity = "5s".into();
        let e = RegistrySettings::from_config(config(&certificates, &agents)).unwrap_err();
        assert_eq!(e.member, "certificates.agent_validity");
        assert!(e.to_string().starts_with("`certificates.agent_validity`: "), "{e}");
    }
}
