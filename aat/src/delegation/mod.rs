//! Delegable AATs (`aat+biscuit`) and multi-hop delegation (spec D.7).
//!
//! The issuer mints the delegable form of an AAT as a biscuit whose authority block, signed by
//! one of its signing keys, carries the AAT's claims as Datalog facts ([`mint`]). The agent
//! holding it may hand part of its authority to a sub-agent without calling the issuer
//! ([`delegate`]): it appends a block naming the delegatee agent and the thumbprint of its key,
//! and narrowing tools, audience and lifetime, signed with its own agent key (a third-party
//! block). Whoever holds the result can delegate again, but only with the key of the agent the
//! last block delegated to, so a stolen token cannot be re-delegated.
//!
//! [`verify`] checks a chain end to end: the root signature against an issuer key (chosen by
//! the biscuit's root key id, [`root_key_id`]), every block's signature and signer, the
//! narrowing at every step, the depth, and the lifetimes. It answers the chain
//! ([`DelegatedAat`]): the issuer's claims, each step, and the claims the last delegatee holds
//! ([`DelegatedAat::effective_claims`]), whose `cnf.jkt` is the key that must sign its per-call
//! proofs. Revocation and registry state of the agents on the chain are the caller's to check.
//!
//! biscuit-auth brings an older generation of the RustCrypto crates; it stays inside this
//! module, and keys cross into it as bytes (the layout of the blocks: docs/decisions.md,
//! "Delegation with biscuits").

mod datalog;
mod model;

pub use crate::keys::root_key_id;
pub use model::{DelegationError, Grant, Step};

use crate::ids::AgentId;
use crate::keys::{JwkSet, Jwks, KeyPair, KeyResolver as _, PublicKey};
use crate::token::{AatClaims, AgentClaims, Audience, Confirmation};

/// The `token_format` naming a delegable AAT.
pub const TOKEN_FORMAT: &str = "aat+biscuit";
/// The deepest chain accepted by default, in principals with the user (spec D.7: user → A → B).
pub const DEFAULT_MAX_DEPTH: u8 = 3;
/// The range `delegation.max_depth` may take.
pub const MAX_DEPTH_RANGE: std::ops::RangeInclusive<u8> = 2..=4;
/// Longest delegable token accepted (base64url characters).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Whether `token` is in the delegable form: a biscuit is one base64url string, a JWT AAT
/// three separated by dots.
pub fn is_delegable(token: &str) -> bool {
    !token.is_empty() && !token.contains('.')
}

/// The roots a verifier accepts from an authority's JWKS: the keys it marks as issuer signing
/// keys (`"aip_role": "issuer"`), as [`JwkSet::delegation_root`] finds them. A set that does
/// not parse roots nothing.
pub fn issuer_roots(jwks: &Jwks) -> impl Fn(u32) -> Option<PublicKey> + use<> {
    let keys = JwkSet::from_jwks(jwks).unwrap_or_default();
    move |id| keys.delegation_root(id)
}

/// A delegable AAT whose chain verified.
#[derive(Clone, Debug)]
pub struct DelegatedAat {
    root_key: PublicKey,
    root: AatClaims,
    root_revocation_id: String,
    steps: Vec<Step>,
    effective: AatClaims,
}

impl DelegatedAat {
    /// The issuer key the token is rooted in.
    pub fn root_key(&self) -> &PublicKey {
        &self.root_key
    }

    /// The claims the issuer signed.
    pub fn root_claims(&self) -> &AatClaims {
        &self.root
    }

    /// The delegation steps, first to last (none for a token as minted).
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// What the last delegatee holds: the issuer's claims with `sub`, `agent` and `cnf` naming
    /// the last delegatee and its key, the tools, audience and expiry narrowed by every step.
    pub fn effective_claims(&self) -> &AatClaims {
        &self.effective
    }

    /// Principals on the chain, the user included (spec D.7).
    pub fn depth(&self) -> u8 {
        depth(&self.root, self.steps.len())
    }

    /// Every agent on the chain, the issuer's first.
    pub fn agents(&self) -> impl Iterator<Item = &AgentId> {
        std::iter::once(&self.root.sub).chain(self.steps.iter().map(|s| &s.delegatee))
    }

