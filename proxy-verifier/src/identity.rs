//! The identity steps of tool authorization (spec 4.3 steps 0b and 0c, spec 10.3;
//! the AAT and its per-call proof, revocation, the user delegation and the session limits.
//!
//! [`Identity::check`] runs, in order:
//!
//! 1. no AAT: refused with -32015 when `aat.require`, else the call is anonymous;
//! 2. the AAT (spec 7.5.3 steps 1–6, cached by its SHA-256 once verified), the proof
//!    and, with `aat.single_use`, the AAT's own `jti` — through [`CallVerifier`];
//! 3. `aat.validation.max_token_age` against `iat`;
//! 4. revocation (step 7) against the registry data, if that data is fresh enough; otherwise
//!    `spec.server.failover_mode` decides;
//! 5. the user delegation (spec 10.3): `user_auth_stale` and a `read_only` scope against write
//!    tools;
//! 6. the AAT's `allowed_servers` and `max_calls_per_session` (also capped by the policy).
//!
//! Failures of 1–4 make the AAT invalid: refused when `aat.require`, else logged and the call is
//! evaluated as anonymous (spec 4.3 "validate opportunistically"). Failures of 5–6 concern a
//! valid AAT that does not cover this call: always refused. The capability check itself (step
//! 0c) is the engine's, fed with the [`Grant`] of the verified AAT.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use aip_aat::clock::{Clock, SystemClock};
use aip_aat::dpop::{DpopClaims, DpopRequest};
use aip_aat::jsonrpc::{CallError, ErrorCode, JsonRpcError, jsonrpc_error};
use aip_aat::keys::KeyResolver;
use aip_aat::proof::{Call, ProofError};
use aip_aat::replay::{InMemoryReplayCache, ReplayCache};
use aip_aat::revocation::RevocationIndex;
use aip_aat::token::{AatError, DelegationScope, Validation, VerifiedAat};
use aip_aat::verifier::{CallVerifier, Possession};
use serde_json::{Map, Value};

use crate::engine::Grant;
use crate::normalize::normalize;
use crate::policy::{AatSettings, CapabilitiesMode, FailOpenConstraints, FailoverMode, ServerSettings};
use crate::replay::REPLAY_CAPACITY;

/// Sessions whose call counts are kept at once.
const MAX_SESSIONS: usize = 10_000;
/// AATs remembered as already announced with an `AAT_VALIDATED` record.
const MAX_ANNOUNCED: usize = 10_000;
/// Default longest age of the user's authentication (spec 10.3).
pub const DEFAULT_MAX_AUTH_AGE_SECS: u64 = 86_400;

/// Whether revocation data may be used right now: `Err(reason)` when it is missing or stale.
/// `online` revocation fetches here.
pub type Freshness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The revocation data in force, as one consistent snapshot: taken once per check, so that
/// all its lookups see the same list.
pub type Snapshot = Arc<dyn Fn() -> Arc<RevocationIndex> + Send + Sync>;

/// Where revocation answers come from.
#[derive(Clone)]
pub struct RevocationSource {
    /// The current revocation data.
    pub snapshot: Snapshot,
    /// Whether [`RevocationSource::snapshot`] may be trusted now.
    pub fresh: Freshness,
}

impl std::fmt::Debug for RevocationSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationSource").finish_non_exhaustive()
    }
}

/// The credentials a message carried (`params._aip_aat` / `_aip_proof`, or the HTTP headers).
#[derive(Clone, Copy, Debug, Default)]
pub struct Presented<'a> {
    /// The AAT.
    pub aat: Option<&'a str>,
    /// The per-call proof.
    pub proof: Option<&'a str>,
    /// The claims of the HTTP request's DPoP proof, verified by the front door
    /// ([`Identity::verify_dpop`]); it stands for the per-call proof.
    pub dpop: Option<&'a DpopClaims>,
    /// `aat`, already verified by the front door ([`Identity::verify_token`]) for this
    /// request: the token is not verified again.
    pub verified: Option<&'a Arc<VerifiedAat>>,
}

