//! Per-call verification as a proxy runs it: the AAT (cached once verified), revocation,
//! the agent's registry record, the per-call proof, and replay protection.
//!
//! In the steady state — the same AAT on call after call — a call costs one SHA-256 of the
//! token, a cache lookup, the revocation and agent-record lookups, and one proof verification
//! (a signature check over ~300 bytes plus the canonical hash of the arguments).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use sha2::{Digest, Sha256};

use crate::clock::{Clock, SystemClock};
use crate::dpop::{DpopClaims, DpopError, DpopRequest, verify_dpop_proof, verify_dpop_proof_by};
use crate::jsonrpc::{CallError, DelegationError};
use crate::keys::KeyResolver;
use crate::proof::{Call, ProofError, ProofMismatch, ProofValidation, verify_proof};
use crate::replay::{ReplayCache, ReplayScope};
use crate::token::{AatError, DelegationChain, DelegationScope, UnverifiedAat, UserBinding, Validation, VerifiedAat};
use crate::validate::{AgentRecords, RevocationView};

/// Default number of verified AATs kept.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;

/// How a call shows that its sender holds the key the AAT is bound to.
#[derive(Clone, Copy, Debug)]
pub enum Possession<'a> {
    /// Nothing was presented.
    None,
    /// A per-call proof (`_aip_proof`, `X-AIP-Proof`), checked by [`CallVerifier::verify_call`].
    Proof(&'a str),
    /// The claims of the HTTP request's DPoP proof, already checked with
    /// [`CallVerifier::verify_dpop`]; [`CallVerifier::verify_call`] checks its call binding,
    /// when it has one.
    Dpop(&'a DpopClaims),
}

/// Verifies the identity part of every tool call. Cheap to share behind an `Arc`.
pub struct CallVerifier {
    validation: Validation,
    proof_validation: ProofValidation,
    keys: Arc<dyn KeyResolver>,
    clock: Arc<dyn Clock>,
    revocation: Option<Arc<dyn RevocationView>>,
    agents: Option<Arc<dyn AgentRecords>>,
    replay: Arc<dyn ReplayCache>,
    require_proof: bool,
    single_use: bool,
    cache: AatCache,
}

impl CallVerifier {
    /// A verifier requiring a proof on every call, without registry checks, on the system
    /// clock. Proofs must name the same audience as the AAT.
    pub fn new(validation: Validation, keys: Arc<dyn KeyResolver>, replay: Arc<dyn ReplayCache>) -> Self {
        let proof_validation = ProofValidation::new(validation.audience()).with_algorithms(validation.algorithms());
        Self {
            validation,
            proof_validation,
            keys,
            clock: Arc::new(SystemClock),
            revocation: None,
            agents: None,
            replay,
            require_proof: true,
            single_use: false,
            cache: AatCache::new(DEFAULT_CACHE_CAPACITY),
        }
    }

    /// Reads time from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Checks revocation on every call (spec 7.5.3 step 7).
    pub fn with_revocation(mut self, view: Arc<dyn RevocationView>) -> Self {
        self.revocation = Some(view);
        self
    }

    /// Checks the agent's registry record on every call (step 8).
    pub fn with_agent_records(mut self, agents: Arc<dyn AgentRecords>) -> Self {
        self.agents = Some(agents);
        self
    }

    /// Whether a proof is required (default `true`). A proof that is present is always checked.
    pub fn require_proof(mut self, required: bool) -> Self {
        self.require_proof = required;
        self
    }

    /// Applies step 9 to the AAT's own `jti`: each AAT is accepted once (`aat.single_use`).
    pub fn single_use(mut self, single_use: bool) -> Self {
        self.single_use = single_use;
        self
    }

    /// Keeps at most `capacity` verified AATs.
    pub fn with_cache_capacity(mut self, capacity: usize) -> Self {
        self.cache = AatCache::new(capacity);
        self
    }

    /// The AAT settings.
    pub fn validation(&self) -> &Validation {
        &self.validation
    }

    /// Forgets every cached AAT (e.g. after the trusted key set changed).
    pub fn clear_cache(&self) {
        self.cache.clear();
    }

    /// Verifies the AAT and proof presented with `call`.
    pub fn verify(
        &self,
        aat: Option<&str>,
        proof: Option<&str>,
        call: &Call<'_>,
    ) -> Result<Arc<VerifiedAat>, CallError> {
        let possession = proof.map_or(Possession::None, Possession::Proof);
        self.verify_call(aat, possession, call)
    }

    /// Verifies the AAT presented with `call` and the sender's possession of its key.
    pub fn verify_call(
        &self,
        aat: Option<&str>,
        possession: Possession<'_>,
        call: &Call<'_>,
    ) -> Result<Arc<VerifiedAat>, CallError> {
        let token = aat.ok_or(CallError::AatRequired)?;
        let verified = self.verify_token_at(token, self.clock.now())?;
        self.check_call(verified, possession, call)
    }

    /// What [`CallVerifier::verify_call`] checks after the token itself, for a token that
    /// [`CallVerifier::verify_token`] just verified: revocation and the agent's record (when
    /// configured), possession of the key, and single use.
    pub fn check_call(
        &self,
        verified: Arc<VerifiedAat>,
        possession: Possession<'_>,
        call: &Call<'_>,
    ) -> Result<Arc<VerifiedAat>, CallError> {
        let now = self.clock.now();
        if let Some(view) = &self.revocation {
            verified.check_revocation(&**view, now)?;
        }
        if let Some(agents) = &self.agents {
            verified.check_agent(&**agents, now)?;
        }
        match possession {
            Possession::Proof(proof) => {
                verify_proof(proof, &verified, call, &self.proof_validation, &*self.replay, now)?;
            }
            Possession::Dpop(claims) => claims.binds(call).map_err(ProofError::Mismatch)?,
            Possession::None if self.require_proof => return Err(ProofError::Missing.into()),
            Possession::None => {}
        }
        if self.single_use {
            verified.record_jti(&*self.replay, now, &self.validation)?;
        }
        Ok(verified)
    }

    /// The AAT alone (spec 7.5.3 steps 1–6), from the cache when it was verified before: what
    /// an HTTP front door checks before it reads the request, so that a token a client must
    /// replace is answered at the HTTP level.
    pub fn verify_token(&self, token: &str) -> Result<Arc<VerifiedAat>, AatError> {
        self.verify_token_at(token, self.clock.now())
    }

    fn verify_token_at(&self, token: &str, now: i64) -> Result<Arc<VerifiedAat>, AatError> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(cached) = self.cache.get(&hash)
            && self.still_valid(&cached, now)
        {
            return Ok(cached);
        }
        let fresh = if crate::delegation::is_delegable(token) {
            self.verify_delegated(token, hash, now)
        } else {
            UnverifiedAat::parse_hashed(token, hash).and_then(|t| t.verify(&*self.keys, &*self.clock, &self.validation))
        };
        match fresh {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                self.cache.insert(hash, fresh.clone(), now, &self.validation);
                Ok(fresh)
            }
            Err(e) => {
                self.cache.remove(&hash);
                Err(e)
            }
        }
    }

    /// A delegable AAT (`aat+biscuit`): its chain against the issuer keys the resolver publishes
    /// as roots ([`KeyResolver::delegation_root`]), then what its last delegatee holds as a JWT
    /// AAT's claims are checked. Proofs must then be by the last delegatee's key (`cnf.jkt`), and
    /// the registry checks cover every agent on the chain ([`VerifiedAat::delegation`]).
    fn verify_delegated(&self, token: &str, hash: [u8; 32], now: i64) -> Result<VerifiedAat, AatError> {
        let roots = |id: u32| self.keys.delegation_root(id);
        let chain =
            crate::delegation::verify(token, &roots, now, self.validation.max_delegation_depth()).map_err(|e| {
                AatError::Delegation {
                    code: e.aat_error(),
                    reason: e.to_string(),
                }
            })?;
        let root = chain.root_claims();
        let agents = std::iter::once((root.sub.clone(), root.confirmation_thumbprint().clone()))
            .chain(
                chain
                    .steps()
                    .iter()
                    .map(|s| (s.delegatee.clone(), s.delegatee_key.clone())),
            )
            .collect();
        let links = DelegationChain {
            agents,
            revocation_ids: chain.revocation_ids().map(str::to_owned).collect(),
            depth: chain.depth(),
        };
        VerifiedAat::delegated(
            chain.effective_claims().clone(),
            chain.root_key().clone(),
            hash,
            links,
            now,
            &self.validation,
        )
    }

    /// A DPoP proof (RFC 9449) of the HTTP `request` that carries `aat`: well formed, signed by
    /// the key the AAT is bound to (`cnf.jkt`), for this method, URI and token, recent, and
    /// never seen before (its `jti` is recorded last, so refused proofs take no room). Its call
    /// binding, if any, is checked later against the call ([`Possession::Dpop`]).
    pub fn verify_dpop(
        &self,
        aat: &VerifiedAat,
        proof: &str,
        request: &DpopRequest<'_>,
    ) -> Result<DpopClaims, ProofError> {
        let now = self.clock.now();
        // After the first proof, the key the AAT is bound to is kept on it: later proofs are
        // checked against it without parsing their `jwk` again.
        let verified = match aat.bound_key().get() {
            Some(key) => verify_dpop_proof_by(proof, request, now, key),
            None => verify_dpop_proof(proof, request, now),
        };
        let verified = verified.map_err(|e| match e {
            DpopError::Mismatch("access token") => ProofError::Mismatch(ProofMismatch::Token),
            DpopError::Mismatch("HTTP method") => ProofError::Mismatch(ProofMismatch::HttpMethod),
            DpopError::Mismatch(_) => ProofError::Mismatch(ProofMismatch::Url),
            DpopError::Malformed(why) => ProofError::Invalid(why),
            DpopError::BadSignature => ProofError::Invalid("signature does not verify"),
            DpopError::Stale => ProofError::Invalid("proof is too old or from the future"),
        })?;
        if verified.jkt != *aat.confirmation_thumbprint() {
            return Err(ProofError::Mismatch(ProofMismatch::Key));
        }
        let _ = aat.bound_key().set(verified.key);
        let expires = verified.claims.iat.saturating_add(crate::dpop::MAX_DPOP_AGE_SECS);
        self.replay
            .check_and_record(ReplayScope::Dpop, &verified.claims.jti, expires, now)
            .map_err(ProofError::from)?;
        Ok(verified.claims)
    }

    /// A cached AAT is reused while inside its time window and while its issuer still
    /// publishes the key that verified it.
    fn still_valid(&self, aat: &VerifiedAat, now: i64) -> bool {
        aat.check_time(now, &self.validation).is_ok()
            && self
                .keys
                .resolve(&aat.claims().iss, aat.key_id())
                .is_some_and(|k| k == *aat.issuer_key())
    }
}

