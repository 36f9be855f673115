//! What the registry publishes: the revocation list (JSON with its version and ETag, and
//! signed), the X.509 CRL, the event stream and the background work that feeds it, the JWKS
//! and the discovery document.

use std::future::Future;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use aip_aat::aid::AID_VERSION;
use aip_aat::keys::{Algorithm, ISSUER_ROLE, Jwks, REGISTRY_ROLE};
use aip_aat::revocation::SignedRevocationList;
use aip_api::registry::{Discovery, PublishRevocationsRequest};
use aip_db::audit::AuditEntry;
use serde_json::json;
use tokio::sync::broadcast;

use super::checks::{check_name_field, check_reason};
use super::error::RegistryError;
use super::principal::Principal;
use super::state::{PublishedList, Registry, SignedList};
use crate::metrics as m;
use crate::store::{StoredCrl, StoredEvent};

/// The most entries one `POST /v1/revocations` may list.
pub const MAX_REVOCATION_ENTRIES: usize = 100_000;

/// The `issued_at` of a signed copy of a list last changed at `updated_at`, signed at `now`
/// with `validity` seconds of validity: the start of the current half-validity window (windows
/// counted from the Unix epoch), or the list's change if that came later. A copy signed in a
/// window thus expires at least half a validity after the window ends, and replicas that sign
/// the same list within the same window agree on its times.
fn signing_window(now: i64, updated_at: i64, validity: i64) -> i64 {
    let half = (validity / 2).max(1);
    let window_start = now - now.rem_euclid(half);
    window_start.max(updated_at.min(now))
}

fn unix_to_datetime(at: i64) -> Result<time::OffsetDateTime, RegistryError> {
    time::OffsetDateTime::from_unix_timestamp(at).map_err(RegistryError::internal)
}

impl Registry {
    /// The revocation list and its JSON, for the current version.
    pub async fn published_list(&self) -> Result<Arc<PublishedList>, RegistryError> {
        let version = self.store.revocation_version().await?;
        if let Some(cached) = self.published.lock().unwrap_or_else(PoisonError::into_inner).as_ref()
            && cached.version >= version
        {
            return Ok(cached.clone());
        }
        let list = self.store.revocation_list(self.clock.now()).await?;
        let json = serde_json::to_vec(&list).map_err(RegistryError::internal)?;
        let published = Arc::new(PublishedList {
            version: list.version,
            etag: format!("\"{}\"", list.version),
            json,
            list,
        });
        metrics::gauge!(m::REVOCATION_VERSION).set(published.version as f64);
        let mut cache = self.published.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.as_ref().is_none_or(|c| c.version < published.version) {
            *cache = Some(published.clone());
        }
        Ok(published)
    }

    /// The signed copy of the current list (`GET /v1/revocations.jws`): signed anew when the
    /// list changed or half of `revocation_list_validity` has passed, so a copy fetched at any
    /// time has at least half of it left. Its `issued_at` depends only on the list and the
    /// time (its signing window), so every replica signs the same list at the same time
    /// with the same `issued_at` and `expires_at`.
    pub async fn signed_list(&self) -> Result<Arc<SignedList>, RegistryError> {
        let published = self.published_list().await?;
        let now = self.clock.now();
        let validity = self.settings.revocation_list_validity;
        let issued_at = signing_window(now, published.list.updated_at.unix_timestamp(), validity);
        let current = |s: &SignedList| s.version >= published.version && s.issued_at >= issued_at;
        if let Some(cached) = self.signed.lock().unwrap_or_else(PoisonError::into_inner).as_ref()
            && current(cached)
        {
            return Ok(cached.clone());
        }
        let expires_at = issued_at.saturating_add(validity);
        let copy = SignedRevocationList::new(
            published.list.clone(),
            unix_to_datetime(issued_at)?,
            unix_to_datetime(expires_at)?,
        );
        let jws = copy.sign(&*self.registry_key).map_err(RegistryError::internal)?;
        let signed = Arc::new(SignedList {
            version: published.version,
            issued_at,
            expires_at,
            jws,
        });
        let mut cache = self.signed.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.as_ref().is_none_or(|c| !current(c)) {
            *cache = Some(signed.clone());
        }
        Ok(signed)
    }

    /// The CRL (DER) of the current issuing CA (`GET /v1/crl`), made anew when revocations
    /// changed or it is half-way to `nextUpdate` (or a rotated-out certificate became
    /// superseded).
    pub async fn crl(self: &Arc<Self>) -> Result<Arc<StoredCrl>, RegistryError> {
        let current = self.ca.issuing_key_id().to_owned();
        self.crl_of(&current).await
    }

