//! The certificate authority: a root CA, an online issuing CA signed by it, agent
//! certificates and the CRL (docs/architecture.md, "Certificates and identity documents").
//!
//! Every signature goes through [`aip_aat::keys::Signer`], so the issuing CA key can live in a
//! KMS or HSM. The root key is only needed to create the issuing CA (`aip-ca init`) and can
//! be kept offline afterwards.

use std::sync::Arc;

use aip_aat::ids::AgentId;
use aip_aat::keys::{Algorithm, PublicKey, Signer, x509_signature};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CrlDistributionPoint, DistinguishedName,
    DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyUsagePurpose, PublicKeyData,
    RevocationReason, RevokedCertParams, SanType, SerialNumber, SignatureAlgorithm, SigningKey,
};
use time::OffsetDateTime;

/// Root CA validity: 20 years.
const ROOT_VALIDITY_SECS: i64 = 20 * 365 * 86_400;
/// Issuing CA validity: 5 years.
const ISSUING_VALIDITY_SECS: i64 = 5 * 365 * 86_400;
/// Agent certificates start a minute in the past, so slightly slow clocks accept them.
const BACKDATE_SECS: i64 = 60;

/// A certificate or CRL could not be produced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// A time is out of range.
    #[error("time out of range")]
    Time,
    /// A name cannot be encoded in a certificate.
    #[error("cannot encode {0} in a certificate")]
    Encoding(&'static str),
    /// Building or signing failed.
    #[error("certificate generation failed")]
    Generation(#[source] Box<dyn std::error::Error + Send + Sync>),
}

fn generation(e: rcgen::Error) -> CaError {
    CaError::Generation(Box::new(e))
}

fn datetime(unix: i64) -> Result<OffsetDateTime, CaError> {
    OffsetDateTime::from_unix_timestamp(unix).map_err(|_| CaError::Time)
}

fn rcgen_algorithm(alg: Algorithm) -> &'static SignatureAlgorithm {
    match alg {
        Algorithm::EdDSA => &rcgen::PKCS_ED25519,
        Algorithm::ES256 => &rcgen::PKCS_ECDSA_P256_SHA256,
    }
}

/// A public key in the form rcgen writes into a SubjectPublicKeyInfo.
struct SubjectKey {
    raw: Vec<u8>,
    alg: &'static SignatureAlgorithm,
}

impl SubjectKey {
    fn of(key: &PublicKey) -> Self {
        Self {
            raw: key.to_raw_bytes(),
            alg: rcgen_algorithm(key.algorithm()),
        }
    }
}

impl PublicKeyData for SubjectKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}

/// An [`aip_aat::keys::Signer`] as rcgen's signing key (DER ECDSA signatures, as X.509 wants).
struct CaSigner {
    signer: Arc<dyn Signer>,
    subject: SubjectKey,
}

impl CaSigner {
    fn new(signer: Arc<dyn Signer>) -> Self {
        let subject = SubjectKey::of(signer.public_key());
        Self { signer, subject }
    }
}

impl PublicKeyData for CaSigner {
    fn der_bytes(&self) -> &[u8] {
        self.subject.der_bytes()
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.subject.alg
    }
}

impl SigningKey for CaSigner {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let signature = self.signer.sign(msg).map_err(|_| rcgen::Error::RemoteKeyError)?;
        x509_signature(self.signer.algorithm(), &signature).map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

fn ca_name(trust_domain: &str, role: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, DnValue::Utf8String(trust_domain.to_owned()));
    dn.push(
        DnType::CommonName,
        DnValue::Utf8String(format!("{trust_domain} AIP {role}")),
    );
    dn
}

