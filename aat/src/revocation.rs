//! The registry's revocation list (spec 8.3.3, with `revoked_users`; docs/architecture.md,
//! "Revocation publication"), its signed form for offline proxies, and an indexed
//! [`RevocationView`] over it.
//!
//! The signed form is a compact JWS, header `{"alg","typ":"aip-revocations+jwt","kid"}`,
//! whose payload is the RFC 8785 form of the list with two more members, `issued_at` and
//! `expires_at` (RFC 3339, like a CRL's thisUpdate and nextUpdate), signed by the registry
//! key ([`SignedRevocationList`]). A signed list without them is refused: past `expires_at` a
//! verifier no longer trusts it, however well signed.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ids::{AgentId, Jti, KeyId};
use crate::jcs;
use crate::jws::{self, Compact, Header};
use crate::keys::{Algorithm, JwkSet, SignError, Signer};
use crate::validate::RevocationView;

/// JWS `typ` of a signed revocation list.
pub const REVOCATIONS_TYP: &str = "aip-revocations+jwt";
/// Largest signed list accepted (a list with a hundred thousand entries fits).
pub const MAX_SIGNED_LIST_LEN: usize = 64 << 20;

/// The revocation list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationList {
    /// Monotonic version; every change increments it.
    pub version: u64,
    /// When the list last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Revoked agents.
    #[serde(default)]
    pub revoked_agents: Vec<RevokedAgent>,
    /// Revoked tokens.
    #[serde(default)]
    pub revoked_aats: Vec<RevokedAat>,
    /// Revoked sessions.
    #[serde(default)]
    pub revoked_sessions: Vec<RevokedSession>,
    /// Users whose delegations were revoked: their AATs issued at or before `revoked_at`.
    #[serde(default)]
    pub revoked_users: Vec<RevokedUser>,
    /// Revoked delegations of delegable AATs, by the revocation id of a block: every token
    /// that carries that block is refused. Left out while empty, so that a list without one is
    /// byte for byte what verifiers of earlier releases read and sign-check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked_delegations: Vec<RevokedDelegation>,
    /// Agents currently suspended (reversible; their AATs are refused while suspended).
    #[serde(default)]
    pub suspended_agents: Vec<SuspendedAgent>,
    /// Agent keys replaced by a rotation (spec 8.3.4): AATs bound to one are refused once its
    /// grace period has ended.
    #[serde(default)]
    pub superseded_keys: Vec<SupersededKey>,
}

/// An agent key replaced by a rotation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupersededKey {
    /// The agent that held it.
    pub agent_id: AgentId,
    /// Its RFC 7638 thumbprint: the `cnf.jkt` of the AATs bound to it.
    pub key_thumbprint: KeyId,
    /// The end of its grace period: after this, AATs bound to it are refused.
    #[serde(with = "time::serde::rfc3339")]
    pub valid_until: OffsetDateTime,
}