    /// The CRL (DER) of the issuing CA whose key id is `issuer_key_id`, current or retired
    /// (`GET /v1/crl/{key id}`): it lists the certificates that CA signed. Made and cached as
    /// [`Registry::crl`] is; an unknown key id is [`RegistryError::NotFound`].
    pub async fn crl_of(self: &Arc<Self>, issuer_key_id: &str) -> Result<Arc<StoredCrl>, RegistryError> {
        let current = self
            .ca
            .is_current(issuer_key_id)
            .ok_or(RegistryError::NotFound("no issuing CA has this key id"))?;
        let version = self.store.revocation_version().await?;
        let now = self.clock.now();
        let fresh = |c: &StoredCrl| c.revocation_version >= version && now < c.refresh_at;
        if let Some(cached) = self
            .crl
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(issuer_key_id)
            && fresh(cached)
        {
            return Ok(cached.clone());
        }
        let _one_at_a_time = self.crl_generation.lock().await;
        let crl = match self.store.latest_crl(issuer_key_id).await? {
            Some(latest) if fresh(&latest) => Arc::new(latest),
            _ => Arc::new(self.generate_crl(now, issuer_key_id, current).await?),
        };
        self.crl
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(issuer_key_id.to_owned(), crl.clone());
        Ok(crl)
    }

    async fn generate_crl(
        self: &Arc<Self>,
        now: i64,
        issuer_key_id: &str,
        current: bool,
    ) -> Result<StoredCrl, RegistryError> {
        let (crl_number, revocation_version) = self.store.next_crl_number().await?;
        let (entries, next_supersession) = self.store.crl_entries(now, issuer_key_id, current).await?;
        let validity = self.settings.crl_validity;
        let refresh_at = next_supersession.map_or(now + validity / 2, |t| t.min(now + validity / 2));
        let ca = self.ca.clone();
        let issuer = issuer_key_id.to_owned();
        let started = std::time::Instant::now();
        let der = tokio::task::spawn_blocking(move || ca.sign_crl(&issuer, crl_number, now, now + validity, &entries))
            .await
            .map_err(RegistryError::internal)?
            .map_err(RegistryError::internal)?;
        metrics::histogram!(m::CRL_GENERATION_SECONDS).record(started.elapsed().as_secs_f64());
        let crl = StoredCrl {
            crl_number,
            revocation_version,
            this_update: now,
            next_update: now + validity,
            refresh_at,
            der,
            issuer_key_id: issuer_key_id.to_owned(),
        };
        self.store.save_crl(&crl).await?;
        Ok(crl)
    }

    /// The registry's public key and the token issuer's (`GET /v1/jwks`), each marked with
    /// what it signs (`aip_role`): only issuer keys root delegable AATs.
    pub fn jwks(&self) -> Jwks {
        let issuer_keys = self
            .token_issuer
            .get()
            .map(|(keys, _)| keys.published_keys())
            .unwrap_or_default();
        let registry = self.registry_key.public_key().to_jwk().with_role(REGISTRY_ROLE);
        Jwks {
            keys: std::iter::once(registry)
                .chain(issuer_keys.iter().map(|key| key.to_jwk().with_role(ISSUER_ROLE)))
                .collect(),
        }
    }

    /// Lists tokens, sessions, users and delegations as revoked in one new list version, announced by one
    /// event, as a token issuer decided them; `actor` and the request's subject go to the audit
    /// log. Already listed entries stay as they were. Returns the new version.
    pub async fn publish_revocations(
        &self,
        actor: String,
        revocations: &PublishRevocationsRequest,
    ) -> Result<u64, RegistryError> {
        check_name_field("subject", &revocations.subject, 300)?;
        check_reason(revocations.reason.as_deref())?;
        if revocations.is_empty() {
            return Err(RegistryError::InvalidRequest("nothing to revoke".into()));
        }
        if revocations.len() > MAX_REVOCATION_ENTRIES {
            return Err(RegistryError::InvalidRequest(format!(
                "at most {MAX_REVOCATION_ENTRIES} entries per request"
            )));
        }
        for (member, id) in revocations
            .tokens
            .iter()
            .map(|e| ("tokens[].id", &e.id))
            .chain(revocations.sessions.iter().map(|e| ("sessions[].id", &e.id)))
            .chain(revocations.users.iter().map(|u| ("users[]", u)))
        {
            check_name_field(member, id, 256)?;
        }
        for delegation in &revocations.delegations {
            let id = aip_api::checks::revocation_id("delegations[].id", &delegation.id)
                .map_err(RegistryError::InvalidRequest)?;
            if id != delegation.id {
                return Err(RegistryError::InvalidRequest(
                    "delegations[].id must be in lowercase hex".into(),
                ));
            }
        }
        let audit = AuditEntry {
            actor,
            action: "revocation.publish",
            subject: revocations.subject.clone(),
            details: json!({
                "tokens": revocations.tokens.len(),
                "sessions": revocations.sessions.len(),
                "users": revocations.users,
                "delegations": revocations.delegations.len(),
                "reason": revocations.reason,
            }),
        };
        let version = self
            .store
            .publish_revocations(revocations, self.clock.now(), &audit)
            .await?;
        self.saw_version(version);
        self.pump.notify_one();
        metrics::counter!(m::STATUS_CHANGES, "status" => revocations.event_kind()).increment(1);
        Ok(version)
    }

