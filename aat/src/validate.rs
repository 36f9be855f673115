//! The complete AAT validation algorithm of spec 7.5.3, over injected views of the
//! registry, so the same code runs in a proxy (cached revocation list), an issuer (its own
//! store) and tests.
//!
//! | step | check                    | where                                   |
//! |------|--------------------------|-----------------------------------------|
//! | 1    | structure                | [`UnverifiedAat::parse`]                |
//! | 2–6  | version … audience       | [`UnverifiedAat::verify`]               |
//! | 7    | revocation               | [`VerifiedAat::check_revocation`]       |
//! | 8    | agent identity           | [`VerifiedAat::check_agent`]            |
//! | 9    | `jti` uniqueness         | [`VerifiedAat::record_jti`]             |
//!
//! [`validate_aat`] runs them all, in order. The traits are synchronous: they answer from
//! memory. Components that must fetch (JWKS on an unknown `kid`, online revocation) refresh
//! their state and call again.

use crate::aid::AgentStatus;
use crate::clock::Clock;
use crate::ids::{AgentId, Jti, KeyId};
use crate::keys::KeyResolver;
use crate::replay::{ReplayCache, ReplayError, ReplayScope};
use crate::token::{AatError, RevokedBy, UnverifiedAat, Validation, VerifiedAat};

/// What the registry has revoked (spec 8.3.3 plus users; docs/architecture.md, "Revocation publication").
pub trait RevocationView: Send + Sync {
    /// The agent is revoked.
    fn is_agent_revoked(&self, agent_id: &AgentId) -> bool;
    /// The token with this `jti` is revoked.
    fn is_token_revoked(&self, jti: &Jti) -> bool;
    /// The session is revoked.
    fn is_session_revoked(&self, session_id: &str) -> bool;
    /// When the user's delegation was revoked: every AAT of the user issued at or before
    /// this Unix time is revoked (spec 10.5).
    fn user_revoked_at(&self, user_id: &str) -> Option<i64>;
    /// The agent is suspended (published with the revocation list, so that verifiers without
    /// per-call registry lookups still refuse it). Defaults to `false`.
    fn is_agent_suspended(&self, _agent_id: &AgentId) -> bool {
        false
    }
    /// The block of delegable AATs with this revocation id (lowercase hex) is revoked.
    /// Defaults to `false`.
    fn is_delegation_revoked(&self, _revocation_id: &str) -> bool {
        false
    }
    /// When the agent's key with this thumbprint stops being accepted, if a rotation replaced
    /// it (spec 8.3.4): the end of its grace period, in Unix time. Defaults to `None`.
    fn key_valid_until(&self, _agent_id: &AgentId, _thumbprint: &KeyId) -> Option<i64> {
        None
    }
}

/// An agent as the registry knows it (spec 7.5.3 step 8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentRecord {
    /// Current status.
    pub status: AgentStatus,
    /// Thumbprint of the current key.
    pub public_key_thumbprint: KeyId,
    /// Keys replaced by a rotation, accepted until their grace period ends (spec 8.3.4).
    pub previous_keys: Vec<PreviousKey>,
}

/// A rotated-out agent key still inside its grace period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreviousKey {
    /// Its thumbprint.
    pub thumbprint: KeyId,
    /// Unix time after which it is no longer accepted.
    pub valid_until: i64,
}

impl AgentRecord {
    /// Whether `thumbprint` is the agent's key at `now` (current, or previous within grace).
    pub fn accepts_key(&self, thumbprint: &KeyId, now: i64) -> bool {
        self.public_key_thumbprint == *thumbprint
            || self
                .previous_keys
                .iter()
                .any(|k| k.thumbprint == *thumbprint && now <= k.valid_until)
    }
}

/// The registry's agent records, as validation step 8 reads them.
pub trait AgentRecords: Send + Sync {
    /// The agent's record, or `None` when it is not registered.
    fn agent(&self, agent_id: &AgentId) -> Option<AgentRecord>;
}

impl VerifiedAat {
    /// Step 7: refuses the token if its user's delegation (for tokens issued at or before the
    /// revocation), it, its session or its agent is revoked. The user comes first: revoking a
    /// user also lists their tokens and sessions, and the refusal must say the delegation was
    /// revoked (-32019, spec 10.5 and 11). An agent the view reports suspended is refused as
    /// `agent_inactive`, and a token bound to a key that a rotation replaced, once the key's
    /// grace period has ended at `now`, as `agent_key_mismatch` — as step 8 would.
    pub fn check_revocation(&self, view: &dyn RevocationView, now: i64) -> Result<(), AatError> {
        let c = self.claims();
        let revoked_by = if c
            .user_binding
            .as_ref()
            .and_then(|u| view.user_revoked_at(&u.user_id))
            .is_some_and(|at| c.iat <= at)
        {
            RevokedBy::User
        } else if view.is_token_revoked(&c.jti) {
            RevokedBy::Token
        } else if view.is_session_revoked(&c.context.session_id) {
            RevokedBy::Session
        } else if view.is_agent_revoked(&c.agent.id) {
            RevokedBy::Agent
        } else if view.is_agent_suspended(&c.agent.id) {
            return Err(AatError::AgentInactive(AgentStatus::Suspended));
        } else if view
            .key_valid_until(&c.agent.id, c.confirmation_thumbprint())
            .is_some_and(|until| now > until)
        {
            return Err(AatError::AgentKeyMismatch);
        } else {
            return self.check_chain_revocation(view, now);
        };
        Err(AatError::Revoked(revoked_by))
    }