/// Parameters of the root CA (validity aside, identical whenever rebuilt).
fn root_params(trust_domain: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = ca_name(trust_domain, "Root CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.key_identifier_method = KeyIdMethod::Sha256;
    params
}

/// Parameters of the issuing CA (validity aside, identical whenever rebuilt).
fn issuing_params(trust_domain: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = ca_name(trust_domain, "Issuing CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.key_identifier_method = KeyIdMethod::Sha256;
    params.use_authority_key_identifier_extension = true;
    params
}

/// The CA certificates made by [`create_ca_certificates`], in PEM.
#[derive(Clone, Debug)]
pub struct CaCertificates {
    /// Self-signed root CA certificate.
    pub root_pem: String,
    /// Issuing CA certificate, signed by the root.
    pub issuing_pem: String,
}

/// Creates the root CA certificate and the issuing CA certificate it signs.
pub fn create_ca_certificates(
    trust_domain: &str,
    root_key: Arc<dyn Signer>,
    issuing_key: Arc<dyn Signer>,
    now: i64,
) -> Result<CaCertificates, CaError> {
    let root_signer = CaSigner::new(root_key);
    let mut params = root_params(trust_domain);
    params.serial_number = Some(random_serial()?);
    params.not_before = datetime(now - BACKDATE_SECS)?;
    params.not_after = datetime(now + ROOT_VALIDITY_SECS)?;
    let root = params.self_signed(&root_signer).map_err(generation)?;
    let root_issuer = Issuer::new(root_params(trust_domain), root_signer);

    let issuing_signer = CaSigner::new(issuing_key);
    let mut params = issuing_params(trust_domain);
    params.serial_number = Some(random_serial()?);
    params.not_before = datetime(now - BACKDATE_SECS)?;
    params.not_after = datetime(now + ISSUING_VALIDITY_SECS)?;
    let issuing = params.signed_by(&issuing_signer, &root_issuer).map_err(generation)?;
    Ok(CaCertificates {
        root_pem: root.pem(),
        issuing_pem: issuing.pem(),
    })
}

/// A random positive 128-bit certificate serial number.
fn random_serial() -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    getrandom_fill(&mut bytes)?;
    Ok(SerialNumber::from_slice(&bytes))
}

fn getrandom_fill(bytes: &mut [u8]) -> Result<(), CaError> {
    aip_aat::ids::fill_random(bytes).map_err(|e| CaError::Generation(Box::new(e)))
}

/// A certificate for an agent.
#[derive(Clone, Debug)]
pub struct IssuedCertificate {
    /// Serial number, lowercase hex.
    pub serial: String,
    /// DER.
    pub der: Vec<u8>,
    /// PEM.
    pub pem: String,
    /// Validity start (Unix time).
    pub not_before: i64,
    /// Validity end (Unix time).
    pub not_after: i64,
}

/// Why a certificate is on the CRL (RFC 5280 §5.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrlReason {
    /// No reason given.
    Unspecified,
    /// The agent key is compromised.
    KeyCompromise,
    /// The agent changed owner or affiliation.
    AffiliationChanged,
    /// Replaced by a certificate for a rotated key.
    Superseded,
    /// The agent was retired.
    CessationOfOperation,
    /// The agent is suspended (reversible).
    CertificateHold,
    /// The agent's privileges were withdrawn.
    PrivilegeWithdrawn,
}

impl CrlReason {
    /// The RFC 5280 reason code.
    pub fn code(self) -> i64 {
        match self {
            Self::Unspecified => 0,
            Self::KeyCompromise => 1,
            Self::AffiliationChanged => 3,
            Self::Superseded => 4,
            Self::CessationOfOperation => 5,
            Self::CertificateHold => 6,
            Self::PrivilegeWithdrawn => 9,
        }
    }

    /// The reason with this code.
    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            0 => Self::Unspecified,
            1 => Self::KeyCompromise,
            3 => Self::AffiliationChanged,
            4 => Self::Superseded,
            5 => Self::CessationOfOperation,
            6 => Self::CertificateHold,
            9 => Self::PrivilegeWithdrawn,
            _ => return None,
        })
    }

    /// The API name (`key_compromise`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::KeyCompromise => "key_compromise",
            Self::AffiliationChanged => "affiliation_changed",
            Self::Superseded => "superseded",
            Self::CessationOfOperation => "cessation_of_operation",
            Self::CertificateHold => "certificate_hold",
            Self::PrivilegeWithdrawn => "privilege_withdrawn",
        }
    }

    /// The reason with this API name (revocation reasons only: not `certificate_hold`).
    pub fn from_revocation_name(name: &str) -> Option<Self> {
        [
            Self::Unspecified,
            Self::KeyCompromise,
            Self::AffiliationChanged,
            Self::Superseded,
            Self::CessationOfOperation,
            Self::PrivilegeWithdrawn,
        ]
        .into_iter()
        .find(|r| r.name() == name)
    }

    fn rcgen(self) -> RevocationReason {
        match self {
            Self::Unspecified => RevocationReason::Unspecified,
            Self::KeyCompromise => RevocationReason::KeyCompromise,
            Self::AffiliationChanged => RevocationReason::AffiliationChanged,
            Self::Superseded => RevocationReason::Superseded,
            Self::CessationOfOperation => RevocationReason::CessationOfOperation,
            Self::CertificateHold => RevocationReason::CertificateHold,
            Self::PrivilegeWithdrawn => RevocationReason::PrivilegeWithdrawn,
        }
    }
}

