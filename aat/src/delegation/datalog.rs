//! The biscuit side of delegation: the blocks written, read back through biscuit's own
//! authorizer, and keys crossing between the two cryptography generations as bytes.
//!
//! Authority block (signed by the issuer key, root key id = [`super::root_key_id`]):
//! `aat_version`, `issuer`, `agent`, `agent_key`, `jkt`, `session`, `jti`, `issued_at`,
//! `expires`, one `tool` and one `audience` per value, `user`, `user_auth_method`,
//! `user_auth_time`, `delegation_scope` when a user is bound, `claims` (the AAT's claims as
//! JSON, which the verifier reads), and `check if time($time), $time < expires`.
//!
//! Delegation block `n` (a third-party block signed by the delegator's agent key):
//! `delegation(n, delegator, delegatee, delegatee_key, expires)`, one `delegated_tool(n, …)`
//! and `delegated_audience(n, …)` per value, and the same time check. Facts of a third-party
//! block are only visible to rules that trust its signer, so a block cannot add to what the
//! authority block grants.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use biscuit_auth::builder::{self, Algorithm as Curve, AuthorizerBuilder, BlockBuilder, Rule, Term};
use biscuit_auth::datalog::SymbolTable;
use biscuit_auth::error::{Format, Token as BiscuitError};
use biscuit_auth::{AuthorizerLimits, Biscuit, KeyPair as BiscuitKeyPair, PrivateKey, PublicKey as BiscuitKey};
use serde::Serialize;

use super::model::{DelegationError, Grant};
use crate::ids::{AgentId, KeyId};
use crate::keys::{Algorithm, KeyPair, PublicKey};
use crate::token::AatClaims;

/// A delegation block as written, before the chain's rules are applied to it.
pub(super) struct Block {
    /// The key that signed it.
    pub(super) signer: PublicKey,
    pub(super) delegator: AgentId,
    pub(super) delegatee: AgentId,
    pub(super) delegatee_key: KeyId,
    pub(super) tools: Vec<String>,
    pub(super) audience: Vec<String>,
    pub(super) expires_at: i64,
    pub(super) revocation_id: String,
}

/// A biscuit read back: the issuer's claims and the delegation blocks, in order.
pub(super) struct Chain {
    pub(super) claims: AatClaims,
    pub(super) root_revocation_id: String,
    pub(super) blocks: Vec<Block>,
    /// The issuer key the token is rooted in.
    pub(super) root: PublicKey,
    /// Whether every block's checks hold at the time given (the lifetimes, and any check a
    /// delegator added).
    pub(super) checks_hold: bool,
}

/// Limits of one evaluation: the token's size bounds its facts; this bounds the work.
fn limits() -> AuthorizerLimits {
    AuthorizerLimits {
        max_facts: 10_000,
        max_iterations: 100,
        max_time: Duration::from_millis(200),
    }
}

/// The delegable form of `claims`, signed by `issuer` under `root_id`; `next` is the key the
/// token carries for its next block (drawn fresh when `None`).
pub(super) fn mint(
    claims: &AatClaims,
    issuer: &KeyPair,
    root_id: u32,
    next: Option<&KeyPair>,
) -> Result<String, DelegationError> {
    let build = |e: BiscuitError| DelegationError::Build(e.to_string());
    let root = BiscuitKeyPair::from(&private_key(issuer)?);
    let json = serde_json::to_string(claims).map_err(|e| DelegationError::Build(e.to_string()))?;
    let mut facts = vec![
        fact("aat_version", [string(&claims.aat_version)]),
        fact("issuer", [string(&claims.iss)]),
        fact("agent", [string(claims.sub.as_str())]),
        fact("agent_key", [string(claims.agent.public_key_thumbprint.as_str())]),
        fact("jkt", [string(claims.confirmation_thumbprint().as_str())]),
        fact("session", [string(&claims.context.session_id)]),
        fact("jti", [string(claims.jti.as_str())]),
        fact("issued_at", [date(claims.iat)?]),
        fact("expires", [date(claims.exp)?]),
        fact("claims", [string(&json)]),
    ];
    facts.extend(claims.capabilities.tools.iter().map(|t| fact("tool", [string(t)])));
    facts.extend(claims.aud.as_slice().iter().map(|a| fact("audience", [string(a)])));
    if let Some(user) = &claims.user_binding {
        facts.push(fact("user", [string(&user.user_id)]));
        facts.push(fact("user_auth_method", [string(&text(&user.auth_method))]));
        facts.push(fact("user_auth_time", [date(user.auth_time)?]));
        if let Some(scope) = &user.delegation_scope {
            facts.push(fact("delegation_scope", [string(&text(scope))]));
        }
    }
    let mut token = Biscuit::builder().root_key_id(root_id);
    for f in facts {
        token = token.fact(f).map_err(build)?;
    }
    let token = token
        .code_with_params(EXPIRY_CHECK, expiry_param(claims.exp)?, HashMap::new())
        .map_err(build)?;
    let token = match next {
        Some(next) => {
            let next = BiscuitKeyPair::from(&private_key(next)?);
            token.build_with_key_pair(&root, SymbolTable::default(), &next)
        }
        None => token.build(&root),
    }
    .map_err(build)?;
    token.to_base64().map_err(build)
}

