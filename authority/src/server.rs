//! Serving an opened [`Authority`]: one listener (TLS off loopback) for the registry's and the
//! token issuer's routes, their background work, and a graceful stop.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::open::Authority;

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

    /// The routes of both services on one router, with the registry's limits, fallbacks and
    /// metrics.
    pub fn router(&self) -> axum::Router {
        aip_registry::http::router_with(self.registry.clone(), aip_issuer::http::routes(self.issuer.clone()))
    }

    /// Serves until `shutdown` completes, then lets requests in flight finish (for at most
    /// [`GRACE`]) and stops the background work.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
        let addr = self.address()?;
        let router = self.router();
        let handle = axum_server::Handle::new();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stop.wait_for(|stop| *stop).await;
        };
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
        let served = match &self.tls {
            Some(tls) => {
                let config = tls_config(tls.cert.clone(), tls.key.clone()).await?;
                axum_server::bind_rustls(addr, config)
                    .handle(handle)
                    .serve(service)
                    .await
            }
            None => axum_server::bind(addr).handle(handle).serve(service).await,
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

async fn tls_config(cert: PathBuf, key: PathBuf) -> Result<axum_server::tls_rustls::RustlsConfig, ServeError> {
    axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
        .await
        .map_err(ServeError::Tls)
}