impl Presented<'_> {
    /// How possession of the key was shown, as the audit log names it (`proof`).
    pub fn proof_kind(&self) -> Option<&'static str> {
        match (self.dpop, self.proof) {
            (Some(claims), _) if claims.is_call_bound() => Some("dpop_call"),
            (Some(_), _) => Some("dpop"),
            (None, Some(_)) => Some("call"),
            (None, None) => None,
        }
    }

    fn possession(&self) -> Possession<'_> {
        match (self.dpop, self.proof) {
            (Some(claims), _) => Possession::Dpop(claims),
            (None, Some(proof)) => Possession::Proof(proof),
            (None, None) => Possession::None,
        }
    }
}

/// The outcome of [`Identity::check`].
#[derive(Debug)]
pub enum Check {
    /// No AAT, and none is required: the policy alone decides.
    Anonymous,
    /// The AAT holds for this call.
    Verified(Verified),
    /// The AAT does not hold.
    Rejected(Rejection),
}

/// A verified AAT, as it applies to one call.
#[derive(Debug)]
pub struct Verified {
    /// The token.
    pub aat: Arc<VerifiedAat>,
    /// The first call with this token: worth an `AAT_VALIDATED` record.
    pub first_use: bool,
    /// Revocation was not checked because its data was unavailable and the failover mode
    /// (`fail_open` or `local_policy`) let the call through: the mode's name.
    pub failover: Option<&'static str>,
}

/// A refused AAT, with what is known about it.
#[derive(Debug)]
pub struct Rejection {
    /// Why.
    pub refusal: Refusal,
    /// The token, when its signature verified (so its claims can be audited).
    pub aat: Option<Arc<VerifiedAat>>,
    /// Whether the call is refused. `false` only for an invalid AAT that was not required: the
    /// call then goes on as anonymous, and the rejection is only logged.
    pub enforced: bool,
}

/// Why an AAT does not hold for a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A refusal of the toolkit's verifier (spec 11.2; docs/architecture.md, "The AAT on the wire").
    Call(CallError),
    /// The revocation data is missing or stale and `failover_mode` does not let the call pass.
    RevocationUnavailable(String),
    /// The AAT's `allowed_servers` does not name this server.
    ServerNotAllowed,
    /// The session used up its `max_calls_per_session`.
    SessionLimit(u64),
}

impl Refusal {
    /// The `aat_error` string: spec 11.2, the proof's own (docs/architecture.md, "The AAT on the wire"), and
    /// this proxy's own for the rest.
    pub fn aat_error(&self) -> Option<&'static str> {
        match self {
            Self::Call(CallError::AatRequired) => None,
            Self::Call(CallError::Aat(e)) => Some(e.aat_error()),
            Self::Call(CallError::Proof(e)) => Some(e.aat_error()),
            Self::Call(CallError::Delegation(e)) => Some(e.aat_error()),
            Self::Call(_) => None,
            Self::RevocationUnavailable(_) => Some("revocation_unavailable"),
            Self::ServerNotAllowed => Some("server_not_allowed"),
            Self::SessionLimit(_) => Some("session_call_limit"),
        }
    }

    /// The JSON-RPC error it is answered with: [`Refusal::error`]'s code without its `data`.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Self::Call(e) => e.error_code(),
            Self::RevocationUnavailable(_) => ErrorCode::AatInvalid,
            Self::ServerNotAllowed => ErrorCode::CapabilityDenied,
            Self::SessionLimit(_) => ErrorCode::RateLimited,
        }
    }

    /// The JSON-RPC error and its `data`.
    pub fn error(&self, tool: Option<&str>) -> JsonRpcError {
        let own = |reason: String, aat_error: &str| {
            let mut data = Map::new();
            if let Some(tool) = tool {
                data.insert("tool".into(), tool.into());
            }
            data.insert("reason".into(), reason.into());
            data.insert("aat_error".into(), aat_error.into());
            JsonRpcError {
                code: self.error_code(),
                data: Value::Object(data),
            }
        };
        match self {
            Self::Call(e) => jsonrpc_error(e, tool),
            Self::RevocationUnavailable(why) => own(
                format!("revocation status cannot be checked: {why}"),
                "revocation_unavailable",
            ),
            Self::ServerNotAllowed => own(
                "The AAT's allowed_servers does not include this server".into(),
                "server_not_allowed",
            ),
            Self::SessionLimit(limit) => own(format!("The session has used its {limit} calls"), "session_call_limit"),
        }
    }

    /// One line for logs and the audit `reason`.
    pub fn reason(&self) -> String {
        match self {
            Self::Call(e) => e.to_string(),
            Self::RevocationUnavailable(why) => format!("revocation status cannot be checked: {why}"),
            Self::ServerNotAllowed => "AAT allowed_servers does not include this server".into(),
            Self::SessionLimit(limit) => format!("session call limit of {limit} reached"),
        }
    }
}

