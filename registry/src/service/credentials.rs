//! Who a bearer token belongs to, and the tokens the registry hands out: access tokens
//! (admin, reader) and registration tokens, shown once and stored as digests.

use std::sync::PoisonError;
use std::time::{Duration, Instant};

use aip_aat::secret::{SecretString, digest as token_digest, random_secret};
use aip_api::registry::{
    AccessTokenResponse, CreateAccessTokenRequest, CreateRegistrationTokenRequest, RegistrationTokenResponse, Role,
};
use aip_db::audit::AuditEntry;
use serde_json::json;

use super::checks::check_name_field;
use super::error::{RegistryError, unix_time};
use super::principal::Principal;
use super::state::Registry;
use crate::store::{NewAccessToken, NewRegistrationToken};

/// Prefix of access tokens (admin and reader).
pub const ACCESS_TOKEN_PREFIX: &str = "aip_at_";
/// Prefix of registration tokens.
pub const REGISTRATION_TOKEN_PREFIX: &str = "aip_rt_";
/// How long an access token's role is remembered without asking the database.
const ACCESS_TOKEN_CACHE: Duration = Duration::from_secs(10);

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
    /// Who a bearer token belongs to. Access tokens are remembered for a few seconds, so
    /// busy clients do not cost a database read per request.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, RegistryError> {
        let digest = token_digest(token);
        if token.starts_with(ACCESS_TOKEN_PREFIX) {
            if let Some((principal, seen)) = self
                .access_tokens
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&digest)
                && seen.elapsed() < ACCESS_TOKEN_CACHE
            {
                return Ok(principal.clone());
            }
            let principal = match self.store.access_token(&digest).await? {
                Some((token_id, Role::Admin)) => Principal::Admin { token_id },
                Some((token_id, Role::Reader)) => Principal::Reader { token_id },
                None => return Err(RegistryError::Unauthorized("unknown or revoked access token")),
            };
            let mut cache = self.access_tokens.lock().unwrap_or_else(PoisonError::into_inner);
            if cache.len() >= 10_000 {
                cache.retain(|_, (_, seen)| seen.elapsed() < ACCESS_TOKEN_CACHE);
            }
            cache.insert(digest, (principal.clone(), Instant::now()));
            return Ok(principal);
        }
        if token.starts_with(REGISTRATION_TOKEN_PREFIX) {
            return match self.store.registration_token(&digest).await? {
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
        let now = self.clock.now();
        let expires_at = now + i64::try_from(request.expires_in).unwrap_or(0);
        let (token, digest, token_id) = new_secret_token(REGISTRATION_TOKEN_PREFIX)?;
        let record = NewRegistrationToken {
            digest,
            token_id: token_id.clone(),
            uses: request.uses,
            expires_at,
            created_at: now,
        };
        let audit = AuditEntry {
            actor: principal.actor(),
            action: "registration_token.create",
            subject: token_id.clone(),
            details: json!({"uses": request.uses, "expires_at": expires_at}),
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
        let (token, token_id) = self
            .issue_access_token(role, request.label.clone(), principal.actor())
            .await?;
        Ok(AccessTokenResponse {
            token,
            token_id,
            role: role.as_str().into(),
        })
    }

    /// Creates an access token on behalf of `actor` (also used by `init`).
    pub async fn issue_access_token(
        &self,
        role: Role,
        label: Option<String>,
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
        };
        let audit = AuditEntry {
            actor,
            action: "access_token.create",
            subject: token_id.clone(),
            details: json!({"role": role.as_str(), "label": label}),
        };
        self.store.create_access_token(&record, &audit).await?;
        Ok((token, token_id))
    }
}
