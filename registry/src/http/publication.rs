//! What the registry publishes over HTTP: the JWKS, the CRL (DER and PEM), the revocation list
//! (JSON with its ETag, and signed), the discovery document; and `POST /v1/revocations`, by
//! which a token issuer running apart publishes what it revoked.

use std::sync::Arc;

use aip_api::ErrorBody;
use aip_api::registry::{Discovery, PublishRevocationsRequest, PublishRevocationsResponse};
use aip_http::{ApiError, StrictJson};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::auth::Caller;
use super::errors::ApiResult;
use crate::service::Registry;

#[utoipa::path(
    get,
    path = "/v1/jwks",
    tag = "publication",
    summary = "Keys",
    description = "The registry's key and the token issuer's signing keys (current and previous) as a JWK Set; issuer roots of delegable AATs are marked. Cached for 5 minutes.",
    responses(
        (status = 200, description = "The JWK Set (RFC 7517).", body = Object, content_type = "application/json"),
    )
)]
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

#[utoipa::path(
    get,
    path = "/v1/crl",
    tag = "publication",
    summary = "Certificate revocation list (DER)",
    description = "The X.509 v2 CRL signed by the current issuing CA.",
    responses(
        (status = 200, description = "The CRL, DER-encoded.", body = Vec<u8>, content_type = "application/pkix-crl"),
        (status = 500, description = "The CRL cannot be made.", body = ErrorBody),
    )
)]
pub(super) async fn crl_der(State(registry): State<Arc<Registry>>) -> ApiResult<Response> {
    Ok(crl_response(&registry.crl().await?.der, false))
}

#[utoipa::path(
    get,
    path = "/v1/crl.pem",
    tag = "publication",
    summary = "Certificate revocation list (PEM)",
    description = "The same CRL as `/v1/crl`, PEM-encoded.",
    responses(
        (status = 200, description = "The CRL, PEM-encoded.", body = String, content_type = "application/x-pem-file"),
        (status = 500, description = "The CRL cannot be made.", body = ErrorBody),
    )
)]
pub(super) async fn crl_pem(State(registry): State<Arc<Registry>>) -> ApiResult<Response> {
    Ok(crl_response(&registry.crl().await?.der, true))
}

/// `GET /v1/crl/{key id}` (DER) and `/v1/crl/{key id}.pem`: the CRL of one issuing CA,
/// current or retired, by the RFC 7638 thumbprint of its key.
#[utoipa::path(
    get,
    path = "/v1/crl/{issuer}",
    tag = "publication",
    summary = "Certificate revocation list of one issuing CA",
    description = "The CRL of the issuing CA, current or retired by `aip-ca ca renew-issuing`, whose key has this RFC 7638 thumbprint: DER, or PEM when the thumbprint is followed by `.pem`.",
    params(("issuer" = String, Path, description = "The issuing CA key's thumbprint, optionally followed by `.pem`.")),
    responses(
        (status = 200, description = "The CRL, DER-encoded (`application/pkix-crl`) or PEM-encoded (`application/x-pem-file`).", body = Vec<u8>, content_type = "application/pkix-crl"),
        (status = 404, description = "No issuing CA of this authority has this key (`not_found`).", body = ErrorBody),
        (status = 500, description = "The CRL cannot be made.", body = ErrorBody),
    )
)]
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

#[utoipa::path(
    get,
    path = "/v1/revocations",
    tag = "publication",
    summary = "Revocation list",
    description = "The JSON revocation list (spec 8.3.3): revoked agents, AATs, sessions, users and delegations, with a monotonic `version` (admin or reader token).",
    params(("If-None-Match" = Option<String>, Header, description = "An `ETag` from an earlier answer: 304 when the list has not changed.")),
    security(("accessToken" = [])),
    responses(
        (status = 200, description = "The list.", body = Object, content_type = "application/json", headers(("ETag" = String, description = "The list version's tag."))),
        (status = 304, description = "The list has not changed since the `ETag` sent.", headers(("ETag" = String, description = "The list version's tag."))),
        (status = 401, description = "No valid bearer token (`invalid_token`), with `WWW-Authenticate: Bearer`.", body = ErrorBody),
        (status = 403, description = "The token's role does not allow this (`insufficient_scope`).", body = ErrorBody),
    )
)]
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

#[utoipa::path(
    get,
    path = "/v1/revocations.jws",
    tag = "publication",
    summary = "Signed revocation list",
    description = "The revocation list signed by the registry key (compact JWS), for proxies without a live link (admin or reader token).",
    security(("accessToken" = [])),
    responses(
        (status = 200, description = "The signed list (compact JWS).", body = String, content_type = "application/jose"),
        (status = 401, description = "No valid bearer token (`invalid_token`), with `WWW-Authenticate: Bearer`.", body = ErrorBody),
        (status = 403, description = "The token's role does not allow this (`insufficient_scope`).", body = ErrorBody),
    )
)]
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

#[utoipa::path(
    post,
    path = "/v1/revocations",
    tag = "publication",
    summary = "Publish revocations",
    description = "How a token issuer running apart from the registry publishes the tokens, sessions and users it revoked (admin).",
    request_body = PublishRevocationsRequest,
    security(("accessToken" = [])),
    responses(
        (status = 200, description = "The list version that lists them.", body = PublishRevocationsResponse),
        (status = 400, description = "Malformed request: a body that is not strict JSON of this shape, or values out of range (`invalid_request`).", body = ErrorBody),
        (status = 401, description = "No valid bearer token (`invalid_token`), with `WWW-Authenticate: Bearer`.", body = ErrorBody),
        (status = 403, description = "The token's role does not allow this (`insufficient_scope`).", body = ErrorBody),
    )
)]
pub(super) async fn publish_revocations(
    State(registry): State<Arc<Registry>>,
    Caller(principal): Caller,
    StrictJson(request, _): StrictJson<PublishRevocationsRequest>,
) -> ApiResult<Response> {
    let revocation_version = registry.publish_revocations_request(&principal, &request).await?;
    Ok(Json(PublishRevocationsResponse { revocation_version }).into_response())
}

#[utoipa::path(
    get,
    path = "/.well-known/aip-configuration",
    tag = "publication",
    summary = "Discovery document",
    description = "The registry's endpoints, keys and algorithms, and the token issuer's endpoints when it is served beside it. Cached for 5 minutes.",
    responses(
        (status = 200, description = "The discovery document.", body = Discovery),
    )
)]
pub(super) async fn discovery(State(registry): State<Arc<Registry>>) -> Response {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(registry.discovery()),
    )
        .into_response()
}