impl From<CallError> for Refusal {
    fn from(e: CallError) -> Self {
        Self::Call(e)
    }
}

/// AAT verification for one proxy. Shared by both relay directions and the HTTP server.
pub struct Identity {
    settings: AatSettings,
    failover: FailoverMode,
    fail_open: FailOpenConstraints,
    verifier: CallVerifier,
    revocation: Option<RevocationSource>,
    clock: Arc<dyn Clock>,
    /// The names this server goes by in an AAT's `allowed_servers`.
    server_names: Vec<String>,
    max_auth_age: u64,
    max_token_age: i64,
    sessions: Mutex<HashMap<String, SessionCount>>,
    announced: Mutex<HashSet<[u8; 32]>>,
    failing_open: Mutex<Option<FailOpenWindow>>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("settings", &self.settings)
            .field("failover", &self.failover)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct SessionCount {
    calls: u64,
    expires: i64,
}

#[derive(Debug)]
struct FailOpenWindow {
    since: Instant,
    calls: u64,
}

impl Identity {
    /// AAT checks per `aat`, failover per `server`, issuer keys from `keys`, revocation from
    /// `revocation` (none: step 7 is skipped), used identifiers remembered by this process only.
    pub fn new(
        aat: &AatSettings,
        server: &ServerSettings,
        keys: Arc<dyn KeyResolver>,
        revocation: Option<RevocationSource>,
    ) -> Self {
        let replay = Arc::new(InMemoryReplayCache::new(REPLAY_CAPACITY));
        Self::with_clock(aat, server, keys, revocation, Arc::new(SystemClock), replay)
    }

