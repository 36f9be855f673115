//! The proxy's optional HTTP server (`aip-proxy --listen ADDR`, spec 6 and IETF draft 6.5).
//!
//! | route | auth | what |
//! | --- | --- | --- |
//! | `GET /health` | none | `{"status":"ok","policy","policy_hash","mode","uptime_seconds"}` |
//! | `GET /metrics` | none | Prometheus text (spec 6.4 names) |
//! | `POST /v1/validate` | admin bearer | evaluate a tool call with the policy in force (spec 6.2) |
//! | `GET /v1/hitl` | admin bearer | the pending holds |
//! | `POST /v1/hitl/{hold_id}/approve`, `/deny` | admin bearer | answer a hold (200, 404, 409) |
//! | `POST /v1/tools/{tool}/accept` | admin bearer | accept a tool that changed since first listed (200, 404) |
//!
//! The admin token comes from `AIP_PROXY_TOKEN`, or from a token file that is created with a
//! 32-byte random secret when missing ([`AdminToken::load`]); it is never printed.
//! Only its SHA-256 digest is kept, and presented tokens are compared digest to digest in
//! constant time. The token is never logged.
//!
//! Errors are JSON `{"error","error_description"}`; a missing or wrong token gets 401 with
//! `WWW-Authenticate: Bearer`. Bodies are limited to [`MAX_BODY_BYTES`] and parsed strictly.
//!
//! The server has no TLS, so [`spawn`] only listens on loopback addresses; for remote access put
//! a TLS-terminating reverse proxy in front of it.
//!
//! # `/v1/validate` and rate limits
//!
//! Validation runs the same evaluation as a relayed `tools/call` (spec 4.3 through
//! [`Engine::check_tool_call`](crate::engine::Engine::check_tool_call), then the mode of 4.4 through [`Engine::resolve`](crate::engine::Engine::resolve)), against the
//! same engine, so **a validation consumes a token from the tool's rate-limit bucket**, shared
//! with the relay. A validation is taken to announce a call about to be made; counting it means
//! the endpoint cannot be used to learn a different answer than the relay would give. The
//! endpoint needs the admin token, so nobody else can drain a bucket through it.
//!
//! Every answer is `200` with `decision` `allow`, `block` or `ask` (spec 6.2.2): the request was
//! evaluated, and the decision is the result. Monitor mode answers `allow` with the violations it
//! would have refused for. DLP request scanning is not part of the answer yet, nor is an AAT
//! (`aat_status` is reserved in [`ValidateResponse`]).

//!
//! # Files
//!
//! - `api` — the error answers (`ApiError`) and the strict JSON body reader;
//! - `admin` — the [`AdminToken`] and the extractor that guards the admin routes;
//! - `state` — the [`ServerState`] the routes read;
//! - `status` — `/health` and `/metrics`;
//! - `validate` — `/v1/validate` and its request and answer types;
//! - `hitl` — the approval routes;
//! - `tools` — accepting a changed tool;
//! - [`openapi`] — the routes' OpenAPI description, part of the proxy's
//!   ([`crate::openapi`]), and their route table;
//! - this file — the router, [`spawn`] and the [`ServerHandle`].

mod admin;
mod api;
mod hitl;
pub mod openapi;
mod state;
mod status;
mod tools;
mod validate;

use std::io;
use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use metrics_exporter_prometheus::PrometheusHandle;

use aip_http::routes::Routes;

pub use admin::{AdminToken, AdminTokenError, MIN_TOKEN_LEN, TOKEN_ENV};
pub use api::MAX_BODY_BYTES;
pub use state::ServerState;
pub use validate::{AatStatus, PROOF_HEADER, ValidateRequest, ValidateResponse, Violation, evaluate, evaluate_for};

/// How long [`ServerHandle::shutdown`] lets open connections finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The routes, before their state is given.
fn own_routes() -> Routes<ServerState> {
    Routes::new()
        .get("/health", status::health)
        .get("/metrics", status::metrics_text)
        .post("/v1/validate", validate::validate)
        .get("/v1/hitl", hitl::list_holds)
        .post("/v1/hitl/{hold_id}/approve", hitl::approve)
        .post("/v1/hitl/{hold_id}/deny", hitl::deny)
        .post("/v1/tools/{tool}/accept", tools::accept)
}

/// The routes over `state`.
pub fn router(state: ServerState) -> Router {
    own_routes()
        .into_router()
        .fallback(aip_http::not_found)
        .method_not_allowed_fallback(aip_http::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ServerHandle {
    /// The address the server listens on (the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections, lets open ones finish (for at most a few seconds), and
    /// waits for the server thread. Dropping the handle stops the server without waiting.
    pub fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the HTTP server thread failed");
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Binds `addr` now (so that a bad or busy address is the caller's error) and serves
/// [`router`]`(state)` on a thread of its own with a single-threaded tokio runtime. Refuses a
/// non-loopback address: this server has no TLS.
pub fn spawn(addr: SocketAddr, state: ServerState) -> io::Result<ServerHandle> {
    if !addr.ip().is_loopback() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "refusing to listen on {addr}: the proxy's HTTP server has no TLS, so it listens only on a \
                 loopback address (127.0.0.1 or [::1]); put a TLS-terminating reverse proxy in front for \
                 remote access"
            ),
        ));
    }
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let local_addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let listener = {
        let _entered = runtime.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    let upkeep = state.metrics.clone();
    let app = router(state);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("aip-proxy-http".into())
        .spawn(move || runtime.block_on(serve(listener, app, stopped, upkeep)))?;
    tracing::info!(%local_addr, "HTTP server listening");
    Ok(ServerHandle {
        local_addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}

async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    stopped: tokio::sync::oneshot::Receiver<()>,
    upkeep: Option<PrometheusHandle>,
) {
    if let Some(handle) = upkeep {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                every.tick().await;
                handle.run_upkeep();
            }
        });
    }
    let (grace, graceful) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = graceful.await;
    });
    let mut task = tokio::spawn(server.into_future());
    tokio::select! {
        result = &mut task => {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "the HTTP server stopped"),
                Err(e) => tracing::error!(error = %e, "the HTTP server failed"),
            }
            return;
        }
        _ = stopped => {}
    }
    let _ = grace.send(());
    if tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await.is_err() {
        tracing::warn!("open HTTP connections did not finish in time; closing them");
        task.abort();
    }
}
