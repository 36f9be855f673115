//! The front door's listener: bound before anything else (so that the resource URI, which AATs
//! must name, is known when the AAT checks start), TLS required off loopback, the connection
//! limits and timeouts of `aip_http::connections`, and a graceful stop.

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aip_http::connections::{Admission, ConnectionSettings};
use tokio::sync::Notify;

use crate::audit::AuditLog;
use crate::engine::SchemaBook;
use crate::hitl::Hitl;
use crate::identity::Identity;
use crate::policy::{RegistrySettings, ReplayStore, RevocationMode};
use crate::relay::RelayOptions;
use crate::state::PolicyHandle;

use super::metadata::metadata_url;
use super::options::{FrontDoorOptions, TlsFiles, Upstream, origin_of, resource_uri};
use super::routes::router;
use super::session::Sessions;
use super::state::{Door, Server};
use super::upstream::HttpServer;

/// The front door's connection limits.
const CONNECTIONS: ConnectionSettings = ConnectionSettings {
    max_connections: 1_024,
    header_read_timeout: Duration::from_secs(10),
    // Longer than the 15 s between keep-alives of an idle event stream; raised to the call
    // timeout when that is longer.
    idle_timeout: Duration::from_secs(120),
    tls_handshake_timeout: Duration::from_secs(10),
};
/// How long requests in flight may take to finish at a stop.
const GRACE: Duration = Duration::from_secs(5);
/// How often idle sessions are swept.
const SWEEP: Duration = Duration::from_secs(60);

/// Why the front door could not start or serve.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrontDoorError {
    /// A setting is refused.
    #[error("{0}")]
    Config(String),
    /// The address cannot be listened on.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The listener's TLS files cannot be used.
    #[error("TLS: {0}")]
    Tls(std::io::Error),
}

/// A bound listener and the resource URI it answers for.
#[derive(Debug)]
pub struct Bound {
    listener: TcpListener,
    resource: String,
}

impl Bound {
    /// The canonical resource URI: the audience AATs must name.
    pub fn resource(&self) -> &str {
        &self.resource
    }
}

/// Binds `options.serve`: plain http only on a loopback address.
pub fn bind(options: &FrontDoorOptions) -> Result<Bound, FrontDoorError> {
    if options.tls.is_none() && !options.serve.ip().is_loopback() {
        return Err(FrontDoorError::Config(format!(
            "--serve {}: off loopback the front door needs TLS (--tls-cert and --tls-key)",
            options.serve
        )));
    }
    let listener = TcpListener::bind(options.serve).map_err(|source| FrontDoorError::Listen {
        addr: options.serve,
        source,
    })?;
    let bound = listener.local_addr().map_err(|source| FrontDoorError::Listen {
        addr: options.serve,
        source,
    })?;
    let resource =
        resource_uri(options.public_url.as_deref(), bound, options.tls.is_some()).map_err(FrontDoorError::Config)?;
    Ok(Bound { listener, resource })
}

/// The proxy's parts the front door serves with.
#[derive(Debug)]
pub struct Parts {
    /// The policy in force.
    pub policy: Arc<PolicyHandle>,
    /// Tool schemas seen.
    pub schemas: Arc<SchemaBook>,
    /// The audit log.
    pub audit: Arc<AuditLog>,
    /// Calls held for approval.
    pub hitl: Arc<Hitl>,
    /// The AAT checks (for the resource URI as audience).
    pub identity: Option<Arc<Identity>>,
    /// Relay settings (the message size cap is also the body limit).
    pub relay: RelayOptions,
    /// The registry, whose metadata names the authorization server.
    pub registry: Option<RegistrySettings>,
}

/// Serves until `stop` is notified; then lets requests in flight finish (at most a few
/// seconds).
pub fn serve(bound: Bound, options: FrontDoorOptions, parts: Parts, stop: Arc<Notify>) -> Result<(), FrontDoorError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("aip-proxy-http")
        .build()
        .map_err(|e| FrontDoorError::Config(format!("cannot start the HTTP runtime: {e}")))?;
    runtime.block_on(serve_async(bound, options, parts, stop))
}