/// One CRL entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlEntry {
    /// Serial number, lowercase hex.
    pub serial: String,
    /// Revocation time (Unix).
    pub revoked_at: i64,
    /// Reason.
    pub reason: CrlReason,
}

/// The online issuing CA.
pub struct CertificateAuthority {
    trust_domain: String,
    issuer: Issuer<'static, CaSigner>,
    issuing_pem: String,
    root_pem: String,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// The issuing CA of `trust_domain`, signing with `issuing_key`.
    pub fn new(trust_domain: &str, issuing_key: Arc<dyn Signer>, certificates: CaCertificates) -> Self {
        Self {
            trust_domain: trust_domain.to_owned(),
            issuer: Issuer::new(issuing_params(trust_domain), CaSigner::new(issuing_key)),
            issuing_pem: certificates.issuing_pem,
            root_pem: certificates.root_pem,
        }
    }

    /// The SPIFFE ID of an agent.
    pub fn spiffe_id(&self, agent_id: &AgentId) -> String {
        format!("spiffe://{}/agent/{agent_id}", self.trust_domain)
    }

    /// The root CA certificate (PEM): the trust anchor.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// The issuing CA certificate (PEM).
    pub fn issuing_pem(&self) -> &str {
        &self.issuing_pem
    }

    /// Issues an agent certificate: subject CN = agent name, SAN URI = SPIFFE ID, key usage
    /// digitalSignature, EKU clientAuth, random 128-bit serial, CRL distribution point.
    pub fn issue_agent_certificate(
        &self,
        agent_id: &AgentId,
        name: &str,
        key: &PublicKey,
        not_before: i64,
        not_after: i64,
        crl_url: &str,
    ) -> Result<IssuedCertificate, CaError> {
        let mut serial = [0u8; 16];
        getrandom_fill(&mut serial)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, DnValue::Utf8String(name.to_owned()));
        params.distinguished_name = dn;
        let spiffe = rcgen::string::Ia5String::try_from(self.spiffe_id(agent_id))
            .map_err(|_| CaError::Encoding("the SPIFFE ID"))?;
        params.subject_alt_names = vec![SanType::URI(spiffe)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.crl_distribution_points = vec![CrlDistributionPoint {
            uris: vec![crl_url.to_owned()],
        }];
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.not_before = datetime(not_before.saturating_sub(BACKDATE_SECS))?;
        params.not_after = datetime(not_after)?;
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = KeyIdMethod::Sha256;
        let cert = params
            .signed_by(&SubjectKey::of(key), &self.issuer)
            .map_err(generation)?;
        Ok(IssuedCertificate {
            serial: hex::encode(serial),
            der: cert.der().to_vec(),
            pem: cert.pem(),
            not_before: not_before.saturating_sub(BACKDATE_SECS),
            not_after,
        })
    }

    /// Signs a full CRL.
    pub fn sign_crl(
        &self,
        crl_number: u64,
        this_update: i64,
        next_update: i64,
        entries: &[CrlEntry],
    ) -> Result<Vec<u8>, CaError> {
        let revoked_certs = entries
            .iter()
            .map(|e| {
                let serial = hex::decode(&e.serial).map_err(|_| CaError::Encoding("a serial number"))?;
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&serial),
                    revocation_time: datetime(e.revoked_at)?,
                    reason_code: Some(e.reason.rcgen()),
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, CaError>>()?;
        let params = CertificateRevocationListParams {
            this_update: datetime(this_update)?,
            next_update: datetime(next_update)?,
            crl_number: SerialNumber::from(crl_number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer).map_err(generation)?.der().to_vec())
    }
}
