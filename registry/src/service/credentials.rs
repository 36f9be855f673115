//! Who a bearer token belongs to, and the tokens the registry hands out: access tokens
//! (admin, reader) and registration tokens, shown once and stored as digests, listed without
//! their secrets, expiring and revocable.

use std::sync::PoisonError;
use std::time::{Duration, Instant};

use aip_aat::secret::{SecretString, digest as token_digest, random_secret};
use aip_api::registry::{
    AccessTokenEntry, AccessTokenList, AccessTokenResponse, CreateAccessTokenRequest, CreateRegistrationTokenRequest,
    RegistrationTokenEntry, RegistrationTokenList, RegistrationTokenResponse, Role,
};
use aip_db::audit::AuditEntry;
use serde_json::json;

use super::checks::check_name_field;
use super::error::{RegistryError, unix_time};
use super::principal::{CachedAccessToken, Principal};
use super::state::Registry;
use crate::store::{NewAccessToken, NewRegistrationToken, StoredAccessToken, StoredRegistrationToken};

/// Prefix of access tokens (admin and reader).
pub const ACCESS_TOKEN_PREFIX: &str = "aip_at_";
/// Prefix of registration tokens.
pub const REGISTRATION_TOKEN_PREFIX: &str = "aip_rt_";
/// How long an access token's role is remembered without asking the database. A revocation
/// made on another replica holds here once this has passed (the design allows 1 s).
const ACCESS_TOKEN_CACHE: Duration = Duration::from_millis(500);
/// How often (seconds) an access token's last use is written down.
const LAST_USED_EVERY: i64 = 60;
/// The longest lifetime an access token may be given: 10 years.
const MAX_ACCESS_TOKEN_LIFETIME: u64 = 10 * 366 * 86_400;

/// A token shown once at creation.
fn new_secret_token(prefix: &str) -> Result<(SecretString, String, String), RegistryError> {
    let token = random_secret(prefix).map_err(RegistryError::internal)?;
    let mut id = [0u8; 6];
    aip_aat::ids::fill_random(&mut id).map_err(RegistryError::internal)?;
    let digest = token_digest(token.expose());
    let token_id = format!("{}{}", &prefix[4..6], hex::encode(id));
    Ok((token, digest, token_id))
}