/// `token` with the delegation block of step `step` (from `delegator_agent`, granting `grant`)
/// appended, signed by `delegator`; `next` as for [`mint`].
pub(super) fn append(
    token: &str,
    root_key: &dyn Fn(u32) -> Option<PublicKey>,
    delegator: &KeyPair,
    delegator_agent: &AgentId,
    step: usize,
    grant: &Grant,
    next: Option<&KeyPair>,
) -> Result<String, DelegationError> {
    let build = |e: BiscuitError| DelegationError::Build(e.to_string());
    let (biscuit, _) = parse(token, root_key)?;
    let index = i64::try_from(step).map_err(|_| DelegationError::Build("too many steps".into()))?;
    let mut block = BlockBuilder::new()
        .fact(fact(
            "delegation",
            [
                Term::Integer(index),
                string(delegator_agent.as_str()),
                string(grant.delegatee.as_str()),
                string(grant.delegatee_key.as_str()),
                date(grant.expires_at)?,
            ],
        ))
        .map_err(build)?;
    for tool in &grant.tools {
        block = block
            .fact(fact("delegated_tool", [Term::Integer(index), string(tool)]))
            .map_err(build)?;
    }
    for audience in &grant.audience {
        block = block
            .fact(fact("delegated_audience", [Term::Integer(index), string(audience)]))
            .map_err(build)?;
    }
    let block = block
        .code_with_params(EXPIRY_CHECK, expiry_param(grant.expires_at)?, HashMap::new())
        .map_err(build)?;
    let private = private_key(delegator)?;
    let signed = biscuit
        .third_party_request()
        .and_then(|request| request.create_block(&private, block))
        .map_err(build)?;
    match next {
        Some(next) => {
            let next = BiscuitKeyPair::from(&private_key(next)?);
            biscuit.append_third_party_with_keypair(private.public(), signed, next)
        }
        None => biscuit.append_third_party(private.public(), signed),
    }
    .and_then(|b| b.to_base64())
    .map_err(build)
}

/// Reads `token`: every signature checked (the root against `root_key`), the claims of the
/// authority block, each later block's delegation, and whether the checks of every block hold
/// at `now`.
pub(super) fn read(
    token: &str,
    root_key: &dyn Fn(u32) -> Option<PublicKey>,
    now: i64,
) -> Result<Chain, DelegationError> {
    let (biscuit, root) = parse(token, root_key)?;
    let malformed = |e: BiscuitError| DelegationError::Malformed(e.to_string());
    let mut authorizer = AuthorizerBuilder::new()
        .fact(fact("time", [date(now)?]))
        .and_then(|a| a.policy("allow if true"))
        .map_err(malformed)?
        .set_limits(limits())
        .build(&biscuit)
        .map_err(malformed)?;

    let claims: Vec<(String,)> = authorizer.query("data($c) <- claims($c)").map_err(malformed)?;
    let [(claims,)] = claims.as_slice() else {
        return Err(DelegationError::Malformed(
            "the authority block must carry the AAT's claims once".into(),
        ));
    };
    let claims: AatClaims = crate::json::from_slice(claims.as_bytes())
        .map_err(|e| DelegationError::Malformed(format!("the AAT's claims: {e}")))?;
    claims
        .check_consistency()
        .map_err(|why| DelegationError::Malformed(why.into()))?;

    let revocation_ids: Vec<String> = biscuit.revocation_identifiers().iter().map(hex::encode).collect();
    let signers = biscuit.external_public_keys();
    let mut blocks = Vec::with_capacity(signers.len().saturating_sub(1));
    for (step, signer) in signers.into_iter().enumerate().skip(1) {
        let Some(signer) = signer else {
            return Err(DelegationError::Invalid(format!(
                "block {step} is not a delegation signed by its delegator"
            )));
        };
        blocks.push(read_block(&mut authorizer, step, signer, &revocation_ids)?);
    }
    let checks_hold = authorizer.authorize().is_ok();
    Ok(Chain {
        claims,
        root_revocation_id: revocation_ids.first().cloned().unwrap_or_default(),
        blocks,
        root,
        checks_hold,
    })
}