impl VerifiedAat {
    /// Spec 10.3 steps 2–3: the AAT must bind a user who authenticated within
    /// `max_auth_age_secs` of `now`.
    pub fn check_user_binding(&self, now: i64, max_auth_age_secs: u64) -> Result<&UserBinding, DelegationError> {
        let binding = self
            .claims()
            .user_binding
            .as_ref()
            .ok_or(DelegationError::MissingUserBinding)?;
        if now.saturating_sub(binding.auth_time) > i64::try_from(max_auth_age_secs).unwrap_or(i64::MAX) {
            return Err(DelegationError::UserAuthStale {
                auth_time: binding.auth_time,
                max_auth_age: max_auth_age_secs,
            });
        }
        Ok(binding)
    }

    /// Spec 10.3 step 4: a `read_only` delegation does not cover write operations.
    pub fn check_delegation_scope(&self, is_write_operation: bool) -> Result<(), DelegationError> {
        let read_only = self
            .claims()
            .user_binding
            .as_ref()
            .is_some_and(|b| b.delegation_scope == Some(DelegationScope::ReadOnly));
        if read_only && is_write_operation {
            Err(DelegationError::ScopeExceeded)
        } else {
            Ok(())
        }
    }

    /// The tool must be among `capabilities.tools`.
    pub fn check_tool(&self, tool: &str) -> Result<(), CallError> {
        let capabilities = &self.claims().capabilities;
        if capabilities.allows_tool(tool) {
            return Ok(());
        }
        Err(CallError::CapabilityDenied {
            agent_id: self.agent_id().to_string(),
            granted: capabilities.tools.clone(),
        })
    }
}

/// Verified AATs by the SHA-256 of their compact form.
struct AatCache {
    entries: RwLock<HashMap<[u8; 32], Arc<VerifiedAat>>>,
    capacity: usize,
}

impl AatCache {
    fn new(capacity: usize) -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    fn get(&self, hash: &[u8; 32]) -> Option<Arc<VerifiedAat>> {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(hash)
            .cloned()
    }

    fn insert(&self, hash: [u8; 32], aat: Arc<VerifiedAat>, now: i64, validation: &Validation) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity && !entries.contains_key(&hash) {
            entries.retain(|_, cached| cached.check_time(now, validation).is_ok());
            if entries.len() >= self.capacity {
                // Still full of live tokens: drop an arbitrary one; it is only re-verified.
                if let Some(victim) = entries.keys().next().copied() {
                    entries.remove(&victim);
                }
            }
        }
        entries.insert(hash, aat);
    }

    fn remove(&self, hash: &[u8; 32]) {
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(hash);
    }

    fn clear(&self) {
        self.entries.write().unwrap_or_else(PoisonError::into_inner).clear();
    }
}