async fn serve_async(
    bound: Bound,
    options: FrontDoorOptions,
    parts: Parts,
    stop: Arc<Notify>,
) -> Result<(), FrontDoorError> {
    let max_message = parts.relay.max_message;
    let (server, described) = match &options.upstream {
        Upstream::Http(upstream) => {
            let server = HttpServer::new(upstream, max_message).map_err(FrontDoorError::Config)?;
            let described = server.url().to_string();
            (Server::Http(server), described)
        }
        Upstream::Stdio(command) => (
            Server::Stdio(command.clone()),
            format!("stdio server {command:?}, one per session"),
        ),
    };
    let resource = bound.resource.clone();
    let mut origins: Vec<String> = options.allowed_origins.iter().filter_map(|o| origin_of(o)).collect();
    origins.extend(origin_of(&resource));
    let public_path = reqwest::Url::parse(&resource)
        .map(|u| u.path().to_owned())
        .unwrap_or_default();
    let checks_may_block = parts.identity.as_ref().is_some_and(|identity| {
        matches!(identity.settings().replay_store, ReplayStore::Redis { .. })
            || parts
                .registry
                .as_ref()
                .is_some_and(|r| r.revocation == RevocationMode::Online)
    });
    let door = Arc::new(Door {
        policy: parts.policy,
        schemas: parts.schemas,
        audit: parts.audit,
        hitl: parts.hitl,
        identity: parts.identity,
        relay_options: parts.relay,
        metadata_url: metadata_url(&resource),
        resource: resource.clone(),
        origins,
        server,
        sessions: Sessions::default(),
        registry: parts.registry,
        issuer: Mutex::new(None),
        checks_may_block,
    });
    // Known before the first client asks, when the authority is up.
    if door.identity.is_some() {
        let _ = door.issuer().await;
    }
    let app = router(Arc::clone(&door), &public_path);
    let handle = axum_server::Handle::new();
    tokio::spawn({
        let handle = handle.clone();
        async move {
            stop.notified().await;
            handle.graceful_shutdown(Some(GRACE));
        }
    });
    tokio::spawn({
        let door = Arc::clone(&door);
        async move {
            let mut every = tokio::time::interval(SWEEP);
            loop {
                every.tick().await;
                let gone = door.sessions.sweep();
                if !gone.is_empty() {
                    tracing::info!(sessions = gone.len(), "idle sessions ended");
                }
                // Their stdio servers stop as the last reference goes.
                tokio::task::block_in_place(|| drop(gone));
            }
        }
    });
    aip_http::logs::notice(format_args!(
        "aip-proxy: MCP front door at {resource} (fronting {described})"
    ));
    let listener = bound.listener;
    listener
        .set_nonblocking(true)
        .map_err(|source| FrontDoorError::Listen {
            addr: options.serve,
            source,
        })?;
    let addr = options.serve;
    // A request waits for the upstream without a byte on its connection for up to the call
    // timeout: the idle timeout must not end it first.
    let limits = ConnectionSettings {
        idle_timeout: CONNECTIONS.idle_timeout.max(door.call_timeout() + GRACE),
        ..CONNECTIONS
    };
    let admission = Admission::new(limits);
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    let configure = |server: axum_server::Server<SocketAddr>| {
        let mut server = server
            .handle(handle)
            .first_request_timeout(CONNECTIONS.header_read_timeout);
        server
            .http_builder()
            .http1()
            .header_read_timeout(CONNECTIONS.header_read_timeout)
            .max_buf_size(MAX_HEADER_BYTES);
        server
    };
    let from = |listener: TcpListener| {
        axum_server::from_tcp(listener).map_err(|source| FrontDoorError::Listen { addr, source })
    };
    let served = match &options.tls {
        Some(TlsFiles { cert, key }) => {
            let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .map_err(FrontDoorError::Tls)?;
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config)
                .handshake_timeout(CONNECTIONS.tls_handshake_timeout)
                .acceptor(admission);
            configure(from(listener)?).acceptor(acceptor).serve(service).await
        }
        None => configure(from(listener)?).acceptor(admission).serve(service).await,
    };
    served.map_err(|source| FrontDoorError::Listen { addr, source })
}

/// Largest request head (request line and headers) read.
const MAX_HEADER_BYTES: usize = 64 * 1024;
