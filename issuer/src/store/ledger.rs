//! [`Ledger`]: the group commit of token issuances. Callers queue issuances (and denial
//! records) and wait for the transaction that holds theirs to commit: each issuance is still
//! all-or-nothing, and acknowledged only once committed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use aip_aat::ids::AgentId;
use aip_db::audit::AuditEntry;
use aip_db::{DbError, Lock, Script, Write, backend};
use sqlx::Row;
use tokio::sync::{mpsc, oneshot};

use super::base::IssuerStore;
use super::sessions::SessionRecord;
use crate::challenge::OpenedChallenge;
use crate::directory::StandingCheck;

/// An AAT to record in the issuance log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedToken {
    /// `jti`.
    pub jti: String,
    /// The agent.
    pub agent_id: AgentId,
    /// The user.
    pub user_id: Option<String>,
    /// The session.
    pub session_id: String,
    /// Signing key.
    pub kid: String,
    /// `iat`.
    pub issued_at: i64,
    /// `exp`.
    pub expires_at: i64,
}

/// What an issuance does to its session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionChange {
    /// Starts a session, with its first refresh token unless the grant gives none.
    New {
        /// The session.
        session: SessionRecord,
        /// SHA-256 of the refresh token handed out, if one is.
        refresh_digest: Option<String>,
    },
    /// Exchanges a refresh token for the next one.
    Refresh {
        /// The session.
        session_id: String,
        /// SHA-256 of the refresh token presented.
        presented: String,
        /// SHA-256 of the refresh token handed out.
        next: String,
    },
}

/// What a single-use value is, so that a replay is reported for what it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OnceKind {
    /// A challenge of `POST /v1/challenge`.
    Challenge,
    /// A client assertion's `jti` (`private_key_jwt`).
    ClientAssertion,
    /// A DPoP proof's `jti`.
    DpopProof,
    /// An authorization code.
    AuthorizationCode,
    /// An identity assertion grant's (ID-JAG's) `jti`.
    IdentityGrant,
}

impl OnceKind {
    fn prefix(self) -> &'static str {
        match self {
            Self::Challenge => "challenge",
            Self::ClientAssertion => "assertion",
            Self::DpopProof => "dpop",
            Self::AuthorizationCode => "code",
            Self::IdentityGrant => "id-jag",
        }
    }
}

/// A value accepted once: recorded as used (in `used_challenges`, until `expires_at`) in the
/// transaction of the issuance that presents it, so a second use fails on any replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SingleUse {
    /// What it is.
    pub kind: OnceKind,
    /// The stored id.
    pub id: String,
    /// Until when a use must be remembered (the value's own expiry).
    pub expires_at: i64,
}

impl SingleUse {
    /// A value of `kind` named by `parts` (e.g. the client and its assertion's `jti`, which
    /// only the client's own key vouches for): stored as a digest under the kind, so values of
    /// different kinds and clients never collide and nothing the client chose is stored.
    pub fn of(kind: OnceKind, parts: &[&str], expires_at: i64) -> Self {
        use sha2::{Digest as _, Sha256};
        let mut digest = Sha256::new();
        for part in parts {
            digest.update(part.as_bytes());
            digest.update([0]);
        }
        Self {
            kind,
            id: format!("{}:{}", kind.prefix(), hex::encode(digest.finalize())),
            expires_at,
        }
    }
}

impl From<OpenedChallenge> for SingleUse {
    fn from(challenge: OpenedChallenge) -> Self {
        // Challenges are issued here and unique by construction: stored as they are.
        Self {
            kind: OnceKind::Challenge,
            id: challenge.id,
            expires_at: challenge.expires_at,
        }
    }
}

/// One token issuance for the [`Ledger`].
#[derive(Clone, Debug)]
pub struct Issuance {
    /// The single-use values presented (a challenge; or a client assertion, a DPoP proof, an
    /// authorization code or an identity grant); all recorded as used, or the issuance refused.
    pub single_use: Vec<SingleUse>,
    /// The token.
    pub token: IssuedToken,
    /// Its session.
    pub session: SessionChange,
    /// The audit record of the issuance.
    pub audit: AuditEntry,
}

/// Why the ledger refused an issuance (nothing of it was written).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// A single-use value (the first of them found used) was presented before.
    #[error("a single-use value was already used")]
    Replayed(OnceKind),
    /// The user was revoked.
    #[error("the user's authorization was revoked")]
    UserRevoked,
    /// The agent was suspended.
    #[error("the agent is suspended")]
    AgentSuspended,
    /// The agent was revoked.
    #[error("the agent is revoked")]
    AgentRevoked,
    /// The refresh token was exchanged before: the session must be revoked.
    #[error("the refresh token was already used")]
    RefreshReused,
    /// The session was revoked or ended.
    #[error("the session was revoked or has ended")]
    SessionEnded,
}