impl Registry {
    /// Who a bearer token belongs to. Access tokens are remembered for a moment
    /// ([`ACCESS_TOKEN_CACHE`]), so busy clients do not cost a database read per request;
    /// their last use is written at most once a minute.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, RegistryError> {
        let digest = token_digest(token);
        if token.starts_with(ACCESS_TOKEN_PREFIX) {
            let now = self.clock.now();
            let cached = self
                .access_tokens
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&digest)
                .filter(|c| c.seen.elapsed() < ACCESS_TOKEN_CACHE)
                .cloned();
            let cached = match cached {
                Some(cached) => cached,
                None => self.look_up_access_token(digest, now).await?,
            };
            if cached.expires_at.is_some_and(|t| t <= now) {
                return Err(RegistryError::Unauthorized("access token has expired"));
            }
            return Ok(cached.principal);
        }
        if token.starts_with(REGISTRATION_TOKEN_PREFIX) {
            return match self.store.registration_token(&digest).await? {
                Some(t) if t.revoked => Err(RegistryError::Unauthorized("registration token was revoked")),
                Some(t) if t.uses_remaining > 0 && t.expires_at > self.clock.now() => Ok(Principal::Registrar {
                    token_id: t.token_id,
                    digest,
                }),
                Some(_) => Err(RegistryError::Unauthorized("registration token is used up or expired")),
                None => Err(RegistryError::Unauthorized("unknown registration token")),
            };
        }
        Err(RegistryError::Unauthorized("unrecognized bearer token"))
    }

    /// Reads the access token with `digest`, remembers it, and writes down its use when the
    /// last one written is a minute old.
    async fn look_up_access_token(&self, digest: String, now: i64) -> Result<CachedAccessToken, RegistryError> {
        let Some(stored) = self.store.access_token(&digest).await? else {
            return Err(RegistryError::Unauthorized("unknown or revoked access token"));
        };
        let principal = match stored.role {
            Role::Admin => Principal::Admin {
                token_id: stored.token_id.clone(),
            },
            Role::Reader => Principal::Reader {
                token_id: stored.token_id.clone(),
            },
        };
        if stored.last_used_at.is_none_or(|t| now - t >= LAST_USED_EVERY)
            && stored.expires_at.is_none_or(|t| t > now)
            && let Err(e) = self.store.touch_access_token(&stored.token_id, now).await
        {
            // Bookkeeping only: the request goes on.
            tracing::warn!(token_id = %stored.token_id, error = %e, "cannot record an access token's use");
        }
        let entry = CachedAccessToken {
            principal,
            expires_at: stored.expires_at,
            seen: Instant::now(),
        };
        let mut cache = self.access_tokens.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= 10_000 {
            cache.retain(|_, c| c.seen.elapsed() < ACCESS_TOKEN_CACHE);
        }
        cache.insert(digest, entry.clone());
        Ok(entry)
    }

    /// Forgets what this process remembers of the access token `token_id`.
    fn forget_access_token(&self, token_id: &str) {
        self.access_tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, c| match &c.principal {
                Principal::Admin { token_id: id } | Principal::Reader { token_id: id } => id != token_id,
                Principal::Registrar { .. } => true,
            });
    }

    /// Creates a registration token (admin).
    pub async fn create_registration_token(
        &self,
        principal: &Principal,
        request: &CreateRegistrationTokenRequest,
    ) -> Result<RegistrationTokenResponse, RegistryError> {
        principal.require_admin()?;
        if !(1..=10_000).contains(&request.uses) {
            return Err(RegistryError::InvalidRequest("uses must be between 1 and 10000".into()));
        }
        if !(60..=30 * 86_400).contains(&request.expires_in) {
            return Err(RegistryError::InvalidRequest(
                "expires_in must be between 60 s and 30 days".into(),
            ));
        }
        if let Some(label) = &request.label {
            check_name_field("label", label, 64)?;
        }
        let now = self.clock.now();
        let expires_at = now + i64::try_from(request.expires_in).unwrap_or(0);
        let (token, digest, token_id) = new_secret_token(REGISTRATION_TOKEN_PREFIX)?;
        let record = NewRegistrationToken {
            digest,
            token_id: token_id.clone(),
            uses: request.uses,
            expires_at,
            created_at: now,
            label: request.label.clone(),
        };
        let audit = AuditEntry {
            actor: principal.actor(),
            action: "registration_token.create",
            subject: token_id.clone(),
            details: json!({"uses": request.uses, "expires_at": expires_at, "label": request.label}),
        };
        self.store.create_registration_token(&record, &audit).await?;
        Ok(RegistrationTokenResponse {
            token,
            token_id,
            uses: request.uses,
            expires_at: unix_time(expires_at)?,
        })
    }

    /// Creates an access token (admin).
    pub async fn create_access_token(
        &self,
        principal: &Principal,
        request: &CreateAccessTokenRequest,
    ) -> Result<AccessTokenResponse, RegistryError> {
        principal.require_admin()?;
        let role = Role::from_name(&request.role)
            .ok_or_else(|| RegistryError::InvalidRequest(format!("role {:?} is not admin or reader", request.role)))?;
        if let Some(label) = &request.label {
            check_name_field("label", label, 64)?;
        }
        let expires_at = match request.expires_in {
            None => None,
            Some(seconds) if (60..=MAX_ACCESS_TOKEN_LIFETIME).contains(&seconds) => {
                Some(self.clock.now() + i64::try_from(seconds).unwrap_or(0))
            }
            Some(_) => {
                return Err(RegistryError::InvalidRequest(
                    "expires_in must be between 60 s and 10 years".into(),
                ));
            }
        };
        let (token, token_id) = self
            .issue_access_token(role, request.label.clone(), expires_at, principal.actor())
            .await?;
        Ok(AccessTokenResponse {
            token,
            token_id,
            role: role.as_str().into(),
            expires_at: expires_at.map(unix_time).transpose()?,
        })
    }

    /// Every access token, without its secret (admin).
    pub async fn list_access_tokens(&self, principal: &Principal) -> Result<AccessTokenList, RegistryError> {
        principal.require_admin()?;
        let access_tokens = self.store.access_tokens().await?;
        Ok(AccessTokenList {
            access_tokens: access_tokens
                .into_iter()
                .map(access_token_entry)
                .collect::<Result<_, _>>()?,
        })
    }

    /// Revokes the access token `token_id` (admin). Revoking a revoked token changes nothing
    /// and answers it as it is; the last unexpired admin token cannot be revoked.
    pub async fn revoke_access_token(
        &self,
        principal: &Principal,
        token_id: &str,
    ) -> Result<AccessTokenEntry, RegistryError> {
        principal.require_admin()?;
        let audit = AuditEntry {
            actor: principal.actor(),
            action: "access_token.revoke",
            subject: token_id.to_owned(),
            details: json!({}),
        };
        let token = self
            .store
            .revoke_access_token(token_id, self.clock.now(), &audit)
            .await?;
        self.forget_access_token(token_id);
        access_token_entry(token)
    }

    /// Every registration token, without its secret (admin).
    pub async fn list_registration_tokens(
        &self,
        principal: &Principal,
    ) -> Result<RegistrationTokenList, RegistryError> {
        principal.require_admin()?;
        let registration_tokens = self.store.registration_tokens().await?;
        Ok(RegistrationTokenList {
            registration_tokens: registration_tokens
                .into_iter()
                .map(registration_token_entry)
                .collect::<Result<_, _>>()?,
        })
    }

    /// Revokes the registration token `token_id` (admin). Revoking a revoked token changes
    /// nothing and answers it as it is.
    pub async fn revoke_registration_token(
        &self,
        principal: &Principal,
        token_id: &str,
    ) -> Result<RegistrationTokenEntry, RegistryError> {
        principal.require_admin()?;
        let audit = AuditEntry {
            actor: principal.actor(),
            action: "registration_token.revoke",
            subject: token_id.to_owned(),
            details: json!({}),
        };
        let token = self
            .store
            .revoke_registration_token(token_id, self.clock.now(), &audit)
            .await?;
        registration_token_entry(token)
    }

    /// Creates an access token on behalf of `actor` (also used by `init`).
    pub async fn issue_access_token(
        &self,
        role: Role,
        label: Option<String>,
        expires_at: Option<i64>,
        actor: String,
    ) -> Result<(SecretString, String), RegistryError> {
        let (token, digest, token_id) = new_secret_token(ACCESS_TOKEN_PREFIX)?;
        let now = self.clock.now();
        let record = NewAccessToken {
            digest,
            token_id: token_id.clone(),
            role,
            label: label.clone(),
            created_at: now,
            expires_at,
        };
        let audit = AuditEntry {
            actor,
            action: "access_token.create",
            subject: token_id.clone(),
            details: json!({"role": role.as_str(), "label": label, "expires_at": expires_at}),
        };
        self.store.create_access_token(&record, &audit).await?;
        Ok((token, token_id))
    }
}

fn access_token_entry(token: StoredAccessToken) -> Result<AccessTokenEntry, RegistryError> {
    Ok(AccessTokenEntry {
        token_id: token.token_id,
        role: token.role.as_str().into(),
        label: token.label,
        created_at: unix_time(token.created_at)?,
        expires_at: token.expires_at.map(unix_time).transpose()?,
        last_used_at: token.last_used_at.map(unix_time).transpose()?,
        revoked_at: token.revoked_at.map(unix_time).transpose()?,
    })
}

fn registration_token_entry(token: StoredRegistrationToken) -> Result<RegistrationTokenEntry, RegistryError> {
    Ok(RegistrationTokenEntry {
        token_id: token.token_id,
        label: token.label,
        uses_remaining: u64::try_from(token.uses_remaining).unwrap_or(0),
        created_at: unix_time(token.created_at)?,
        expires_at: unix_time(token.expires_at)?,
        last_used_at: token.last_used_at.map(unix_time).transpose()?,
        revoked_at: token.revoked_at.map(unix_time).transpose()?,
    })
}
