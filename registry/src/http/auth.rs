//! Who is calling: the bearer token of `Authorization`, as the registry knows it.

use std::sync::Arc;

use aip_http::ApiError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::errors::ApiResult;
use crate::service::{Principal, Registry, RegistryError};

/// The caller, from `Authorization: Bearer`.
pub(super) struct Caller(pub(super) Principal);

impl FromRequestParts<Arc<Registry>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, registry: &Arc<Registry>) -> Result<Self, ApiError> {
        let token = aip_http::require_bearer(&parts.headers)?;
        Ok(Self(registry.authenticate(token).await?))
    }
}

impl Caller {
    pub(super) fn reader(self) -> ApiResult<Principal> {
        if self.0.can_read() {
            Ok(self.0)
        } else {
            Err(RegistryError::Forbidden("this token cannot read registry data").into())
        }
    }
}