/// What the ledger answers for one operation.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Refused; a denial was audited when `audit_denial` was set.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The database failed; nothing was written.
    #[error(transparent)]
    Store(#[from] DbError),
}

enum Op {
    Issue(Box<Issuance>, oneshot::Sender<Result<(), LedgerError>>),
    Audit(AuditEntry, i64, oneshot::Sender<Result<(), LedgerError>>),
}

impl IssuerStore {
    /// Records `once` as used outside an issuance (a client assertion presented to the
    /// introspection or revocation endpoint); `false` when it was used before, here or on any
    /// replica.
    pub async fn use_once(&self, once: &SingleUse) -> Result<bool, DbError> {
        let done = sqlx::query(
            "INSERT INTO used_challenges (challenge_id, expires_at) VALUES ($1, $2) ON CONFLICT (challenge_id) DO NOTHING",
        )
        .bind(&once.id)
        .bind(once.expires_at)
        .execute(self.db.writer())
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }

    /// Commits a batch in a fixed number of round trips (plus two per refresh): each issuance
    /// is applied or refused on its own (a refused one writes nothing but, for refusals of the
    /// agent's standing or of a refresh, the use of its single-use values), every applied one and every
    /// denial is audited, and all of it commits together. `standing`, when the registry shares
    /// the database, re-checks the agents under the lock.
    async fn commit_batch(
        &self,
        ops: &[&Op],
        standing: Option<&dyn StandingCheck>,
    ) -> Result<Vec<Result<(), Refusal>>, DbError> {
        let issuances: Vec<(usize, &Issuance)> = ops
            .iter()
            .enumerate()
            .filter_map(|(i, op)| match op {
                Op::Issue(issuance, _) => Some((i, &**issuance)),
                Op::Audit(..) => None,
            })
            .collect();
        let mut outcomes: Vec<Result<(), Refusal>> = vec![Ok(()); ops.len()];

        // 1. With the lock: the suspended and revoked agents, the revoked users, and the
        // single-use values used here for the first time ever (a revoked user's are not used
        // up). Every suspension and revocation takes the same lock, so whatever any replica
        // acknowledged before is seen here.
        let claim = self.claim(&issuances, standing);
        let (mut w, rows) = self.db.write_with(Lock::batch(), claim).await?;
        let mut revoked = HashSet::new();
        let mut claimed = HashSet::new();
        let mut inactive = HashMap::new();
        for row in rows {
            let kind: String = row.try_get("kind").map_err(backend)?;
            let value: String = row.try_get("value").map_err(backend)?;
            match kind.as_str() {
                "revoked" => revoked.insert(value),
                "claimed" => claimed.insert(value),
                "agent_suspended" => inactive.insert(value, Refusal::AgentSuspended).is_none(),
                "agent_revoked" => inactive.insert(value, Refusal::AgentRevoked).is_none(),
                _ => return Err(DbError::Corrupt("claim row")),
            };
        }
        // 2. Each single-use value goes to the first issuance in the batch that presented it.
        for (i, issuance) in &issuances {
            if let Some(refusal) = inactive.get(issuance.token.agent_id.as_str()) {
                outcomes[*i] = Err(refusal.clone());
            } else if issuance.token.user_id.as_ref().is_some_and(|u| revoked.contains(u)) {
                outcomes[*i] = Err(Refusal::UserRevoked);
            } else if let Some(used) = issuance.single_use.iter().find(|once| !claimed.contains(&once.id)) {
                outcomes[*i] = Err(Refusal::Replayed(used.kind));
            } else {
                for once in &issuance.single_use {
                    claimed.remove(&once.id);
                }
            }
        }

        // 3. Refreshes: the session must be live and the presented token unused.
        for (i, issuance) in &issuances {
            if outcomes[*i].is_err() {
                continue;
            }
            if let SessionChange::Refresh {
                session_id, presented, ..
            } = &issuance.session
            {
                outcomes[*i] = Self::exchange(&mut w, session_id, presented, issuance.token.issued_at).await?;
            }
        }

        // 4. What the applied issuances create, their audit records and the denials', in queue
        // order, and the new chain head: one round trip.
        let applied: Vec<&Issuance> = issuances
            .iter()
            .filter(|(i, _)| outcomes[*i].is_ok())
            .map(|(_, issuance)| *issuance)
            .collect();
        let mut writes = Script::new(self.db.dialect());
        Self::insert_issuances(&mut writes, &applied);
        let mut records = Vec::new();
        for (op, outcome) in ops.iter().zip(&outcomes) {
            match op {
                Op::Issue(issuance, _) if outcome.is_ok() => records.push((&issuance.audit, issuance.token.issued_at)),
                Op::Issue(..) => {}
                Op::Audit(entry, at, _) => records.push((entry, *at)),
            }
        }
        w.audit_in(&mut writes, &records)?;

        // 5. How long each signing key must stay published: written when it moves by more than
        // a minute (well inside the publication margin), not on every batch.
        let mut last_expiry: HashMap<&str, i64> = HashMap::new();
        for issuance in &applied {
            let last = last_expiry.entry(issuance.token.kid.as_str()).or_insert(0);
            *last = (*last).max(issuance.token.expires_at);
        }
        let mut written = self.key_expiry.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for (kid, expiry) in last_expiry {
            if written.get(kid).is_some_and(|w| *w + 60 >= expiry) {
                continue;
            }
            let (until, key, later) = (writes.param(), writes.param(), writes.param());
            writes.push(format!(
                "UPDATE issuer_keys SET last_expiry = {until} WHERE kid = {key} AND last_expiry < {later}"
            ));
            writes.bind(expiry + 60).bind(kid).bind(expiry + 60);
            written.insert(kid.to_owned(), expiry + 60);
        }
        // The new length of the audit chain is recorded in the same round trip.
        w.commit_with(writes).await?;
        *self.key_expiry.lock().unwrap_or_else(PoisonError::into_inner) = written;
        Ok(outcomes)
    }

