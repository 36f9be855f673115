//! The certificate authority: a root CA, an online issuing CA signed by it, agent
//! certificates and the CRL (docs/architecture.md, "Certificates and identity documents").
//!
//! Every signature goes through [`aip_aat::keys::Signer`], so the issuing CA key can live in a
//! KMS or HSM. The root key is only needed to create an issuing CA (`aip-ca init`, `aip-ca ca
//! renew-issuing`) and can be kept offline otherwise.
//!
//! A renewal makes a new issuing CA under the same root; the one it replaces is *retired*: it
//! signs no more certificates, but keeps signing the CRL of those it signed until it expires
//! (docs/architecture.md, "Certificates and identity documents").

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
/// Issuing CA validity: 5 years (also the default of a renewal).
pub const ISSUING_VALIDITY_SECS: i64 = 5 * 365 * 86_400;
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
    /// A CA certificate cannot be read.
    #[error("{0}: not a readable CA certificate")]
    Certificate(&'static str),
    /// A CA key is not the key its certificate certifies.
    #[error("{0}: the key does not match the certificate")]
    KeyMismatch(&'static str),
    /// A new issuing CA would still be valid after the root expires.
    #[error(
        "the new issuing CA would end at {requested} (Unix time), after the root CA, which ends at {root_not_after}"
    )]
    OutlivesRoot {
        /// The end of validity asked for.
        requested: i64,
        /// The end of the root's validity.
        root_not_after: i64,
    },
    /// No issuing CA of this authority has this key id.
    #[error("no issuing CA has this key id")]
    UnknownIssuer,
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
    subject_name(trust_domain, &format!("{trust_domain} AIP {role}"))
}

fn subject_name(organization: &str, common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, DnValue::Utf8String(organization.to_owned()));
    dn.push(DnType::CommonName, DnValue::Utf8String(common_name.to_owned()));
    dn
}

