//! What the registry publishes over HTTP: the JWKS, the CRL (DER and PEM), the revocation list
//! (JSON with its ETag, and signed), the discovery document; and `POST /v1/revocations`, by
//! which a token issuer running apart publishes what it revoked.

use std::sync::Arc;

use aip_api::registry::{PublishRevocationsRequest, PublishRevocationsResponse};
use aip_http::{ApiError, StrictJson};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::auth::Caller;
use super::errors::ApiResult;
use crate::service::Registry;

pub(super) async fn jwks(State(registry): State<Arc<Registry>>) -> Response {
    ([(header::CACHE_CONTROL, "public, max-age=300")], Json(registry.jwks())).into_response()
}

fn crl_response(der: &[u8], pem: bool) -> Response {
    let headers = |content_type| {
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=60"),
        ]
    };
    if pem {
        (headers("application/x-pem-file"), aip_aat::pem::encode("X509 CRL", der)).into_response()
    } else {
        (headers("application/pkix-crl"), der.to_vec()).into_response()
    }
}

pub(super) async fn crl_der(State(registry): State<Arc<Registry>>) -> ApiResult<Response> {
    Ok(crl_response(&registry.crl().await?.der, false))
}

pub(super) async fn crl_pem(State(registry): State<Arc<Registry>>) -> ApiResult<Response> {
    Ok(crl_response(&registry.crl().await?.der, true))
}

/// `GET /v1/crl/{key id}` (DER) and `/v1/crl/{key id}.pem`: the CRL of one issuing CA,
/// current or retired, by the RFC 7638 thumbprint of its key.
pub(super) async fn issuer_crl(
    State(registry): State<Arc<Registry>>,
    Path(issuer): Path<String>,
) -> ApiResult<Response> {
    let (key_id, pem) = match issuer.strip_suffix(".pem") {
        Some(key_id) => (key_id, true),
        None => (issuer.as_str(), false),
    };
    Ok(crl_response(&registry.crl_of(key_id).await?.der, pem))
}

fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .map(str::trim)
                .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == etag)
        })
}

pub(super) async fn revocations(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    headers: HeaderMap,
) -> ApiResult<Response> {
    caller.reader()?;
    let list = registry.published_list().await?;
    let etag = HeaderValue::from_str(&list.etag).map_err(|_| ApiError::bad_request("etag"))?;
    if if_none_match(&headers, &list.etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    Ok((
        [
            (header::ETAG, etag),
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        list.json.clone(),
    )
        .into_response())
}

pub(super) async fn revocations_jws(State(registry): State<Arc<Registry>>, caller: Caller) -> ApiResult<Response> {
    caller.reader()?;
    let signed = registry.signed_list().await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/jose"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        signed.jws.clone(),
    )
        .into_response())
}

pub(super) async fn publish_revocations(
    State(registry): State<Arc<Registry>>,
    Caller(principal): Caller,
    StrictJson(request, _): StrictJson<PublishRevocationsRequest>,
) -> ApiResult<Response> {
    let revocation_version = registry.publish_revocations_request(&principal, &request).await?;
    Ok(Json(PublishRevocationsResponse { revocation_version }).into_response())
}

pub(super) async fn discovery(State(registry): State<Arc<Registry>>) -> Response {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(registry.discovery()),
    )
        .into_response()
}