    /// The revocation ids of the blocks, in hex: the authority block's, then each step's.
    /// Revoking one revokes every token derived from it.
    pub fn revocation_ids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.root_revocation_id.as_str()).chain(self.steps.iter().map(|s| s.revocation_id.as_str()))
    }
}

/// The delegable form of the AAT `claims`, signed by `issuer` (one of the issuer's signing
/// keys, whose key id [`root_key_id`] maps): base64url.
pub fn mint(claims: &AatClaims, issuer: &KeyPair) -> Result<String, DelegationError> {
    if claims.cnf.is_none() {
        return Err(DelegationError::Build(
            "a delegable AAT must be bound to a key (`cnf.jkt`)".into(),
        ));
    }
    datalog::mint(claims, issuer, root_key_id(issuer.key_id()), None)
}

/// [`mint`] with the key the token carries for its next block chosen by the caller, so that
/// test vectors are reproducible. Never for tokens in use: that key must be fresh for each.
#[doc(hidden)]
pub fn mint_reproducibly(claims: &AatClaims, issuer: &KeyPair, next: &KeyPair) -> Result<String, DelegationError> {
    datalog::mint(claims, issuer, root_key_id(issuer.key_id()), Some(next))
}

/// [`delegate`] with the key the token carries for its next block chosen by the caller
/// ([`mint_reproducibly`]), and without the checks: test vectors include refused chains.
#[doc(hidden)]
pub fn append_reproducibly(
    token: &str,
    root_key: &dyn Fn(u32) -> Option<PublicKey>,
    delegator: &KeyPair,
    delegator_agent: &AgentId,
    step: usize,
    grant: &Grant,
    next: &KeyPair,
) -> Result<String, DelegationError> {
    datalog::append(token, root_key, delegator, delegator_agent, step, grant, Some(next))
}

/// Verifies the chain of `token` at `now`, the issuer keys found by `root_key` (the key whose
/// [`root_key_id`] is the argument, if it is an issuer signing key), with at most `max_depth`
/// principals.
pub fn verify(
    token: &str,
    root_key: &dyn Fn(u32) -> Option<PublicKey>,
    now: i64,
    max_depth: u8,
) -> Result<DelegatedAat, DelegationError> {
    check_max_depth(max_depth)?;
    if token.len() > MAX_TOKEN_LEN {
        return Err(DelegationError::Malformed(format!(
            "longer than {MAX_TOKEN_LEN} characters"
        )));
    }
    let chain = datalog::read(token, root_key, now)?;
    let root = chain.claims;
    let mut holder_agent = root.sub.clone();
    let mut holder_key = root.confirmation_thumbprint().clone();
    let mut tools = root.capabilities.tools.clone();
    let mut audience = root.aud.as_slice().to_vec();
    let mut expires_at = root.exp;
    let mut steps = Vec::with_capacity(chain.blocks.len());
    for (index, block) in chain.blocks.into_iter().enumerate() {
        let step = index + 1;
        if block.signer.thumbprint() != &holder_key {
            return Err(DelegationError::Invalid(format!(
                "step {step} is signed by another key than its delegator's ({holder_agent})"
            )));
        }
        if block.delegator != holder_agent {
            return Err(DelegationError::Invalid(format!(
                "step {step} names {} as its delegator, but {holder_agent} holds the token",
                block.delegator
            )));
        }
        narrowed(
            step,
            &block.tools,
            &tools,
            &block.audience,
            &audience,
            block.expires_at,
            expires_at,
        )?;
        holder_agent = block.delegatee.clone();
        holder_key = block.delegatee_key.clone();
        tools.clone_from(&block.tools);
        audience.clone_from(&block.audience);
        expires_at = block.expires_at;
        steps.push(Step {
            delegator: block.delegator,
            delegatee: block.delegatee,
            delegatee_key: block.delegatee_key,
            tools: block.tools,
            audience: block.audience,
            expires_at: block.expires_at,
            revocation_id: block.revocation_id,
        });
    }
    let depth = depth(&root, steps.len());
    if depth > max_depth {
        return Err(DelegationError::TooDeep { depth, max: max_depth });
    }
    if expires_at <= now {
        return Err(DelegationError::Expired);
    }
    if !chain.checks_hold {
        return Err(DelegationError::Invalid("a check of the token does not hold".into()));
    }
    let mut effective = root.clone();
    effective.sub = holder_agent.clone();
    effective.agent = AgentClaims {
        id: holder_agent,
        name: None,
        public_key_thumbprint: holder_key.clone(),
        aid_hash: None,
    };
    effective.cnf = Some(Confirmation { jkt: holder_key });
    effective.capabilities.tools = tools;
    effective.aud = Audience::many(audience).ok_or_else(|| DelegationError::Malformed("an empty audience".into()))?;
    effective.exp = expires_at;
    Ok(DelegatedAat {
        root_key: chain.root,
        root,
        root_revocation_id: chain.root_revocation_id,
        steps,
        effective,
    })
}

