//! Users: authorization of the user an agent acts for (API keys, OpenID Connect ID tokens,
//! loopback users), and the API-key users an administrator manages.

use std::net::IpAddr;

use aip_aat::secret::digest;
use aip_aat::token::{AuthMethod, DelegationScope};
use aip_api::checks::{check_name, check_tool_names as check_tools, imitation};
use aip_api::issuer::{CreateUserRequest, CreateUserResponse, TokenErrorCode, UserAuthorization, UserList, UserView};
use aip_db::audit::AuditEntry;
use serde_json::json;

use super::error::{IssuerError, unix_time};
use super::state::{Issuer, USER_CACHE_TTL};
use super::tokens::{USER_KEY_PREFIX, random_token};
use crate::directory::Caller;
use crate::oidc::OidcError;
use crate::store::UserRecord;

/// The user an AAT is issued for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AuthorizedUser {
    /// The user id.
    pub(crate) user_id: String,
    /// How the user authenticated.
    pub(crate) method: AuthMethod,
    /// When (Unix seconds).
    pub(crate) auth_time: i64,
    /// The tools the user may delegate.
    pub(crate) tools: Vec<String>,
    /// The delegation scope.
    pub(crate) scope: DelegationScope,
}

impl Issuer {
    pub(crate) async fn authorize_user(
        &self,
        authorization: &UserAuthorization,
        peer: Option<IpAddr>,
        now: i64,
    ) -> Result<AuthorizedUser, IssuerError> {
        let failed = |m: &str| IssuerError::token(TokenErrorCode::UserAuthFailed, m);
        let user = match authorization {
            UserAuthorization::ApiKey { token } => {
                let record = self
                    .api_key_user(&digest(token.expose()))
                    .await?
                    .ok_or_else(|| failed("the API key is not valid"))?;
                if record.revoked_at.is_some() {
                    return Err(failed("the user's authorization was revoked"));
                }
                // Revocation is also checked where the token is recorded, authoritatively.
                return Ok(AuthorizedUser {
                    user_id: record.user_id,
                    method: AuthMethod::ApiKey,
                    // An API key is presented with each request: the user authenticated now.
                    auth_time: now,
                    tools: record.delegatable_tools,
                    scope: DelegationScope::from(record.delegation_scope.as_str()),
                });
            }
            UserAuthorization::OidcIdToken { token } => {
                if self.oidc.is_empty() {
                    return Err(failed("no identity provider is trusted for oidc_id_token"));
                }
                let identity = self.oidc.verify(token.expose(), now).await.map_err(|e| match e {
                    e @ OidcError::JwksUnavailable => {
                        tracing::warn!(error = ?e, "identity provider keys unavailable");
                        failed("the identity provider's keys are unavailable; try again")
                    }
                    e => failed(&format!("the ID token was refused: {e}")),
                })?;
                AuthorizedUser {
                    user_id: identity.user_id,
                    method: AuthMethod::Oidc,
                    auth_time: identity.auth_time,
                    tools: identity.delegatable_tools,
                    scope: DelegationScope::Tools,
                }
            }
            UserAuthorization::LocalUser { username, .. } => {
                let Some(tools) = &self.settings.local_user_tools else {
                    return Err(failed("local_user authorization is not enabled on this issuer"));
                };
                if !peer.is_some_and(|ip| ip.is_loopback()) {
                    return Err(failed(
                        "local_user authorization is accepted from loopback clients only",
                    ));
                }
                let valid = !username.is_empty()
                    && username.len() <= 64
                    && username
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
                if !valid {
                    return Err(IssuerError::token(
                        TokenErrorCode::InvalidRequest,
                        "username must be 1-64 letters, digits, _ - or .",
                    ));
                }
                AuthorizedUser {
                    user_id: format!("local:{username}"),
                    method: AuthMethod::Local,
                    auth_time: now,
                    tools: tools.clone(),
                    scope: DelegationScope::Tools,
                }
            }
            UserAuthorization::Oauth2Token { .. } => {
                return Err(failed(
                    "oauth2_token is not supported by this issuer; use oidc_id_token or api_key",
                ));
            }
        };
        // Revocation of these users is checked where the token is recorded, authoritatively
        // and without a read per request here.
        Ok(user)
    }