/// The delegation of block `step`, read with the facts its signer wrote.
fn read_block(
    authorizer: &mut biscuit_auth::Authorizer,
    step: usize,
    signer: BiscuitKey,
    revocation_ids: &[String],
) -> Result<Block, DelegationError> {
    let malformed = |e: BiscuitError| DelegationError::Malformed(e.to_string());
    let index = i64::try_from(step).map_err(|_| DelegationError::Malformed("too many blocks".into()))?;
    let trusting = |source: &str| -> Result<Rule, DelegationError> {
        let mut rule = Rule::try_from(source).map_err(malformed)?;
        rule.set_scope("signer", signer).map_err(malformed)?;
        Ok(rule)
    };
    let delegations: Vec<(i64, String, String, String, SystemTime)> = authorizer
        .query(trusting(
            "data($n, $from, $to, $key, $exp) <- delegation($n, $from, $to, $key, $exp) trusting {signer}",
        )?)
        .map_err(malformed)?;
    let mut delegations = delegations.into_iter().filter(|d| d.0 == index);
    let (Some((_, delegator, delegatee, delegatee_key, expires)), None) = (delegations.next(), delegations.next())
    else {
        return Err(DelegationError::Invalid(format!(
            "block {step} must carry exactly one delegation"
        )));
    };
    let tools: Vec<(i64, String)> = authorizer
        .query(trusting("data($n, $t) <- delegated_tool($n, $t) trusting {signer}")?)
        .map_err(malformed)?;
    let audience: Vec<(i64, String)> = authorizer
        .query(trusting(
            "data($n, $a) <- delegated_audience($n, $a) trusting {signer}",
        )?)
        .map_err(malformed)?;
    let of_step = |facts: Vec<(i64, String)>| -> Vec<String> {
        let mut values: Vec<String> = facts.into_iter().filter(|f| f.0 == index).map(|f| f.1).collect();
        values.sort_unstable();
        values.dedup();
        values
    };
    Ok(Block {
        signer: public_key(signer)
            .map_err(|why| DelegationError::Invalid(format!("block {step} is signed by an unusable key: {why}")))?,
        delegator: parse_id(step, "delegator", &delegator)?,
        delegatee: parse_id(step, "delegatee", &delegatee)?,
        delegatee_key: parse_id(step, "delegatee key", &delegatee_key)?,
        tools: of_step(tools),
        audience: of_step(audience),
        expires_at: unix(expires),
        revocation_id: revocation_ids.get(step).cloned().unwrap_or_default(),
    })
}

/// An identifier a block names.
fn parse_id<T: std::str::FromStr>(step: usize, what: &str, value: &str) -> Result<T, DelegationError> {
    value
        .parse()
        .map_err(|_| DelegationError::Malformed(format!("block {step}: {what} {value:?} is not valid")))
}

/// Parses `token`, checking every signature; the root key is chosen by its root key id.
fn parse(token: &str, root_key: &dyn Fn(u32) -> Option<PublicKey>) -> Result<(Biscuit, PublicKey), DelegationError> {
    let chosen = std::cell::RefCell::new(None);
    let provider = |id: Option<u32>| -> Result<BiscuitKey, Format> {
        let key = id.and_then(root_key).ok_or(Format::UnknownPublicKey)?;
        let converted = biscuit_public_key(&key).map_err(|_| Format::UnknownPublicKey)?;
        *chosen.borrow_mut() = Some(key);
        Ok(converted)
    };
    let biscuit = Biscuit::from_base64(token, provider).map_err(|e| match e {
        BiscuitError::Format(Format::UnknownPublicKey) => DelegationError::UnknownRoot,
        BiscuitError::Format(Format::Signature(_)) => DelegationError::Invalid("a signature does not verify".into()),
        other => DelegationError::Malformed(other.to_string()),
    })?;
    let root = chosen.into_inner().ok_or(DelegationError::UnknownRoot)?;
    Ok((biscuit, root))
}

/// The lifetime check every block carries.
const EXPIRY_CHECK: &str = "check if time($time), $time < {expires}";

fn expiry_param(expires_at: i64) -> Result<HashMap<String, Term>, DelegationError> {
    Ok(HashMap::from([("expires".to_owned(), date(expires_at)?)]))
}

fn fact<const N: usize>(name: &str, terms: [Term; N]) -> builder::Fact {
    builder::fact(name, &terms)
}

fn string(value: &str) -> Term {
    Term::Str(value.to_owned())
}

fn date(unix: i64) -> Result<Term, DelegationError> {
    u64::try_from(unix)
        .map(Term::Date)
        .map_err(|_| DelegationError::Build(format!("time {unix} is before 1970")))
}

fn unix(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The JSON string a claim value serializes to.
fn text<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

fn curve(alg: Algorithm) -> Curve {
    match alg {
        Algorithm::EdDSA => Curve::Ed25519,
        Algorithm::ES256 => Curve::Secp256r1,
    }
}

fn private_key(key: &KeyPair) -> Result<PrivateKey, DelegationError> {
    PrivateKey::from_bytes(&key.secret_bytes()[..], curve(key.algorithm()))
        .map_err(|e| DelegationError::Build(format!("the key cannot sign biscuit blocks: {e}")))
}

fn biscuit_public_key(key: &PublicKey) -> Result<BiscuitKey, Format> {
    BiscuitKey::from_bytes(&key.to_raw_bytes(), curve(key.algorithm()))
}

fn public_key(key: BiscuitKey) -> Result<PublicKey, String> {
    let alg = match key.algorithm() {
        biscuit_auth::format::schema::public_key::Algorithm::Ed25519 => Algorithm::EdDSA,
        biscuit_auth::format::schema::public_key::Algorithm::Secp256r1 => Algorithm::ES256,
    };
    PublicKey::from_raw(alg, &key.to_bytes()).map_err(|e| e.to_string())
}
