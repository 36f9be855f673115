//! The registry's HTTP API: [`router`] (the registry served alone) and [`router_with`] (with
//! another component's routes, such as the token issuer's, on the same listener).
//!
//! Errors become responses in one place ([`aip_http::ApiError`], from [`RegistryError`] in
//! `errors.rs`): an OAuth-style `{"error", "error_description"}` body with the right status,
//! `WWW-Authenticate` on 401, and internal details logged but never sent. Bodies are limited
//! to [`aip_http::MAX_BODY_BYTES`] and parsed strictly.
//!
//! [`RegistryError`]: crate::service::RegistryError

mod agents;
mod auth;
mod credentials;
mod errors;
pub mod openapi;
mod publication;
mod service;
mod stream;

use std::sync::Arc;
use std::time::Instant;

use aip_http::routes::{Route, Routes};
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::Response;

use crate::metrics as m;
use crate::service::Registry;

/// The API routes over `registry`.
pub fn router(registry: Arc<Registry>) -> Router {
    router_with(registry, Routes::new())
}

/// The registry's own routes, before their state is given: the one list of what it serves.
fn own_routes() -> Routes<Arc<Registry>> {
    Routes::new()
        .post("/v1/agents", agents::register)
        .get("/v1/agents", agents::list_agents)
        .get("/v1/agents/{id}", agents::agent)
        .delete("/v1/agents/{id}", agents::delete_agent)
        .post("/v1/agents/{id}/rotate-key", agents::rotate_key)
        .put("/v1/agents/{id}/redirect-uris", agents::set_redirect_uris)
        .post("/v1/agents/{id}/certificate", agents::renew_certificate)
        .post("/v1/agents/{id}/suspend", agents::suspend)
        .post("/v1/agents/{id}/reactivate", agents::reactivate)
        .post("/v1/agents/{id}/revoke", agents::revoke_agent)
        .post("/v1/registration-tokens", credentials::create_registration_token)
        .get("/v1/registration-tokens", credentials::list_registration_tokens)
        .delete(
            "/v1/registration-tokens/{token_id}",
            credentials::revoke_registration_token,
        )
        .post("/v1/access-tokens", credentials::create_access_token)
        .get("/v1/access-tokens", credentials::list_access_tokens)
        .delete("/v1/access-tokens/{token_id}", credentials::revoke_access_token)
        .get("/v1/jwks", publication::jwks)
        .get("/v1/crl", publication::crl_der)
        .get("/v1/crl.pem", publication::crl_pem)
        .get("/v1/crl/{issuer}", publication::issuer_crl)
        .get("/v1/revocations", publication::revocations)
        .post("/v1/revocations", publication::publish_revocations)
        .get("/v1/whoami", credentials::whoami)
        .get("/v1/revocations.jws", publication::revocations_jws)
        .get("/v1/revocations/stream", stream::revocation_stream)
        .get("/.well-known/aip-configuration", publication::discovery)
        .get("/health", service::health)
        .get("/metrics", service::metrics_text)
}

/// Every method and path the registry routes (without another component's).
pub fn route_table() -> Vec<Route> {
    own_routes().table()
}

/// The API routes over `registry`, plus `extra` (another component's routes, such as the
/// token issuer's, served on the same listener). Errors, limits and metrics apply to all.
pub fn router_with(registry: Arc<Registry>, extra: Routes) -> Router {
    // Install the metrics recorder now, so that traffic before the first scrape counts.
    let _ = m::handle();
    let own: Routes = own_routes().with_state(registry);
    own.merge(extra)
        .into_router()
        .fallback(aip_http::not_found)
        .method_not_allowed_fallback(aip_http::method_not_allowed)
        .layer(DefaultBodyLimit::max(aip_http::MAX_BODY_BYTES))
        .layer(middleware::from_fn(track))
}

/// Counts and times every request by method, route template and status.
async fn track(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let method = if method == Method::GET || method == Method::POST || method == Method::DELETE {
        method.as_str().to_owned()
    } else {
        "OTHER".into()
    };
    metrics::counter!(m::HTTP_REQUESTS, "method" => method, "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!(m::HTTP_DURATION, "route" => route).record(started.elapsed().as_secs_f64());
    response
}