/// The CA certificate `pem` as an rcgen issuer signing with `key` (which must be the key it
/// certifies), its subject read from the certificate.
fn ca_issuer(
    pem: &str,
    key: Arc<dyn Signer>,
    what: &'static str,
) -> Result<(Issuer<'static, CaSigner>, CaCertificateInfo), CaError> {
    let info = check_ca_key(pem, &*key, what)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = subject_name(&info.organization, &info.common_name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.key_identifier_method = KeyIdMethod::Sha256;
    Ok((Issuer::new(params, CaSigner::new(key)), info))
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

/// What a CA certificate says about itself, read back from its PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaCertificateInfo {
    /// Its subject's organization (the trust domain).
    pub organization: String,
    /// Its subject's common name.
    pub common_name: String,
    /// The certified public key, as it appears in the SubjectPublicKeyInfo.
    pub public_key: Vec<u8>,
    /// Validity start (Unix time).
    pub not_before: i64,
    /// Validity end (Unix time).
    pub not_after: i64,
}

/// Reads the key and validity of the CA certificate `pem` (`what` names it in errors).
pub fn ca_certificate_info(pem: &str, what: &'static str) -> Result<CaCertificateInfo, CaError> {
    use x509_cert::der::DecodePem as _;
    let cert = x509_cert::Certificate::from_pem(pem.as_bytes()).map_err(|_| CaError::Certificate(what))?;
    let tbs = cert.tbs_certificate();
    let unix = |t: &x509_cert::time::Time| i64::try_from(t.to_unix_duration().as_secs()).map_err(|_| CaError::Time);
    let public_key = tbs
        .subject_public_key_info()
        .subject_public_key
        .as_bytes()
        .ok_or(CaError::Certificate(what))?
        .to_vec();
    // The CAs made here name themselves with exactly an organization and a common name, in
    // UTF8String, which is what `ca_name` writes when the issuer is rebuilt for signing.
    let subject = tbs.subject();
    let utf8 = |value: Option<x509_cert::ext::pkix::name::DirectoryString>| match value {
        Some(x509_cert::ext::pkix::name::DirectoryString::Utf8String(text)) => Ok(text),
        _ => Err(CaError::Certificate(what)),
    };
    if subject.len() != 2 {
        return Err(CaError::Certificate(what));
    }
    Ok(CaCertificateInfo {
        organization: utf8(subject.organization().map_err(|_| CaError::Certificate(what))?)?,
        common_name: utf8(subject.common_name().map_err(|_| CaError::Certificate(what))?)?,
        public_key,
        not_before: unix(&tbs.validity().not_before)?,
        not_after: unix(&tbs.validity().not_after)?,
    })
}

/// Checks that `key` is the key the CA certificate `pem` certifies; returns what it says.
fn check_ca_key(pem: &str, key: &dyn Signer, what: &'static str) -> Result<CaCertificateInfo, CaError> {
    let info = ca_certificate_info(pem, what)?;
    if info.public_key != key.public_key().to_raw_bytes() {
        return Err(CaError::KeyMismatch(what));
    }
    Ok(info)
}

/// A new issuing CA certificate for `issuing_key`, signed by the root (`root_pem` and its
/// key), valid from `now` for `validity` seconds. Its common name carries the start of the
/// key id, so that every issuing CA of the authority has its own name. Refuses a validity
/// that would end after the root's.
pub fn create_issuing_certificate(
    trust_domain: &str,
    root_pem: &str,
    root_key: Arc<dyn Signer>,
    issuing_key: Arc<dyn Signer>,
    now: i64,
    validity: i64,
) -> Result<String, CaError> {
    let (root_issuer, root) = ca_issuer(root_pem, root_key, "the root CA")?;
    let not_after = now.checked_add(validity).ok_or(CaError::Time)?;
    if not_after > root.not_after {
        return Err(CaError::OutlivesRoot {
            requested: not_after,
            root_not_after: root.not_after,
        });
    }
    let key_id = issuing_key.public_key().thumbprint().as_str().to_owned();
    let mut params = issuing_params(trust_domain);
    let short: String = key_id.chars().take(8).collect();
    params.distinguished_name = ca_name(trust_domain, &format!("Issuing CA {short}"));
    params.serial_number = Some(random_serial()?);
    params.not_before = datetime(now)?;
    params.not_after = datetime(not_after)?;
    let issuing = params
        .signed_by(&CaSigner::new(issuing_key), &root_issuer)
        .map_err(generation)?;
    Ok(issuing.pem())
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
    /// The key id of the issuing CA that signed it.
    pub issuer_key_id: String,
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

/// One issuing CA: its certificate and the key that signs with it.
struct IssuingCa {
    key_id: String,
    issuer: Issuer<'static, CaSigner>,
    pem: String,
    not_after: i64,
}

impl IssuingCa {
    fn new(key: Arc<dyn Signer>, pem: String, what: &'static str) -> Result<Self, CaError> {
        let key_id = key.public_key().thumbprint().as_str().to_owned();
        let (issuer, info) = ca_issuer(&pem, key, what)?;
        Ok(Self {
            key_id,
            issuer,
            pem,
            not_after: info.not_after,
        })
    }
}

/// An issuing CA as [`CertificateAuthority::issuing_cas`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuingCaInfo {
    /// RFC 7638 thumbprint of its key: how its CRL is addressed (`/v1/crl/{key id}`).
    pub key_id: String,
    /// Its certificate (PEM).
    pub pem: String,
    /// End of its validity (Unix time).
    pub not_after: i64,
    /// Whether it signs new certificates (else it is retired: it signs only its CRL).
    pub current: bool,
}

/// The issuing CAs: the current one, which signs agent certificates and its CRL, and the
/// retired ones a renewal replaced, which sign only the CRLs of the certificates they signed.
pub struct CertificateAuthority {
    trust_domain: String,
    current: IssuingCa,
    retired: Vec<IssuingCa>,
    root_pem: String,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain)
            .field("issuing_key_id", &self.current.key_id)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// The issuing CA of `trust_domain`, signing with `issuing_key`; refuses a key that is not
    /// the one the issuing certificate certifies.
    pub fn new(
        trust_domain: &str,
        issuing_key: Arc<dyn Signer>,
        certificates: CaCertificates,
    ) -> Result<Self, CaError> {
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            current: IssuingCa::new(issuing_key, certificates.issuing_pem, "the issuing CA")?,
            retired: Vec::new(),
            root_pem: certificates.root_pem,
        })
    }

    /// Adds a retired issuing CA (its key and certificate): it signs the CRL of the
    /// certificates it signed, nothing else. A CA with the current CA's key id is ignored.
    pub fn with_retired(mut self, key: Arc<dyn Signer>, pem: String) -> Result<Self, CaError> {
        let retired = IssuingCa::new(key, pem, "a retired issuing CA")?;
        if retired.key_id != self.current.key_id && self.retired.iter().all(|r| r.key_id != retired.key_id) {
            self.retired.push(retired);
        }
        Ok(self)
    }

    /// The key id of the current issuing CA.
    pub fn issuing_key_id(&self) -> &str {
        &self.current.key_id
    }

    /// Every issuing CA, the current one first.
    pub fn issuing_cas(&self) -> Vec<IssuingCaInfo> {
        std::iter::once((&self.current, true))
            .chain(self.retired.iter().map(|r| (r, false)))
            .map(|(ca, current)| IssuingCaInfo {
                key_id: ca.key_id.clone(),
                pem: ca.pem.clone(),
                not_after: ca.not_after,
                current,
            })
            .collect()
    }

    /// Whether `key_id` names the current issuing CA (`Some(true)`), a retired one
    /// (`Some(false)`), or none.
    pub fn is_current(&self, key_id: &str) -> Option<bool> {
        if key_id == self.current.key_id {
            Some(true)
        } else {
            self.retired.iter().any(|r| r.key_id == key_id).then_some(false)
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

    /// The current issuing CA certificate (PEM).
    pub fn issuing_pem(&self) -> &str {
        &self.current.pem
    }

    /// Issues an agent certificate with the current issuing CA: subject CN = agent name, SAN URI = SPIFFE ID, key usage
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
            .signed_by(&SubjectKey::of(key), &self.current.issuer)
            .map_err(generation)?;
        Ok(IssuedCertificate {
            serial: hex::encode(serial),
            der: cert.der().to_vec(),
            pem: cert.pem(),
            not_before: not_before.saturating_sub(BACKDATE_SECS),
            not_after,
            issuer_key_id: self.current.key_id.clone(),
        })
    }

    /// Signs a full CRL with the issuing CA whose key id is `issuer_key_id`.
    pub fn sign_crl(
        &self,
        issuer_key_id: &str,
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
        let ca = std::iter::once(&self.current)
            .chain(&self.retired)
            .find(|ca| ca.key_id == issuer_key_id)
            .ok_or(CaError::UnknownIssuer)?;
        Ok(params.signed_by(&ca.issuer).map_err(generation)?.der().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aip_aat::keys::KeyPair;
    use x509_cert::der::Decode as _;

    const NOW: i64 = 1_800_000_000;

    fn key() -> Arc<dyn Signer> {
        Arc::new(KeyPair::generate(Algorithm::EdDSA).unwrap())
    }

    #[test]
    fn a_renewed_issuing_ca_signs_new_certificates_and_the_retired_one_its_crl() {
        let (root, first) = (key(), key());
        let certificates = create_ca_certificates("aip.test", root.clone(), first.clone(), NOW).unwrap();
        let root_pem = certificates.root_pem.clone();
        let first_pem = certificates.issuing_pem.clone();
        let second = key();
        let second_pem = create_issuing_certificate(
            "aip.test",
            &root_pem,
            root.clone(),
            second.clone(),
            NOW + 10,
            86_400 * 400,
        )
        .unwrap();
        let info = ca_certificate_info(&second_pem, "the new issuing CA").unwrap();
        assert_eq!((info.not_before, info.not_after), (NOW + 10, NOW + 10 + 86_400 * 400));
        assert!(
            info.common_name.starts_with("aip.test AIP Issuing CA "),
            "{}",
            info.common_name
        );

        let ca = CertificateAuthority::new(
            "aip.test",
            second.clone(),
            CaCertificates {
                root_pem,
                issuing_pem: second_pem.clone(),
            },
        )
        .unwrap()
        .with_retired(first.clone(), first_pem)
        .unwrap();
        let (old_id, new_id) = (
            first.public_key().thumbprint().as_str(),
            second.public_key().thumbprint().as_str(),
        );
        assert_eq!(ca.issuing_key_id(), new_id);
        assert_eq!(
            (ca.is_current(new_id), ca.is_current(old_id), ca.is_current("x")),
            (Some(true), Some(false), None)
        );
        assert_eq!(ca.issuing_pem(), second_pem);
        assert_eq!(ca.issuing_cas().len(), 2);

        let agent = KeyPair::generate(Algorithm::EdDSA).unwrap();
        let id = AgentId::random().unwrap();
        let cert = ca
            .issue_agent_certificate(&id, "a", agent.public_key(), NOW + 20, NOW + 100, "http://x/v1/crl")
            .unwrap();
        assert_eq!(cert.issuer_key_id, new_id);
        let parsed = x509_cert::Certificate::from_der(&cert.der).unwrap();
        assert!(
            parsed
                .tbs_certificate()
                .issuer()
                .to_string()
                .contains(&info.common_name)
        );

        // Each CA signs its own CRL, named after it; an unknown key id signs nothing.
        use x509_cert::der::{DecodePem as _, Encode as _};
        let first_pem = &ca.issuing_cas()[1].pem;
        for (key_id, signer, pem) in [(old_id, &first, first_pem), (new_id, &second, &second_pem)] {
            let der = ca.sign_crl(key_id, 7, NOW + 30, NOW + 3_630, &[]).unwrap();
            let crl = x509_cert::crl::CertificateList::<x509_cert::certificate::Rfc5280>::from_der(&der).unwrap();
            let subject = x509_cert::Certificate::from_pem(pem.as_bytes()).unwrap();
            assert_eq!(&crl.tbs_cert_list.issuer, subject.tbs_certificate().subject());
            let signed = crl.tbs_cert_list.to_der().unwrap();
            let signature = crl.signature.as_bytes().unwrap();
            signer
                .public_key()
                .verify(Algorithm::EdDSA, &signed, signature)
                .unwrap();
            let other = if key_id == old_id { &second } else { &first };
            assert!(other.public_key().verify(Algorithm::EdDSA, &signed, signature).is_err());
        }
        assert!(matches!(
            ca.sign_crl("x", 1, NOW, NOW + 60, &[]),
            Err(CaError::UnknownIssuer)
        ));
    }

    #[test]
    fn renewals_past_the_root_and_keys_that_do_not_match_are_refused() {
        let (root, issuing) = (key(), key());
        let certificates = create_ca_certificates("aip.test", root.clone(), issuing.clone(), NOW).unwrap();
        let root_end = ca_certificate_info(&certificates.root_pem, "root").unwrap().not_after;
        let too_long = root_end - NOW + 1;
        assert!(matches!(
            create_issuing_certificate("aip.test", &certificates.root_pem, root.clone(), key(), NOW, too_long),
            Err(CaError::OutlivesRoot { root_not_after, .. }) if root_not_after == root_end
        ));
        // The root certificate with another key.
        assert!(matches!(
            create_issuing_certificate("aip.test", &certificates.root_pem, key(), key(), NOW, 86_400),
            Err(CaError::KeyMismatch(_))
        ));
        // The issuing certificate with another key.
        assert!(matches!(
            CertificateAuthority::new("aip.test", key(), certificates.clone()),
            Err(CaError::KeyMismatch(_))
        ));
        assert!(matches!(
            CertificateAuthority::new(
                "aip.test",
                issuing,
                CaCertificates {
                    root_pem: certificates.root_pem,
                    issuing_pem: "not a certificate".into(),
                },
            ),
            Err(CaError::Certificate(_))
        ));
    }
}
