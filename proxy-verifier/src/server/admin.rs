//! The admin bearer token of the HTTP API: how it is made, loaded and checked (only its SHA-256
//! digest is kept; presented tokens are compared digest to digest in constant time), and the
//! [`Admin`] extractor that guards the admin routes.

use std::io;
use std::os::unix::fs::OpenOptionsExt;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use aip_http::ApiError;

/// The environment variable that supplies the admin token instead of a generated one.
pub const TOKEN_ENV: &str = "AIP_PROXY_TOKEN";
/// Shortest admin token accepted from the environment.
pub const MIN_TOKEN_LEN: usize = 32;

/// The admin bearer token, kept only as its SHA-256 digest.
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

/// Why an admin token was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminTokenError {
    /// The secret is too short or holds characters that cannot travel in a header.
    #[error("the admin token must be at least {MIN_TOKEN_LEN} printable ASCII characters without spaces")]
    Weak,
    /// No random secret could be made.
    #[error("no random admin token could be made: {0}")]
    Random(getrandom::Error),
}

impl AdminToken {
    /// A fresh random token: 32 bytes, hex encoded. Returns the token and the secret, which the
    /// caller shows once (it is not kept).
    pub fn generate() -> Result<(Self, String), AdminTokenError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(AdminTokenError::Random)?;
        let secret = hex::encode(bytes);
        Ok((Self::digest_of(&secret), secret))
    }

    /// A token with this secret: at least [`MIN_TOKEN_LEN`] printable ASCII characters, no
    /// spaces.
    pub fn from_secret(secret: &str) -> Result<Self, AdminTokenError> {
        if secret.len() < MIN_TOKEN_LEN || !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AdminTokenError::Weak);
        }
        Ok(Self::digest_of(secret))
    }

    /// The token from `AIP_PROXY_TOKEN`, `None` when the variable is unset or empty.
    pub fn from_env() -> Result<Option<Self>, AdminTokenError> {
        match std::env::var(TOKEN_ENV) {
            Ok(secret) if !secret.is_empty() => Self::from_secret(&secret).map(Some),
            Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(AdminTokenError::Weak),
        }
    }

    /// The token in force: `AIP_PROXY_TOKEN` when set, else the secret in `file`, which is
    /// created (mode 0600, never overwritten) with a fresh random secret when it does not exist.
    pub fn load(file: Option<&std::path::Path>) -> io::Result<Self> {
        let invalid = |e: AdminTokenError| io::Error::new(io::ErrorKind::InvalidInput, e.to_string());
        if let Some(token) = Self::from_env().map_err(invalid)? {
            return Ok(token);
        }
        let Some(file) = file else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the HTTP API needs a token: set {TOKEN_ENV} or pass --token-file FILE"),
            ));
        };
        match std::fs::read_to_string(file) {
            Ok(secret) => return Self::from_secret(secret.trim()).map_err(invalid),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let (token, secret) = Self::generate().map_err(invalid)?;
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(file)?;
        io::Write::write_all(&mut out, secret.as_bytes())?;
        out.sync_all()?;
        Ok(token)
    }

    /// Whether `presented` is the secret, compared digest to digest in constant time.
    pub fn verify(&self, presented: &str) -> bool {
        let digest = Sha256::digest(presented.as_bytes());
        bool::from(digest.as_slice().ct_eq(&self.digest))
    }

    fn digest_of(secret: &str) -> Self {
        let mut digest = [0u8; 32];
        digest.copy_from_slice(Sha256::digest(secret.as_bytes()).as_slice());
        Self { digest }
    }
}

/// Proof that the request carried the admin token of the state `S` the router serves.
/// Generic over the state, which hands out its token through `FromRef`, so that this file
/// need not name `ServerState` (which holds an [`AdminToken`]): the two stay free of a circle.
pub(super) struct Admin;

impl<S> FromRequestParts<S> for Admin
where
    S: Send + Sync,
    AdminToken: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Some(presented) = aip_http::bearer(&parts.headers) else {
            return Err(ApiError::unauthorized(
                r#"Bearer realm="aip-proxy""#,
                "an Authorization: Bearer token is required",
            ));
        };
        if AdminToken::from_ref(state).verify(presented) {
            Ok(Self)
        } else {
            tracing::warn!(path = %parts.uri.path(), "request with a wrong admin token refused");
            Err(ApiError::unauthorized(
                r#"Bearer realm="aip-proxy", error="invalid_token""#,
                "the bearer token is not valid",
            ))
        }
    }
}