    /// The user holding an API key, remembered for a few seconds (a revocation in this
    /// process forgets it at once; the issuance transaction checks revocation regardless).
    async fn api_key_user(&self, key_digest: &str) -> Result<Option<UserRecord>, IssuerError> {
        if let Some((user, at)) = self
            .api_keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key_digest)
            && at.elapsed() < USER_CACHE_TTL
        {
            return Ok(Some(user.clone()));
        }
        let user = self.store.user_by_key(key_digest).await?;
        if let Some(user) = &user {
            let mut cache = self.api_keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if cache.len() >= 100_000 {
                cache.clear();
            }
            cache.insert(key_digest.to_owned(), (user.clone(), std::time::Instant::now()));
        }
        Ok(user)
    }

    /// `POST /v1/users` (admin): a user with an API key, shown once.
    pub async fn create_user(
        &self,
        caller: &Caller,
        request: CreateUserRequest,
    ) -> Result<CreateUserResponse, IssuerError> {
        if !caller.admin {
            return Err(IssuerError::Forbidden("this operation needs an admin token".into()));
        }
        check_name("user_id", &request.user_id, 256).map_err(IssuerError::InvalidRequest)?;
        if request.user_id.starts_with("local:") {
            return Err(IssuerError::InvalidRequest(
                "user ids starting with local: are reserved for local_user authorization".into(),
            ));
        }
        if request.delegatable_tools.is_empty() {
            return Err(IssuerError::InvalidRequest(
                "delegatable_tools must name at least one tool (or *)".into(),
            ));
        }
        check_tools("delegatable_tools", &request.delegatable_tools).map_err(IssuerError::InvalidRequest)?;
        let scope = request.delegation_scope.unwrap_or_else(|| "tools".into());
        if !matches!(scope.as_str(), "tools" | "read_only") {
            return Err(IssuerError::InvalidRequest(
                "delegation_scope must be tools or read_only".into(),
            ));
        }
        let now = self.clock.now();
        let api_key = random_token(USER_KEY_PREFIX)?;
        let record = UserRecord {
            user_id: request.user_id.clone(),
            delegatable_tools: request.delegatable_tools.clone(),
            delegation_scope: scope.clone(),
            created_at: now,
            revoked_at: None,
        };
        let audit = AuditEntry {
            actor: caller.actor(),
            action: "user.create",
            subject: request.user_id.clone(),
            details: json!({"delegatable_tools": request.delegatable_tools, "delegation_scope": scope}),
        };
        let imitated = self
            .store
            .create_user(&record, &digest(api_key.expose()), &audit)
            .await?;
        if let Some(existing) = imitated {
            return Err(IssuerError::Conflict(imitation(
                "user_id",
                &request.user_id,
                &existing,
                "an existing user's id",
            )));
        }
        Ok(CreateUserResponse {
            user_id: request.user_id,
            api_key,
            delegatable_tools: request.delegatable_tools,
            delegation_scope: scope,
        })
    }

    /// `GET /v1/users` (admin).
    pub async fn users(&self, caller: &Caller, after: Option<&str>, limit: u32) -> Result<UserList, IssuerError> {
        if !caller.admin {
            return Err(IssuerError::Forbidden("this operation needs an admin token".into()));
        }
        let limit = limit.clamp(1, aip_api::MAX_PAGE);
        let mut users = self.store.users(after.unwrap_or(""), limit + 1).await?;
        let more = users.len() > limit as usize;
        users.truncate(limit as usize);
        let next = if more {
            users.last().map(|u| u.user_id.clone())
        } else {
            None
        };
        let users = users
            .into_iter()
            .map(|u| {
                Ok(UserView {
                    user_id: u.user_id,
                    delegatable_tools: u.delegatable_tools,
                    delegation_scope: u.delegation_scope,
                    created_at: unix_time(u.created_at)?,
                    revoked_at: u.revoked_at.map(unix_time).transpose()?,
                })
            })
            .collect::<Result<_, IssuerError>>()?;
        Ok(UserList { users, next })
    }
}