    /// The statements that find the batch's inactive agents (with `standing`) and revoked
    /// users and use up its single-use values, each row a `kind` (`agent_suspended`, `agent_revoked`,
    /// `revoked` or `claimed`) and a `value` (the agent, the user or the single-use value).
    fn claim(&self, issuances: &[(usize, &Issuance)], standing: Option<&dyn StandingCheck>) -> Script {
        let mut claim = Script::new(self.db.dialect());
        if let Some(standing) = standing {
            let agents: HashSet<&str> = issuances.iter().map(|(_, x)| x.token.agent_id.as_str()).collect();
            let agents: Vec<&str> = agents.into_iter().collect();
            standing.push(&mut claim, &agents);
        }
        let users: HashSet<&str> = issuances
            .iter()
            .filter_map(|(_, x)| x.token.user_id.as_deref())
            .collect();
        if !users.is_empty() {
            let list = claim.values(1, users.len());
            claim.push(format!(
                "SELECT CAST('revoked' AS TEXT) AS kind, user_id AS value FROM user_revocations WHERE user_id IN {list}"
            ));
            for user in users {
                claim.bind(user);
            }
        }
        let presented: Vec<(&SingleUse, Option<&str>)> = issuances
            .iter()
            .flat_map(|(_, x)| x.single_use.iter().map(|once| (once, x.token.user_id.as_deref())))
            .collect();
        if !presented.is_empty() {
            let values = claim.values(presented.len(), 3);
            let verb = self.db.dialect().insert_verb();
            // Duplicates within the batch are skipped like any other conflict.
            claim.push(format!(
                "WITH v (challenge_id, expires_at, user_id) AS (VALUES {values}) \
                 {verb} used_challenges (challenge_id, expires_at) SELECT challenge_id, expires_at FROM v \
                 WHERE NOT EXISTS (SELECT 1 FROM user_revocations r WHERE r.user_id = v.user_id) \
                 ON CONFLICT (challenge_id) DO NOTHING \
                 RETURNING CAST('claimed' AS TEXT) AS kind, challenge_id AS value"
            ));
            for (once, user_id) in presented {
                claim.bind(&once.id).bind(once.expires_at).bind(user_id);
            }
        }
        claim
    }

    /// Adds the sessions, refresh tokens and issuance-log rows of `applied` to `writes`.
    fn insert_issuances(writes: &mut Script, applied: &[&Issuance]) {
        let sessions: Vec<&SessionRecord> = applied
            .iter()
            .filter_map(|x| match &x.session {
                SessionChange::New { session, .. } => Some(session),
                SessionChange::Refresh { .. } => None,
            })
            .collect();
        if !sessions.is_empty() {
            writes.insert_values(
                "sessions (session_id, agent_id, user_id, auth_method, auth_time, delegation_scope, \
                 audience, capabilities, created_at, expires_at)",
                sessions.len(),
                10,
            );
            for session in &sessions {
                writes
                    .bind(&session.session_id)
                    .bind(session.agent_id.as_str())
                    .bind(session.user_id.as_deref())
                    .bind(session.auth_method.as_deref())
                    .bind(session.auth_time)
                    .bind(session.delegation_scope.as_deref())
                    .bind(&session.audience)
                    .bind(&session.capabilities)
                    .bind(session.created_at)
                    .bind(session.expires_at);
            }
        }
        if applied.is_empty() {
            return;
        }
        let refresh: Vec<(&String, &Issuance)> = applied
            .iter()
            .filter_map(|issuance| match &issuance.session {
                SessionChange::New { refresh_digest, .. } => refresh_digest.as_ref().map(|d| (d, *issuance)),
                SessionChange::Refresh { next, .. } => Some((next, *issuance)),
            })
            .collect();
        if !refresh.is_empty() {
            writes.insert_values("refresh_tokens (digest, session_id, created_at)", refresh.len(), 3);
            for (digest, issuance) in refresh {
                writes
                    .bind(digest)
                    .bind(&issuance.token.session_id)
                    .bind(issuance.token.issued_at);
            }
        }
        writes.insert_values(
            "issued_tokens (jti, agent_id, user_id, session_id, kid, issued_at, expires_at)",
            applied.len(),
            7,
        );
        for issuance in applied {
            let token = &issuance.token;
            writes
                .bind(&token.jti)
                .bind(token.agent_id.as_str())
                .bind(token.user_id.as_deref())
                .bind(&token.session_id)
                .bind(&token.kid)
                .bind(token.issued_at)
                .bind(token.expires_at);
        }
    }