    /// As [`Identity::new`], reading time from `clock` and recording used identifiers in
    /// `replay` (the store `aat.replay_store` names: [`crate::replay::open`]).
    pub fn with_clock(
        aat: &AatSettings,
        server: &ServerSettings,
        keys: Arc<dyn KeyResolver>,
        revocation: Option<RevocationSource>,
        clock: Arc<dyn Clock>,
        replay: Arc<dyn ReplayCache>,
    ) -> Self {
        let mut validation = Validation::new(aat.audience.clone())
            .with_leeway(aat.clock_skew.as_secs())
            .with_max_delegation_depth(aat.max_delegation_depth);
        if !aat.trusted_issuers.is_empty() {
            validation = validation.with_trusted_issuers(aat.trusted_issuers.iter().cloned());
        }
        let verifier = CallVerifier::new(validation, keys, replay)
            .with_clock(clock.clone())
            .require_proof(aat.require_proof)
            .single_use(aat.single_use);
        let mut server_names = vec![aat.audience.clone()];
        server_names.extend(aat.allowed_servers.iter().cloned());
        Self {
            failover: server.failover_mode,
            fail_open: server.fail_open.clone(),
            verifier,
            revocation,
            clock,
            server_names,
            max_auth_age: aat.max_auth_age.map_or(DEFAULT_MAX_AUTH_AGE_SECS, |d| d.as_secs()),
            max_token_age: i64::try_from(aat.max_token_age.as_secs()).unwrap_or(i64::MAX),
            sessions: Mutex::new(HashMap::new()),
            announced: Mutex::new(HashSet::new()),
            failing_open: Mutex::new(None),
            settings: aat.clone(),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &AatSettings {
        &self.settings
    }

    /// The AAT alone (signature, issuer, time, audience, `max_token_age`; not revocation): what
    /// the HTTP front door checks before reading the request, answering a failure with 401 so
    /// that the client fetches a new token.
    pub fn verify_token(&self, token: &str) -> Result<Arc<VerifiedAat>, AatError> {
        let aat = self.verifier.verify_token(token)?;
        if self.clock.now().saturating_sub(aat.claims().iat) > self.max_token_age {
            return Err(AatError::Expired);
        }
        Ok(aat)
    }

    /// The DPoP proof of an HTTP request carrying `aat` (RFC 9449), its `jti` recorded in the
    /// shared replay store: the claims to present with the call ([`Presented::dpop`]).
    pub fn verify_dpop(
        &self,
        aat: &VerifiedAat,
        proof: &str,
        request: &DpopRequest<'_>,
    ) -> Result<DpopClaims, ProofError> {
        self.verifier.verify_dpop(aat, proof, request)
    }

    /// Checks the credentials presented with `call`.
    pub fn check(&self, presented: Presented<'_>, call: &Call<'_>) -> Check {
        let Some(token) = presented.aat else {
            if self.settings.require {
                return Check::Rejected(Rejection {
                    refusal: Refusal::Call(CallError::AatRequired),
                    aat: None,
                    enforced: true,
                });
            }
            return Check::Anonymous;
        };
        let invalid = |refusal: Refusal, aat: Option<Arc<VerifiedAat>>| {
            Check::Rejected(Rejection {
                refusal,
                aat,
                enforced: self.settings.require,
            })
        };
        let checked = match presented.verified {
            Some(verified) => self
                .verifier
                .check_call(Arc::clone(verified), presented.possession(), call),
            None => self.verifier.verify_call(Some(token), presented.possession(), call),
        };
        let aat = match checked {
            Ok(aat) => aat,
            Err(e) => return invalid(e.into(), None),
        };
        let now = self.clock.now();
        if now.saturating_sub(aat.claims().iat) > self.max_token_age {
            return invalid(CallError::Aat(AatError::Expired).into(), Some(aat));
        }
        let failover = match self.revocation_gate(&aat, call.tool) {
            Ok(failover) => failover,
            Err(refusal) => return invalid(refusal, Some(aat)),
        };
        // From here on the AAT is valid; what fails is its coverage of this call.
        let uncovered = |refusal: Refusal, aat: Arc<VerifiedAat>| {
            Check::Rejected(Rejection {
                refusal,
                aat: Some(aat),
                enforced: true,
            })
        };
        if let Err(refusal) = self.check_delegation(&aat, call, now) {
            return uncovered(refusal, aat);
        }
        let servers = &aat.claims().capabilities.allowed_servers;
        if !servers.is_empty() && !servers.iter().any(|s| self.server_names.contains(s)) {
            return uncovered(Refusal::ServerNotAllowed, aat);
        }
        if call.method == "tools/call"
            && let Err(refusal) = self.count_call(&aat)
        {
            return uncovered(refusal, aat);
        }
        let first_use = self.announce(&aat);
        Check::Verified(Verified {
            aat,
            first_use,
            failover,
        })
    }

    /// Step 7 when the revocation data is fresh; otherwise the failover mode decides.
    fn revocation_gate(&self, aat: &VerifiedAat, tool: &str) -> Result<Option<&'static str>, Refusal> {
        let Some(source) = &self.revocation else {
            return Ok(None);
        };
        match (source.fresh)() {
            Ok(()) => {
                *self.failing_open.lock().unwrap_or_else(PoisonError::into_inner) = None;
                let snapshot = (source.snapshot)();
                aat.check_revocation(&*snapshot, self.clock.now())
                    .map_err(|e| Refusal::Call(CallError::Aat(e)))?;
                Ok(None)
            }
            Err(why) => match self.failover {
                FailoverMode::FailClosed => Err(Refusal::RevocationUnavailable(why)),
                FailoverMode::LocalPolicy => {
                    tracing::warn!("revocation status unavailable ({why}): local_policy failover");
                    Ok(Some("local_policy"))
                }
                FailoverMode::FailOpen => self.fail_open(tool, why).map(|()| Some("fail_open")),
            },
        }
    }

    /// `fail_open` within `fail_open_constraints`: listed tools only, for a bounded time and
    /// number of calls counted from the first failure.
    fn fail_open(&self, tool: &str, why: String) -> Result<(), Refusal> {
        let limits = &self.fail_open;
        let tool = normalize(tool);
        if !limits.allowed_tools.is_empty() && !limits.allowed_tools.iter().any(|t| *t == tool) {
            return Err(Refusal::RevocationUnavailable(format!(
                "{why}; fail_open does not cover this tool"
            )));
        }
        let mut window = self.failing_open.lock().unwrap_or_else(PoisonError::into_inner);
        let window = window.get_or_insert_with(|| {
            tracing::warn!("revocation status unavailable ({why}): failing open");
            FailOpenWindow {
                since: Instant::now(),
                calls: 0,
            }
        });
        if limits.max_duration.is_some_and(|max| window.since.elapsed() > max) {
            return Err(Refusal::RevocationUnavailable(format!(
                "{why}; fail_open max_duration is over"
            )));
        }
        if limits.max_requests.is_some_and(|max| window.calls >= max) {
            return Err(Refusal::RevocationUnavailable(format!(
                "{why}; fail_open max_requests is used up"
            )));
        }
        window.calls += 1;
        Ok(())
    }

    /// Spec 10.3 steps 2–4 for an AAT bound to a user (an autonomous agent's AAT has no binding).
    fn check_delegation(&self, aat: &VerifiedAat, call: &Call<'_>, now: i64) -> Result<(), Refusal> {
        if !self.settings.verify_user_binding || aat.claims().user_binding.is_none() {
            return Ok(());
        }
        aat.check_user_binding(now, self.max_auth_age)
            .map_err(|e| Refusal::Call(e.into()))?;
        let write = call.method == "tools/call" && is_write_operation(call.tool);
        aat.check_delegation_scope(write).map_err(|e| Refusal::Call(e.into()))
    }

    /// Counts a tool call against the session's limit: the AAT's `max_calls_per_session`,
    /// capped by the policy's.
    fn count_call(&self, aat: &VerifiedAat) -> Result<(), Refusal> {
        let limit = match (
            aat.claims().capabilities.max_calls_per_session,
            self.settings.max_calls_per_session,
        ) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return Ok(()),
        };
        let claims = aat.claims();
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        if sessions.len() >= MAX_SESSIONS && !sessions.contains_key(&claims.context.session_id) {
            let now = self.clock.now();
            sessions.retain(|_, s| s.expires >= now);
            if sessions.len() >= MAX_SESSIONS {
                return Err(Refusal::SessionLimit(limit));
            }
        }
        let count = sessions
            .entry(claims.context.session_id.clone())
            .or_insert(SessionCount {
                calls: 0,
                expires: claims.exp,
            });
        count.expires = count.expires.max(claims.exp);
        if count.calls >= limit {
            return Err(Refusal::SessionLimit(limit));
        }
        count.calls += 1;
        Ok(())
    }

