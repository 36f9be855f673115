//! [`IssuerError`]: why a request could not be served.

use aip_api::issuer::TokenErrorCode;
use aip_api::oauth::OAuthErrorCode;
use aip_db::DbError;
use serde_json::Value;
use time::OffsetDateTime;

use crate::directory::DirectoryError;

/// A request could not be served. [`crate::http`] maps each variant to a status and an
/// `{"error", "error_description"}` body; `Internal` details are logged, never sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssuerError {
    /// A token endpoint error (spec 9.4.2).
    #[error("{code:?}: {description}")]
    Token {
        /// The code.
        code: TokenErrorCode,
        /// What went wrong, for the client.
        description: String,
        /// Structured details.
        details: Option<Value>,
    },
    /// An error of the OAuth endpoints that has no spec 9.4.2 code (RFC 6749 §5.2 and its
    /// extensions).
    #[error("{code:?}: {description}")]
    OAuth {
        /// The code.
        code: OAuthErrorCode,
        /// What went wrong, for the client.
        description: String,
    },
    /// Missing or invalid access token (admin endpoints).
    #[error("{0}")]
    Unauthorized(String),
    /// The access token may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The request is malformed (admin endpoints).
    #[error("{0}")]
    InvalidRequest(String),
    /// Nothing has this id.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with stored state.
    #[error("{0}")]
    Conflict(String),
    /// Something failed on our side (or the registry is unreachable).
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl IssuerError {
    pub(crate) fn token(code: TokenErrorCode, description: impl Into<String>) -> Self {
        Self::Token {
            code,
            description: description.into(),
            details: None,
        }
    }

    pub(crate) fn oauth(code: OAuthErrorCode, description: impl Into<String>) -> Self {
        Self::OAuth {
            code,
            description: description.into(),
        }
    }

    /// The OAuth error (RFC 6749 §5.2) this error is reported with by the OAuth endpoints, and
    /// its description (internal errors are logged by the caller and described as such).
    pub fn oauth_error(&self) -> (OAuthErrorCode, String) {
        match self {
            Self::OAuth { code, description } => (*code, description.clone()),
            Self::Token { code, description, .. } => {
                let code = match code {
                    TokenErrorCode::InvalidRequest => OAuthErrorCode::InvalidRequest,
                    TokenErrorCode::InvalidProof
                    | TokenErrorCode::AgentNotFound
                    | TokenErrorCode::AgentSuspended
                    | TokenErrorCode::AgentRevoked => OAuthErrorCode::InvalidClient,
                    TokenErrorCode::UserAuthFailed | TokenErrorCode::InvalidGrant => OAuthErrorCode::InvalidGrant,
                    TokenErrorCode::CapabilitiesDenied => OAuthErrorCode::InvalidScope,
                    TokenErrorCode::IssuerError => return (OAuthErrorCode::ServerError, "internal error".into()),
                };
                (code, description.clone())
            }
            Self::InvalidRequest(d) | Self::Conflict(d) => (OAuthErrorCode::InvalidRequest, d.clone()),
            Self::Unauthorized(d) | Self::Forbidden(d) => (OAuthErrorCode::InvalidClient, d.clone()),
            Self::NotFound(_) => (OAuthErrorCode::InvalidClient, "no agent has this id".into()),
            Self::Internal(_) => (OAuthErrorCode::ServerError, "internal error".into()),
        }
    }

    pub(crate) fn internal(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(e))
    }

    /// The token-endpoint code this error is reported with.
    pub fn token_code(&self) -> TokenErrorCode {
        match self {
            Self::Token { code, .. } => *code,
            Self::InvalidRequest(_) => TokenErrorCode::InvalidRequest,
            Self::NotFound(_) => TokenErrorCode::AgentNotFound,
            Self::OAuth { .. } => TokenErrorCode::InvalidRequest,
            _ => TokenErrorCode::IssuerError,
        }
    }
}

impl From<DbError> for IssuerError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Conflict(m) => Self::Conflict(m.into()),
            e => Self::internal(e),
        }
    }
}

impl From<DirectoryError> for IssuerError {
    fn from(e: DirectoryError) -> Self {
        match e {
            DirectoryError::Unauthorized(m) => Self::Unauthorized(m),
            DirectoryError::Forbidden(m) => Self::Forbidden(m),
            DirectoryError::AgentNotFound => Self::NotFound("no agent has this id".into()),
            DirectoryError::Refused(m) => Self::Conflict(m),
            e => Self::internal(e),
        }
    }
}

/// The same error with structured details (`error_details`), when it is a token-endpoint error.
pub(super) fn with_details(e: IssuerError, details: Value) -> IssuerError {
    match e {
        IssuerError::Token { code, description, .. } => IssuerError::Token {
            code,
            description,
            details: Some(details),
        },
        e => e,
    }
}

/// A stored Unix time as a timestamp of the API.
pub(super) fn unix_time(t: i64) -> Result<OffsetDateTime, IssuerError> {
    OffsetDateTime::from_unix_timestamp(t).map_err(IssuerError::internal)
}
