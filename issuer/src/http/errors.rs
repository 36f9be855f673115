//! How an [`IssuerError`] of an admin endpoint (and of the credential checks the OAuth
//! endpoints share with them) becomes an answer.

use aip_http::ApiError;
use axum::http::StatusCode;

use crate::service::IssuerError;

/// The admin endpoints' answer for `e`; internal errors are logged and answered as such.
pub(super) fn admin_error(e: IssuerError) -> ApiError {
    match e {
        IssuerError::Unauthorized(d) => ApiError::invalid_token(d),
        IssuerError::Forbidden(d) => ApiError::new(StatusCode::FORBIDDEN, "insufficient_scope", d),
        IssuerError::InvalidRequest(d) => ApiError::bad_request(d),
        IssuerError::NotFound(d) => ApiError::new(StatusCode::NOT_FOUND, "not_found", d),
        IssuerError::Conflict(d) => ApiError::new(StatusCode::CONFLICT, "conflict", d),
        IssuerError::Token { description, .. } => ApiError::bad_request(description),
        e => {
            tracing::error!(error = ?e, "request failed");
            ApiError::internal()
        }
    }
}