    /// Whether this is the first time the AAT is seen (bounded memory: forgets when full).
    fn announce(&self, aat: &VerifiedAat) -> bool {
        let mut seen = self.announced.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.contains(aat.token_hash()) {
            return false;
        }
        if seen.len() >= MAX_ANNOUNCED {
            seen.clear();
        }
        seen.insert(*aat.token_hash())
    }
}

/// Whether a tool changes something, for `read_only` delegations (spec 10.3 step 4). The spec
/// leaves the classification to implementations; a tool counts as a read only when its name's
/// first word is a read verb (`read_file`, `list_directory`, `get_file_info`, `search_files`,
/// `directory_tree`…). Everything else is treated as a write.
pub fn is_write_operation(tool: &str) -> bool {
    const READ_WORDS: &[&str] = &[
        "read",
        "get",
        "list",
        "search",
        "find",
        "view",
        "show",
        "describe",
        "fetch",
        "query",
        "lookup",
        "stat",
        "count",
        "directory",
    ];
    let normalized = normalize(tool);
    let first = normalized.split(['_', '-', '.', '/']).next().unwrap_or("");
    let read = READ_WORDS.contains(&first)
        // `directory_tree` reads; `directory_create` would not.
        && (first != "directory" || normalized == "directory_tree");
    !read
}

/// The capabilities a verified AAT brings to evaluation (spec 4.3 step 0c).
pub(crate) fn grant_of<'a>(aat: &'a VerifiedAat, identity: &Identity) -> Grant<'a> {
    let settings = identity.settings();
    Grant {
        agent_id: aat.agent_id().as_str(),
        capabilities: &aat.claims().capabilities.tools,
        mode: if settings.verify_capabilities {
            settings.capabilities_mode
        } else {
            CapabilitiesMode::PolicyOnly
        },
    }
}

