//! Serving an opened [`Authority`]: one listener (TLS off loopback) for the registry's and the
//! token issuer's routes, their background work, and a graceful stop.
//!
//! Every connection is admitted within the bounds of `[connections]` ([`Admission`]): a slow
//! or idle client is dropped, and the number open at once is capped. At a stop, requests in
//! flight finish and event streams end, so the process exits at once however many
//! subscribers are connected.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::Response;
use futures_util::StreamExt as _;
use tokio::sync::watch;

use crate::open::Authority;
use crate::rate_limit;
use crate::ready::Readiness;
use aip_http::connections::Admission;

/// How long requests in flight may run on after a stop is asked for.
const GRACE: Duration = Duration::from_secs(10);

/// The authority could not be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The listen address is not `IP:PORT`.
    #[error("listen address {0:?} is not IP:PORT")]
    Address(String),
    /// A non-loopback address without TLS.
    #[error("refusing to listen on {0} without TLS")]
    NoTls(SocketAddr),
    /// The TLS certificate or key cannot be used.
    #[error("TLS certificate or key: {0}")]
    Tls(std::io::Error),
    /// The listener failed.
    #[error("cannot serve on {addr}: {source}")]
    Listener {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

impl Authority {
    /// The address to listen on, checked: TLS is required off loopback.
    pub fn address(&self) -> Result<SocketAddr, ServeError> {
        let addr: SocketAddr = self
            .listen
            .parse()
            .map_err(|_| ServeError::Address(self.listen.clone()))?;
        if !addr.ip().is_loopback() && self.tls.is_none() {
            return Err(ServeError::NoTls(addr));
        }
        Ok(addr)
    }

    /// The routes of both services, `/ready` and `/openapi.json` on one router, with the registry's limits,
    /// fallbacks and metrics, the rate limits (unless turned off), the early `413` for a
    /// declared body past the limit, and around all of them the request id and log span of
    /// every request ([`aip_http::request_id`]).
    pub fn router(&self) -> axum::Router {
        let readiness = Readiness::new(self.database.clone(), self.registry.clone(), self.issuer.clone());
        let extra = aip_issuer::http::routes(self.issuer.clone())
            .merge(readiness.routes())
            .merge(crate::openapi::routes());
        let router = aip_registry::http::router_with(self.registry.clone(), extra);
        let router = match &self.rate_limits {
            Some(limits) => router.layer(middleware::from_fn_with_state(limits.clone(), rate_limit::limit)),
            None => router,
        };
        router
            .layer(middleware::from_fn(aip_http::refuse_oversized_bodies))
            .layer(DefaultBodyLimit::max(aip_http::MAX_BODY_BYTES))
            .layer(middleware::from_fn(aip_http::request_id::trace_requests))
    }

    /// Serves until `shutdown` completes, then lets requests in flight finish (for at most
    /// [`GRACE`]) and stops the background work.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
        let addr = self.address()?;
        let handle = axum_server::Handle::new();
        let (stop_tx, stop_rx) = watch::channel(false);
        let router = self
            .router()
            .layer(middleware::from_fn_with_state(stop_rx.clone(), end_streams_at_stop));
        let registry = tokio::spawn(self.registry.clone().run_background(stopped(stop_rx.clone())));
        let issuer = tokio::spawn(self.issuer.clone().run_background(stopped(stop_rx.clone())));
        tokio::spawn({
            let handle = handle.clone();
            async move {
                shutdown.await;
                tracing::info!("shutting down: finishing requests in flight");
                handle.graceful_shutdown(Some(GRACE));
                let _ = stop_tx.send(true);
            }
        });
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        tokio::spawn({
            let handle = handle.clone();
            async move {
                if let Some(bound) = handle.listening().await {
                    tracing::info!(address = %format!("{scheme}://{bound}"), "listening");
                }
            }
        });
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        let limits = self.connections;
        let admission = Admission::new(limits);
        let server = |server: axum_server::Server<SocketAddr>| {
            let mut server = server.handle(handle).first_request_timeout(limits.header_read_timeout);
            server
                .http_builder()
                .http1()
                .header_read_timeout(limits.header_read_timeout);
            server
        };
        let served = match &self.tls {
            Some(tls) => {
                let config = tls_config(tls.cert.clone(), tls.key.clone()).await?;
                let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config)
                    .handshake_timeout(limits.tls_handshake_timeout)
                    .acceptor(admission);
                server(axum_server::bind(addr)).acceptor(acceptor).serve(service).await
            }
            None => server(axum_server::bind(addr)).acceptor(admission).serve(service).await,
        };
        served.map_err(|source| ServeError::Listener { addr, source })?;
        stopped(stop_rx).await;
        let _ = registry.await;
        let _ = issuer.await;
        // The log at rest ends with a signed head.
        match self.database.checkpoint().await {
            Ok(Some(seq)) => tracing::info!(seq, "signed the audit log's head"),
            Ok(None) => {}
            Err(e) => tracing::error!("cannot sign the audit log's head: {e}"),
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Completes when a stop is asked for.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Middleware: an event stream (`text/event-stream`) ends when a stop is asked for, so that a
/// subscriber does not hold the process for the whole grace period.
async fn end_streams_at_stop(State(stop): State<watch::Receiver<bool>>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let streaming = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if !streaming {
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = Body::from_stream(body.into_data_stream().take_until(stopped(stop)));
    Response::from_parts(parts, body)
}

async fn tls_config(cert: PathBuf, key: PathBuf) -> Result<axum_server::tls_rustls::RustlsConfig, ServeError> {
    axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
        .await
        .map_err(ServeError::Tls)
}
