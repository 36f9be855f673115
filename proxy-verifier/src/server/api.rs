//! The API's JSON body reader: bodies are limited to [`MAX_BODY_BYTES`] and must be declared
//! JSON. Error answers are `aip_http::ApiError`'s, as the authority's are.

use aip_http::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::header::HeaderMap;
use serde::de::DeserializeOwned;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Reads a JSON request body strictly: it must be declared `application/json` (else 415), fit
/// in [`MAX_BODY_BYTES`] (else 413) and be exactly `shape` (else 400, naming `shape`).
pub(super) fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    shape: &str,
) -> Result<T, ApiError> {
    if !aip_http::declares_json(headers) {
        return Err(aip_http::not_json());
    }
    let body = body.map_err(|rejection| aip_http::unreadable_body(&rejection, MAX_BODY_BYTES))?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body must be {shape} and nothing else: {e}")))
}
