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
mod publication;
mod service;
mod stream;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post, put};

use crate::metrics as m;
use crate::service::Registry;

/// The API routes over `registry`.
pub fn router(registry: Arc<Registry>) -> Router {
    router_with(registry, Router::new())
}

/// The API routes over `registry`, plus `extra` (another component's routes, such as the
/// token issuer's, served on the same listener). Errors, limits and metrics apply to all.
pub fn router_with(registry: Arc<Registry>, extra: Router) -> Router {
    // Install the metrics recorder now, so that traffic before the first scrape counts.
    let _ = m::handle();
    let own = Router::new()
        .route("/v1/agents", post(agents::register).get(agents::list_agents))
        .route("/v1/agents/{id}", get(agents::agent).delete(agents::revoke_agent))
        .route("/v1/agents/{id}/rotate-key", post(agents::rotate_key))
        .route("/v1/agents/{id}/redirect-uris", put(agents::set_redirect_uris))
        .route("/v1/agents/{id}/certificate", post(agents::renew_certificate))
        .route("/v1/agents/{id}/suspend", post(agents::suspend))
        .route("/v1/agents/{id}/reactivate", post(agents::reactivate))
        .route("/v1/agents/{id}/revoke", post(agents::revoke_agent))
        .route(
            "/v1/registration-tokens",
            post(credentials::create_registration_token).get(credentials::list_registration_tokens),
        )
        .route(
            "/v1/registration-tokens/{token_id}",
            delete(credentials::revoke_registration_token),
        )
        .route(
            "/v1/access-tokens",
            post(credentials::create_access_token).get(credentials::list_access_tokens),
        )
        .route("/v1/access-tokens/{token_id}", delete(credentials::revoke_access_token))
        .route("/v1/jwks", get(publication::jwks))
        .route("/v1/crl", get(publication::crl_der))
        .route("/v1/crl.pem", get(publication::crl_pem))
        .route("/v1/crl/{issuer}", get(publication::issuer_crl))
        .route(
            "/v1/revocations",
            get(publication::revocations).post(publication::publish_revocations),
        )
        .route("/v1/whoami", get(credentials::whoami))
        .route("/v1/revocations.jws", get(publication::revocations_jws))
        .route("/v1/revocations/stream", get(stream::revocation_stream))
        .route("/.well-known/aip-configuration", get(publication::discovery))
        .route("/health", get(service::health))
        .route("/metrics", get(service::metrics_text))
        .with_state(registry);
    own.merge(extra)
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