    /// `POST /v1/revocations` (admin): revocations decided by a token issuer running apart.
    pub async fn publish_revocations_request(
        &self,
        principal: &Principal,
        request: &PublishRevocationsRequest,
    ) -> Result<u64, RegistryError> {
        principal.require_admin()?;
        self.publish_revocations(principal.actor(), request).await
    }

    /// The discovery document.
    pub fn discovery(&self) -> Discovery {
        let base = &self.settings.public_url;
        Discovery {
            registry_id: self.settings.registry_id.clone(),
            trust_domain: self.settings.trust_domain.clone(),
            agents_endpoint: format!("{base}/v1/agents"),
            jwks_uri: format!("{base}/v1/jwks"),
            crl_uri: format!("{base}/v1/crl"),
            revocations_uri: format!("{base}/v1/revocations"),
            revocations_jws_uri: format!("{base}/v1/revocations.jws"),
            revocations_stream_uri: format!("{base}/v1/revocations/stream"),
            algorithms: vec![Algorithm::EdDSA.as_str().into(), Algorithm::ES256.as_str().into()],
            aid_version: AID_VERSION.into(),
            issuer: self.token_issuer.get().map(|(_, endpoints)| endpoints.clone()),
        }
    }

    /// Live events; pair with [`Registry::events_after`] to catch up first.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoredEvent>> {
        self.events.subscribe()
    }

    /// Stored events after `version`.
    pub async fn events_after(&self, version: u64, limit: u32) -> Result<Vec<StoredEvent>, RegistryError> {
        Ok(self.store.events_after(version, limit).await?)
    }

    /// The current revocation list version.
    pub async fn revocation_version(&self) -> Result<u64, RegistryError> {
        Ok(self.store.revocation_version().await?)
    }

    /// Background work until `shutdown` completes: publishes events (from this process or any
    /// replica sharing the database) to stream subscribers, and purges expired nonces. Events
    /// are read when this process changed revocation data, when the database announces a
    /// version another replica committed (PostgreSQL), and every 500 ms regardless.
    pub async fn run_background(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut last = loop {
            match self.store.revocation_version().await {
                Ok(v) => {
                    self.saw_version(v);
                    break v;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the revocation version; retrying");
                    tokio::select! {
                        () = &mut shutdown => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        // Other replicas' versions as they commit them (PostgreSQL); the poll below stays as
        // the fallback, and is all there is on SQLite.
        let registry = self.clone();
        let watcher = tokio::spawn(async move {
            let wake = || registry.pump.notify_one();
            registry.store.watch_versions(&wake).await;
        });
        let mut purge = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                () = &mut shutdown => {
                    watcher.abort();
                    return;
                }
                () = self.pump.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = purge.tick() => {
                    if let Err(e) = self.store.purge_expired(self.clock.now()).await {
                        tracing::warn!(error = %e, "purging expired nonces failed");
                    }
                }
            }
            loop {
                match self.store.events_after(last, 1000).await {
                    Ok(events) if events.is_empty() => break,
                    Ok(events) => {
                        for event in events {
                            last = event.version;
                            self.saw_version(last);
                            // No subscribers is not an error.
                            let _ = self.events.send(Arc::new(event));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reading revocation events failed");
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::signing_window;

    #[test]
    fn signing_windows_are_shared_and_leave_half_the_validity() {
        let validity = 3_600;
        // Within one half-hour window every signer picks the window's start.
        assert_eq!(signing_window(1_800, 0, validity), 1_800);
        assert_eq!(signing_window(3_599, 0, validity), 1_800);
        assert_eq!(signing_window(3_600, 0, validity), 3_600);
        // A change inside the window moves the issue time to the change.
        assert_eq!(signing_window(3_000, 2_000, validity), 2_000);
        // Never after the signer's own time, whatever the list says.
        assert_eq!(signing_window(3_000, 9_000, validity), 3_000);
        // Whenever signed, at least half the validity is left until expiry.
        for now in (0..20_000).step_by(97) {
            let issued = signing_window(now, 0, validity);
            assert!(issued <= now && issued + validity - now >= validity / 2, "{now}");
        }
    }
}
