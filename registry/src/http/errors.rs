//! The one place a [`RegistryError`] becomes an HTTP answer.

use aip_http::ApiError;
use axum::http::StatusCode;

use crate::service::RegistryError;

/// What a handler returns.
pub(super) type ApiResult<T> = Result<T, ApiError>;

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::InvalidRequest(d) => Self::bad_request(d),
            RegistryError::Unauthorized(d) => Self::invalid_token(d),
            RegistryError::InvalidProof(d) => Self::new(StatusCode::UNAUTHORIZED, "invalid_proof", d)
                .with_challenge(r#"AIP-PoP realm="aip", error="invalid_proof""#),
            RegistryError::Forbidden(d) => Self::new(StatusCode::FORBIDDEN, "insufficient_scope", d),
            RegistryError::AgentNotFound => Self::new(StatusCode::NOT_FOUND, "agent_not_found", "no agent has this id"),
            RegistryError::NotFound(d) => Self::new(StatusCode::NOT_FOUND, "not_found", d),
            RegistryError::TokenNotFound => Self::new(StatusCode::NOT_FOUND, "token_not_found", "no token has this id"),
            RegistryError::KeyAlreadyRegistered => Self::new(
                StatusCode::CONFLICT,
                "key_already_registered",
                "this public key is already registered",
            ),
            RegistryError::Conflict(d) => Self::new(StatusCode::CONFLICT, "conflict", d),
            RegistryError::LooksLike(d) => Self::new(StatusCode::CONFLICT, "conflict", d),
            e @ RegistryError::Internal(_) => {
                tracing::error!(error = ?e, "request failed");
                Self::internal()
            }
        }
    }
}