/// Appends the delegation `grant` to `token`, signed by `delegator`, which must hold it (its key
/// is the last delegatee's, or the issuer's agent's for a token as minted). Refused when the
/// chain does not verify at `now`, when the grant would widen anything, or when the result
/// would be deeper than `max_depth`: never clamped.
pub fn delegate(
    token: &str,
    root_key: &dyn Fn(u32) -> Option<PublicKey>,
    delegator: &KeyPair,
    grant: &Grant,
    now: i64,
    max_depth: u8,
) -> Result<String, DelegationError> {
    let chain = verify(token, root_key, now, max_depth)?;
    let holder = chain.effective_claims();
    if delegator.key_id() != holder.confirmation_thumbprint() {
        return Err(DelegationError::NotHolder(format!(
            "the token is held by {} (key {}), not by key {}",
            holder.sub,
            holder.confirmation_thumbprint(),
            delegator.key_id()
        )));
    }
    let step = chain.steps().len() + 1;
    let depth = depth(chain.root_claims(), step);
    if depth > max_depth {
        return Err(DelegationError::TooDeep { depth, max: max_depth });
    }
    if grant.tools.is_empty() || grant.audience.is_empty() {
        return Err(DelegationError::Build(
            "a delegation names at least one tool and one audience".into(),
        ));
    }
    if grant.expires_at <= now {
        return Err(DelegationError::Build(
            "the delegation would end before it starts".into(),
        ));
    }
    narrowed(
        step,
        &grant.tools,
        &holder.capabilities.tools,
        &grant.audience,
        holder.aud.as_slice(),
        grant.expires_at,
        holder.exp,
    )?;
    datalog::append(token, root_key, delegator, &holder.sub, step, grant, None)
}

/// Refuses a step that hands on more than its parent holds.
fn narrowed(
    step: usize,
    tools: &[String],
    parent_tools: &[String],
    audience: &[String],
    parent_audience: &[String],
    expires_at: i64,
    parent_expires_at: i64,
) -> Result<(), DelegationError> {
    if !tools.iter().all(|t| parent_tools.contains(t)) {
        return Err(DelegationError::Widened { step, what: "tools" });
    }
    if !audience.iter().all(|a| parent_audience.contains(a)) {
        return Err(DelegationError::Widened { step, what: "audience" });
    }
    if expires_at > parent_expires_at {
        return Err(DelegationError::Widened { step, what: "lifetime" });
    }
    Ok(())
}

/// Principals on a chain of `steps` delegations from `root`: the user (if bound), the issuer's
/// agent, and one per step.
fn depth(root: &AatClaims, steps: usize) -> u8 {
    let principals = usize::from(root.user_binding.is_some()) + 1 + steps;
    u8::try_from(principals).unwrap_or(u8::MAX)
}

fn check_max_depth(max_depth: u8) -> Result<(), DelegationError> {
    if MAX_DEPTH_RANGE.contains(&max_depth) {
        Ok(())
    } else {
        Err(DelegationError::Build(format!(
            "delegation.max_depth must be {} to {}, not {max_depth}",
            MAX_DEPTH_RANGE.start(),
            MAX_DEPTH_RANGE.end()
        )))
    }
}