/// A revocation list as signed for offline use: the list, when it was signed and until when
/// it may be trusted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRevocationList {
    /// The list.
    #[serde(flatten)]
    pub list: RevocationList,
    /// When this copy was signed.
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    /// After this, the copy is no longer trusted (a CRL's nextUpdate): the registry signs a
    /// new one well before.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// A suspended agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuspendedAgent {
    /// The agent.
    pub agent_id: AgentId,
    /// Since when.
    #[serde(with = "time::serde::rfc3339")]
    pub suspended_at: OffsetDateTime,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A revoked agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedAgent {
    /// The agent.
    pub agent_id: AgentId,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_at: OffsetDateTime,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A revoked token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedAat {
    /// The token's `jti`.
    pub jti: Jti,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_at: OffsetDateTime,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A revoked session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedSession {
    /// The session.
    pub session_id: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_at: OffsetDateTime,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A revoked delegation: one block of delegable AATs, by its revocation id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedDelegation {
    /// The block's revocation id, in lowercase hex.
    pub revocation_id: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_at: OffsetDateTime,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A user whose delegations were revoked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedUser {
    /// The user.
    pub user_id: String,
    /// AATs of the user issued at or before this time are revoked.
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_at: OffsetDateTime,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A signed list could not be verified.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignedListError {
    /// Not a compact JWS with a JSON list payload and the right `typ`.
    #[error("malformed signed revocation list: {0}")]
    Malformed(&'static str),
    /// No registry key has the header's `kid`.
    #[error("signed revocation list names an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("signed revocation list signature is invalid")]
    SignatureInvalid,
    /// The payload has no `issued_at` and `expires_at` (a registry of an earlier release
    /// signed it), or they are out of order.
    #[error("signed revocation list has no valid issued_at/expires_at: fetch a new one from /v1/revocations.jws")]
    NoExpiry,
}

impl RevocationList {
    /// An empty list at `version`.
    pub fn empty(version: u64, updated_at: OffsetDateTime) -> Self {
        Self {
            version,
            updated_at,
            revoked_agents: Vec::new(),
            revoked_aats: Vec::new(),
            revoked_sessions: Vec::new(),
            revoked_users: Vec::new(),
            revoked_delegations: Vec::new(),
            suspended_agents: Vec::new(),
            superseded_keys: Vec::new(),
        }
    }
}

impl SignedRevocationList {
    /// `list`, signed at `issued_at` and trusted until `expires_at`.
    pub fn new(list: RevocationList, issued_at: OffsetDateTime, expires_at: OffsetDateTime) -> Self {
        Self {
            list,
            issued_at,
            expires_at,
        }
    }

    /// The signed compact-JWS form.
    pub fn sign(&self, signer: &dyn Signer) -> Result<String, SignError> {
        let payload = jcs::to_vec(self).map_err(SignError::backend)?;
        jws::sign(REVOCATIONS_TYP, &payload, signer, false)
    }

    /// Whether the copy may no longer be trusted at `now` (Unix seconds).
    pub fn is_expired(&self, now: i64) -> bool {
        now >= self.expires_at.unix_timestamp()
    }

    /// Verifies a signed list against the registry's keys and returns it. Whether it has
    /// expired is the caller's to check ([`SignedRevocationList::is_expired`]).
    pub fn verify(signed: &str, registry_keys: &JwkSet) -> Result<Self, SignedListError> {
        let compact =
            Compact::split(signed.trim(), MAX_SIGNED_LIST_LEN).map_err(|e| SignedListError::Malformed(e.describe()))?;
        let header = Header::parse(&compact).map_err(|e| SignedListError::Malformed(e.describe()))?;
        if !header.typ_is(REVOCATIONS_TYP) {
            return Err(SignedListError::Malformed("`typ` is not aip-revocations+jwt"));
        }
        let kid = header
            .kid
            .as_deref()
            .and_then(|k| k.parse::<KeyId>().ok())
            .ok_or(SignedListError::UnknownKey)?;
        let key = registry_keys.get(&kid).ok_or(SignedListError::UnknownKey)?;
        let alg = Algorithm::from_name(&header.alg).ok_or(SignedListError::SignatureInvalid)?;
        let signature = compact
            .signature_bytes()
            .map_err(|e| SignedListError::Malformed(e.describe()))?;
        key.verify(alg, compact.signing_input.as_bytes(), &signature)
            .map_err(|_| SignedListError::SignatureInvalid)?;
        let payload = compact
            .payload_bytes()
            .map_err(|e| SignedListError::Malformed(e.describe()))?;
        let value: serde_json::Value = crate::json::from_slice(&payload)
            .map_err(|_| SignedListError::Malformed("payload is not a revocation list"))?;
        if value.get("issued_at").is_none() || value.get("expires_at").is_none() {
            return Err(SignedListError::NoExpiry);
        }
        let signed: Self = crate::json::from_value(value)
            .map_err(|_| SignedListError::Malformed("payload is not a revocation list"))?;
        if signed.expires_at <= signed.issued_at {
            return Err(SignedListError::NoExpiry);
        }
        Ok(signed)
    }
}

/// A [`RevocationList`] indexed for constant-time lookups.
#[derive(Clone, Debug, Default)]
pub struct RevocationIndex {
    version: u64,
    agents: HashSet<AgentId>,
    suspended: HashSet<AgentId>,
    tokens: HashSet<Jti>,
    sessions: HashSet<String>,
    users: HashMap<String, i64>,
    delegations: HashSet<String>,
    /// Superseded key thumbprint → (its agent, the end of its grace period).
    superseded: HashMap<KeyId, (AgentId, i64)>,
}

impl RevocationIndex {
    /// The list version this index was built from.
    pub fn version(&self) -> u64 {
        self.version
    }
}

impl From<&RevocationList> for RevocationIndex {
    fn from(list: &RevocationList) -> Self {
        let mut users: HashMap<String, i64> = HashMap::new();
        for u in &list.revoked_users {
            let at = u.revoked_at.unix_timestamp();
            users
                .entry(u.user_id.clone())
                .and_modify(|t| *t = (*t).max(at))
                .or_insert(at);
        }
        let mut superseded: HashMap<KeyId, (AgentId, i64)> = HashMap::new();
        for k in &list.superseded_keys {
            let until = k.valid_until.unix_timestamp();
            superseded
                .entry(k.key_thumbprint.clone())
                .and_modify(|(_, t)| *t = (*t).min(until))
                .or_insert_with(|| (k.agent_id.clone(), until));
        }
        Self {
            version: list.version,
            superseded,
            agents: list.revoked_agents.iter().map(|a| a.agent_id.clone()).collect(),
            suspended: list.suspended_agents.iter().map(|a| a.agent_id.clone()).collect(),
            tokens: list.revoked_aats.iter().map(|a| a.jti.clone()).collect(),
            sessions: list.revoked_sessions.iter().map(|s| s.session_id.clone()).collect(),
            users,
            delegations: list
                .revoked_delegations
                .iter()
                .map(|d| d.revocation_id.to_ascii_lowercase())
                .collect(),
        }
    }
}

impl RevocationView for RevocationIndex {
    fn is_agent_revoked(&self, agent_id: &AgentId) -> bool {
        self.agents.contains(agent_id)
    }
    fn is_token_revoked(&self, jti: &Jti) -> bool {
        self.tokens.contains(jti)
    }
    fn is_session_revoked(&self, session_id: &str) -> bool {
        self.sessions.contains(session_id)
    }
    fn user_revoked_at(&self, user_id: &str) -> Option<i64> {
        self.users.get(user_id).copied()
    }
    fn is_agent_suspended(&self, agent_id: &AgentId) -> bool {
        self.suspended.contains(agent_id)
    }
    fn is_delegation_revoked(&self, revocation_id: &str) -> bool {
        self.delegations.contains(revocation_id)
    }
    fn key_valid_until(&self, agent_id: &AgentId, thumbprint: &KeyId) -> Option<i64> {
        self.superseded
            .get(thumbprint)
            .filter(|(agent, _)| agent == agent_id)
            .map(|(_, until)| *until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyPair;

    fn list() -> RevocationList {
        let at = OffsetDateTime::from_unix_timestamp(1_760_000_000).unwrap();
        let mut list = RevocationList::empty(42, at);
        list.revoked_agents.push(RevokedAgent {
            agent_id: "ag_550e8400-e29b-41d4-a716-446655440000".parse().unwrap(),
            revoked_at: at,
            reason: Some("Security incident".into()),
        });
        list.revoked_users.push(RevokedUser {
            user_id: "alice@example.com".into(),
            revoked_at: at,
            reason: None,
        });
        list
    }

    #[test]
    fn wire_form_matches_the_spec() {
        let json = serde_json::to_value(list()).unwrap();
        assert_eq!(json["version"], 42);
        assert_eq!(json["updated_at"], "2025-10-09T08:53:20Z");
        assert_eq!(json["revoked_agents"][0]["reason"], "Security incident");
        assert_eq!(json["revoked_aats"], serde_json::json!([]));
    }

    fn signed(list: RevocationList) -> SignedRevocationList {
        let at = list.updated_at;
        SignedRevocationList::new(list, at, at + time::Duration::hours(1))
    }

    #[test]
    fn signed_round_trip_and_tamper() {
        let key = KeyPair::generate(Algorithm::EdDSA).unwrap();
        let keys = JwkSet::from_keys([key.public_key()]);
        let jws = signed(list()).sign(&key).unwrap();
        let verified = SignedRevocationList::verify(&jws, &keys).unwrap();
        assert_eq!(verified, signed(list()));
        assert!(!verified.is_expired(1_760_000_000 + 3_599));
        assert!(verified.is_expired(1_760_000_000 + 3_600));

        let mut other = signed(list());
        other.list.version = 43;
        let parts: Vec<&str> = jws.split('.').collect();
        let payload = crate::b64::encode(jcs::to_vec(&other).unwrap());
        let tampered = format!("{}.{}.{}", parts[0], payload, parts[2]);
        assert!(matches!(
            SignedRevocationList::verify(&tampered, &keys),
            Err(SignedListError::SignatureInvalid)
        ));

        let stranger = KeyPair::generate(Algorithm::EdDSA).unwrap();
        let strangers = JwkSet::from_keys([stranger.public_key()]);
        assert!(matches!(
            SignedRevocationList::verify(&jws, &strangers),
            Err(SignedListError::UnknownKey)
        ));
    }

    #[test]
    fn signed_lists_without_an_expiry_are_refused() {
        let key = KeyPair::generate(Algorithm::EdDSA).unwrap();
        let keys = JwkSet::from_keys([key.public_key()]);
        // The form an earlier registry signed: the bare list.
        let bare = jws::sign(REVOCATIONS_TYP, &jcs::to_vec(&list()).unwrap(), &key, false).unwrap();
        let error = SignedRevocationList::verify(&bare, &keys).unwrap_err();
        assert!(matches!(error, SignedListError::NoExpiry));
        assert!(error.to_string().contains("issued_at/expires_at"), "{error}");
        // Expiry before issue.
        let at = list().updated_at;
        let backwards = SignedRevocationList::new(list(), at, at - time::Duration::seconds(1));
        let error = SignedRevocationList::verify(&backwards.sign(&key).unwrap(), &keys).unwrap_err();
        assert!(matches!(error, SignedListError::NoExpiry));
    }

    #[test]
    fn signed_wire_form_is_the_list_with_issued_and_expires_at() {
        let json = serde_json::to_value(signed(list())).unwrap();
        assert_eq!(json["version"], 42);
        assert_eq!(json["issued_at"], "2025-10-09T08:53:20Z");
        assert_eq!(json["expires_at"], "2025-10-09T09:53:20Z");
        assert_eq!(json["revoked_agents"][0]["reason"], "Security incident");
    }

    #[test]
    fn superseded_keys_answer_for_their_agent_only() {
        let at = OffsetDateTime::from_unix_timestamp(1_760_000_000).unwrap();
        let agent: AgentId = "ag_770e8400-e29b-41d4-a716-446655440000".parse().unwrap();
        let other: AgentId = "ag_880e8400-e29b-41d4-a716-446655440000".parse().unwrap();
        let kid: KeyId = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs".parse().unwrap();
        let mut list = RevocationList::empty(8, at);
        list.superseded_keys.push(SupersededKey {
            agent_id: agent.clone(),
            key_thumbprint: kid.clone(),
            valid_until: at,
        });
        let index = RevocationIndex::from(&list);
        assert_eq!(index.key_valid_until(&agent, &kid), Some(1_760_000_000));
        assert_eq!(index.key_valid_until(&other, &kid), None);
        let json = serde_json::to_value(&list).unwrap();
        assert_eq!(json["superseded_keys"][0]["key_thumbprint"], kid.as_str());
        assert_eq!(json["superseded_keys"][0]["valid_until"], "2025-10-09T08:53:20Z");
    }

    #[test]
    fn index_answers_lookups() {
        let index = RevocationIndex::from(&list());
        assert!(index.is_agent_revoked(&"ag_550e8400-e29b-41d4-a716-446655440000".parse().unwrap()));
        assert_eq!(index.user_revoked_at("alice@example.com"), Some(1_760_000_000));
        assert_eq!(index.user_revoked_at("bob"), None);
        assert_eq!(index.version(), 42);
        assert!(!index.is_agent_suspended(&"ag_550e8400-e29b-41d4-a716-446655440000".parse().unwrap()));
    }

    #[test]
    fn revoked_delegations_are_looked_up_by_lowercase_revocation_id() {
        let at = OffsetDateTime::from_unix_timestamp(1_760_000_000).unwrap();
        let mut list = RevocationList::empty(9, at);
        list.revoked_delegations.push(RevokedDelegation {
            revocation_id: "AB".repeat(64),
            revoked_at: at,
            reason: Some("hand-off ended".into()),
        });
        let index = RevocationIndex::from(&list);
        assert!(index.is_delegation_revoked(&"ab".repeat(64)));
        assert!(!index.is_delegation_revoked(&"cd".repeat(64)));
        let json = serde_json::to_value(&list).unwrap();
        assert_eq!(json["revoked_delegations"][0]["reason"], "hand-off ended");
        // A list from a registry that predates them reads as none.
        let older: RevocationList = serde_json::from_value(serde_json::json!({
            "version": 1, "updated_at": "2025-10-09T08:53:20Z"
        }))
        .unwrap();
        assert!(older.revoked_delegations.is_empty());
    }

    #[test]
    fn suspended_agents_are_refused_as_inactive() {
        let at = OffsetDateTime::from_unix_timestamp(1_760_000_000).unwrap();
        let id: AgentId = "ag_660e8400-e29b-41d4-a716-446655440000".parse().unwrap();
        let mut list = RevocationList::empty(7, at);
        list.suspended_agents.push(SuspendedAgent {
            agent_id: id.clone(),
            suspended_at: at,
            reason: None,
        });
        let index = RevocationIndex::from(&list);
        assert!(index.is_agent_suspended(&id));
        assert!(!index.is_agent_revoked(&id));
        let json = serde_json::to_value(&list).unwrap();
        assert_eq!(json["suspended_agents"][0]["agent_id"], id.as_str());
    }
}