    /// For a delegable AAT, every block on its chain not revoked by its revocation id, and
    /// every agent before the last holder as step 7 checks that holder: not revoked or
    /// suspended, and still holding the key it delegated with.
    fn check_chain_revocation(&self, view: &dyn RevocationView, now: i64) -> Result<(), AatError> {
        let Some(chain) = self.delegation() else {
            return Ok(());
        };
        if chain.revocation_ids.iter().any(|id| view.is_delegation_revoked(id)) {
            return Err(AatError::Revoked(RevokedBy::Delegation));
        }
        for (agent, key) in self.delegators() {
            if view.is_agent_revoked(agent) {
                return Err(AatError::Revoked(RevokedBy::Agent));
            }
            if view.is_agent_suspended(agent) {
                return Err(AatError::AgentInactive(AgentStatus::Suspended));
            }
            if view.key_valid_until(agent, key).is_some_and(|until| now > until) {
                return Err(AatError::AgentKeyMismatch);
            }
        }
        Ok(())
    }

    /// Step 8: the agent must be registered, hold the key the token names, and be active; for
    /// a delegable AAT, every agent on its chain, with the key it delegated with.
    pub fn check_agent(&self, agents: &dyn AgentRecords, now: i64) -> Result<(), AatError> {
        let agent = &self.claims().agent;
        check_agent_record(agents, &agent.id, &agent.public_key_thumbprint, now)?;
        for (agent, key) in self.delegators() {
            check_agent_record(agents, agent, key, now)?;
        }
        Ok(())
    }

    /// Step 9: records the token's `jti`, refusing a second use. Only for single-use AATs
    /// (`aat.single_use`); per-call proofs carry their own `jti` otherwise.
    pub fn record_jti(&self, replay: &dyn ReplayCache, now: i64, validation: &Validation) -> Result<(), AatError> {
        let until = self
            .claims()
            .exp
            .saturating_add(i64::try_from(validation.leeway()).unwrap_or(0));
        replay
            .check_and_record(ReplayScope::Aat, self.jti().as_str(), until, now)
            .map_err(|e| match e {
                // A full or unreachable store cannot prove the jti is fresh: refuse, as for a replay.
                ReplayError::Replayed | ReplayError::Full | ReplayError::Unavailable => AatError::ReplayDetected,
            })
    }
}

impl VerifiedAat {
    /// For a delegable AAT, the agents on its chain before the last holder (whom the claims
    /// name, and the checks above cover), with the keys they delegated with.
    fn delegators(&self) -> &[(AgentId, KeyId)] {
        self.delegation()
            .and_then(|d| d.agents.split_last())
            .map_or(&[], |(_, before)| before)
    }
}

/// `agent_id` is registered, holds `key` at `now`, and is active.
fn check_agent_record(agents: &dyn AgentRecords, agent_id: &AgentId, key: &KeyId, now: i64) -> Result<(), AatError> {
    let record = agents.agent(agent_id).ok_or_else(|| AatError::UnknownAgent {
        agent_id: agent_id.to_string(),
    })?;
    if !record.accepts_key(key, now) {
        return Err(AatError::AgentKeyMismatch);
    }
    if record.status != AgentStatus::Active {
        return Err(AatError::AgentInactive(record.status));
    }
    Ok(())
}

/// Everything validation consults besides the token and the [`Validation`] settings.
#[derive(Clone, Copy)]
pub struct ValidationContext<'a> {
    /// Issuer keys by `kid` (step 4).
    pub keys: &'a dyn KeyResolver,
    /// The current time (step 5, grace periods).
    pub clock: &'a dyn Clock,
    /// Revocation data; `None` when no registry is configured (step 7 skipped).
    pub revocation: Option<&'a dyn RevocationView>,
    /// Agent records; `None` when no registry is configured (step 8 skipped).
    pub agents: Option<&'a dyn AgentRecords>,
    /// Used-`jti` store; `None` unless AATs are single-use (step 9 skipped).
    pub replay: Option<&'a dyn ReplayCache>,
}

impl<'a> ValidationContext<'a> {
    /// A context with keys and a clock only: steps 1–6.
    pub fn new(keys: &'a dyn KeyResolver, clock: &'a dyn Clock) -> Self {
        Self {
            keys,
            clock,
            revocation: None,
            agents: None,
            replay: None,
        }
    }
}

/// Spec 7.5.3 steps 1–9, in order. Steps 7–9 run when the context provides their data.
pub fn validate_aat(
    token: &str,
    validation: &Validation,
    ctx: &ValidationContext<'_>,
) -> Result<VerifiedAat, AatError> {
    let aat = UnverifiedAat::parse(token)?.verify(ctx.keys, ctx.clock, validation)?;
    if let Some(view) = ctx.revocation {
        aat.check_revocation(view, ctx.clock.now())?;
    }
    let now = ctx.clock.now();
    if let Some(agents) = ctx.agents {
        aat.check_agent(agents, now)?;
    }
    if let Some(replay) = ctx.replay {
        aat.record_jti(replay, now, validation)?;
    }
    Ok(aat)
}