/// For the record of a token that failed validation: the agent and `jti` it *claims*, read
/// from its payload without checking anything, and marked `claims_unverified`. Never used for a
/// decision; values longer than 128 characters are left out.
pub fn unverified_audit_fields(token: &str, record: &mut crate::audit::Record) {
    #[derive(serde::Deserialize)]
    struct Claims {
        jti: Option<String>,
        agent: Option<Agent>,
    }
    #[derive(serde::Deserialize)]
    struct Agent {
        id: Option<String>,
    }
    use base64::Engine as _;
    const MAX_PAYLOAD: usize = 16 << 10;
    let short = |v: Option<String>| v.filter(|v| v.chars().count() <= 128);
    let Some(payload) = token.split('.').nth(1).filter(|p| p.len() <= MAX_PAYLOAD) else {
        return;
    };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload) else {
        return;
    };
    let Ok(claims) = serde_json::from_slice::<Claims>(&bytes) else {
        return;
    };
    let agent_id = short(claims.agent.and_then(|a| a.id));
    let jti = short(claims.jti);
    if agent_id.is_some() || jti.is_some() {
        record.agent_id = agent_id;
        record.aat_jti = jti;
        record.claims_unverified = Some(true);
    }
}

/// The audit fields of spec 10.4 / 12.2 for a verified AAT: never the token or the proof.
pub fn audit_fields(aat: &VerifiedAat, record: &mut crate::audit::Record) {
    let claims = aat.claims();
    record.agent_id = Some(claims.agent.id.to_string());
    record.agent_name.clone_from(&claims.agent.name);
    record.aat_jti = Some(claims.jti.to_string());
    record.aat_issuer = Some(claims.iss.clone());
    record.session_id = Some(claims.context.session_id.clone());
    if let Some(binding) = &claims.user_binding {
        record.user_id = Some(binding.user_id.clone());
        record.user_auth_method = Some(binding.auth_method.as_str().to_owned());
        record.delegation_scope = binding
            .delegation_scope
            .as_ref()
            .map(DelegationScope::as_str)
            .map(str::to_owned);
    }
    if let Some(chain) = aat.delegation() {
        record.delegation_chain = Some(chain.agents.iter().map(|(agent, _)| agent.to_string()).collect());
        record.delegation_revocation_ids = Some(chain.revocation_ids.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_verbs_are_reads_and_the_rest_writes() {
        for read in [
            "read_file",
            "read_text_file",
            "list_directory",
            "get_file_info",
            "search_files",
            "directory_tree",
            "list_allowed_directories",
        ] {
            assert!(!is_write_operation(read), "{read}");
        }
        for write in [
            "write_file",
            "edit_file",
            "create_directory",
            "move_file",
            "delete_file",
            "directory_create",
            "readme_update",
            "",
        ] {
            assert!(is_write_operation(write), "{write}");
        }
    }
}