    /// Marks a refresh token used, if its session is live and it was not used before.
    async fn exchange(
        w: &mut Write,
        session_id: &str,
        presented: &str,
        at: i64,
    ) -> Result<Result<(), Refusal>, DbError> {
        let live = sqlx::query(
            "SELECT 1 AS live FROM sessions WHERE session_id = $1 AND revoked_at IS NULL AND expires_at > $2",
        )
        .bind(session_id)
        .bind(at)
        .fetch_optional(w.conn())
        .await
        .map_err(backend)?;
        if live.is_none() {
            return Ok(Err(Refusal::SessionEnded));
        }
        let exchanged = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $1 WHERE digest = $2 AND session_id = $3 AND used_at IS NULL",
        )
        .bind(at)
        .bind(presented)
        .bind(session_id)
        .execute(w.conn())
        .await
        .map_err(backend)?
        .rows_affected();
        Ok(if exchanged == 0 {
            Err(Refusal::RefreshReused)
        } else {
            Ok(())
        })
    }
}

/// Most operations committed in one transaction.
const MAX_BATCH: usize = 256;

/// Group commit of issuances and denial records: callers queue operations and wait for the
/// transaction that holds theirs to commit.
#[derive(Clone, Debug)]
pub struct Ledger {
    queue: mpsc::Sender<Op>,
}

impl Ledger {
    /// Starts the writer task over `store`; `standing` re-checks agents under the lock.
    pub fn start(store: IssuerStore, standing: Option<Arc<dyn StandingCheck>>) -> Self {
        let (queue, mut incoming) = mpsc::channel::<Op>(4 * MAX_BATCH);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while incoming.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let ops: Vec<&Op> = batch.iter().collect();
                let result = store.commit_batch(&ops, standing.as_deref()).await;
                match result {
                    Ok(outcomes) => {
                        for (op, outcome) in batch.drain(..).zip(outcomes) {
                            reply(op, outcome.map_err(LedgerError::from));
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = ?e, operations = batch.len(), "issuance batch failed; retrying one by one");
                        // One bad operation must not fail its neighbours: retry each alone.
                        for op in batch.drain(..) {
                            let outcome = store.commit_batch(&[&op], standing.as_deref()).await;
                            let outcome = match outcome {
                                Ok(mut outcomes) => outcomes.pop().unwrap_or(Ok(())).map_err(LedgerError::from),
                                Err(e) => Err(LedgerError::Store(e)),
                            };
                            reply(op, outcome);
                        }
                    }
                }
            }
        });
        Self { queue }
    }

    async fn submit(&self, op: Op, done: oneshot::Receiver<Result<(), LedgerError>>) -> Result<(), LedgerError> {
        let closed = || LedgerError::Store(DbError::Corrupt("the issuance writer stopped"));
        self.queue.send(op).await.map_err(|_| closed())?;
        match tokio::time::timeout(Duration::from_secs(30), done).await {
            Ok(Ok(outcome)) => outcome,
            _ => Err(closed()),
        }
    }

    /// Records an issuance; returns once it is committed, or why it was refused.
    pub async fn issue(&self, issuance: Issuance) -> Result<(), LedgerError> {
        let (tx, rx) = oneshot::channel();
        self.submit(Op::Issue(Box::new(issuance), tx), rx).await
    }

    /// Appends an audit record (a denial) through the same group commit.
    pub async fn audit(&self, entry: AuditEntry, at: i64) -> Result<(), LedgerError> {
        let (tx, rx) = oneshot::channel();
        self.submit(Op::Audit(entry, at, tx), rx).await
    }
}

fn reply(op: Op, outcome: Result<(), LedgerError>) {
    let sender = match op {
        Op::Issue(_, sender) | Op::Audit(_, _, sender) => sender,
    };
    // The caller may have given up waiting; the outcome is committed regardless.
    let _ = sender.send(outcome);
}
