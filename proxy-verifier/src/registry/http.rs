//! HTTP to the registry: the only place that speaks it. The rest of the link asks for three
//! things — the key set (a bounded GET), the revocation list (a bounded, conditional GET with
//! ETag) and the event stream — and gets bytes or a [`LinkError`] naming the URL, never a token.
//!
//! Plain http is accepted only for a loopback registry, URLs carrying credentials are refused,
//! redirects are not followed (they could carry the bearer token elsewhere), and with
//! `spec.registry.tls.ca_cert` the registry's CA is the only root trusted.

use std::path::Path;
use std::time::Duration;

use aip_aat::secret::SecretString;
use futures_util::{Stream, StreamExt as _};

use crate::policy::RegistrySettings;

use super::error::LinkError;
use super::files::read_bounded;
use super::limits::{BACKGROUND_TIMEOUT, MAX_JWKS_BYTES, MAX_LIST_BYTES};

/// TCP and TLS connection timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest CA certificate file.
const MAX_CA_BYTES: usize = 1 << 20;

/// HTTP to the registry.
pub(super) struct Http {
    client: reqwest::Client,
    /// The endpoint, without a trailing slash.
    base: String,
    token: Option<SecretString>,
}

/// A successful answer.
pub(super) enum Fetched {
    NotModified,
    Body { bytes: Vec<u8>, etag: Option<String> },
}

impl Http {
    pub(super) fn new(settings: &RegistrySettings) -> Result<Self, LinkError> {
        let base = settings.endpoint.trim_end_matches('/').to_owned();
        let url = reqwest::Url::parse(&base).map_err(|_| LinkError::Config("endpoint is not a valid URL"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(LinkError::Config(
                "endpoint must not carry credentials: put the token in spec.registry.auth",
            ));
        }
        if !(url.scheme() == "https" || (url.scheme() == "http" && is_loopback_host(&url))) {
            return Err(LinkError::Config(
                "endpoint must be an https:// URL (plain http only for a loopback registry)",
            ));
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            // A redirect could carry the bearer token elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("aip-proxy/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &settings.ca_cert {
            let ca_error = |reason: &str| LinkError::CaCert {
                path: path.clone(),
                reason: reason.to_owned(),
            };
            let pem = read_bounded(path, MAX_CA_BYTES).map_err(|e| match e {
                LinkError::File { reason, .. } => ca_error(&reason),
                other => other,
            })?;
            let roots =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|_| ca_error("not a PEM certificate bundle"))?;
            if roots.is_empty() {
                return Err(ca_error("holds no certificate"));
            }
            // The registry's CA is the only root trusted for it.
            builder = builder.tls_certs_only(roots);
        }
        let client = builder
            .build()
            .map_err(|e| ca_error_or_config(settings.ca_cert.as_deref(), &e))?;
        Ok(Self {
            client,
            base,
            token: settings
                .bearer_token
                .as_deref()
                .filter(|t| !t.is_empty())
                .map(SecretString::new),
        })
    }

    /// The endpoint, without a trailing slash.
    pub(super) fn endpoint(&self) -> &str {
        &self.base
    }

    /// The URL of `path` at the registry, as named in errors.
    pub(super) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The key set at `url` (`/v1/jwks`), its body bounded by [`MAX_JWKS_BYTES`]; no token is
    /// sent.
    pub(super) async fn fetch_jwks(&self, url: &str, timeout: Duration) -> Result<Vec<u8>, LinkError> {
        match self.get(url, timeout, MAX_JWKS_BYTES, None, false).await? {
            Fetched::Body { bytes, .. } => Ok(bytes),
            Fetched::NotModified => Err(LinkError::Status {
                url: url.to_owned(),
                status: 304,
                hint: "",
            }),
        }
    }

    /// The revocation list at `url` (`/v1/revocations`), its body bounded by
    /// [`MAX_LIST_BYTES`]; with `etag`, conditional.
    pub(super) async fn fetch_revocations(
        &self,
        url: &str,
        etag: Option<&str>,
        timeout: Duration,
    ) -> Result<Fetched, LinkError> {
        self.get(url, timeout, MAX_LIST_BYTES, etag, true).await
    }

    /// Opens the event stream at `url` (`/v1/revocations/stream`) after version `from`: its
    /// bytes as they arrive, a failure as one line without the URL.
    pub(super) async fn open_events(
        &self,
        url: &str,
        from: u64,
    ) -> Result<impl Stream<Item = Result<impl AsRef<[u8]>, String>>, LinkError> {
        let response = self.open_stream(url, from).await?;
        Ok(response
            .bytes_stream()
            .map(|chunk| chunk.map_err(|e| aip_aat::error_chain(&e.without_url()))))
    }

    /// `GET url` within `timeout`, the body bounded by `limit`; with `etag`, conditional.
    async fn get(
        &self,
        url: &str,
        timeout: Duration,
        limit: usize,
        etag: Option<&str>,
        authenticated: bool,
    ) -> Result<Fetched, LinkError> {
        let mut request = self.client.get(url).timeout(timeout);
        if authenticated && let Some(token) = &self.token {
            request = request.bearer_auth(token.expose());
        }
        if let Some(etag) = etag {
            request = request.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        let transport = |e: reqwest::Error| transport_error(url, e, timeout);
        let mut response = request.send().await.map_err(transport)?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_MODIFIED && etag.is_some() {
            return Ok(Fetched::NotModified);
        }
        if !status.is_success() {
            return Err(status_error(url, status));
        }
        let too_large = || LinkError::TooLarge {
            source_name: url.to_owned(),
            limit,
        };
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let etag = response
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if bytes.len() + chunk.len() > limit {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Fetched::Body { bytes, etag })
    }

    /// Opens the event stream after version `from`.
    async fn open_stream(&self, url: &str, from: u64) -> Result<reqwest::Response, LinkError> {
        let mut request = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .header("Last-Event-ID", from.to_string());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose());
        }
        let response = tokio::time::timeout(BACKGROUND_TIMEOUT, request.send())
            .await
            .map_err(|_| LinkError::Transport {
                url: url.to_owned(),
                reason: format!("no answer within {} s", BACKGROUND_TIMEOUT.as_secs()),
            })?
            .map_err(|e| transport_error(url, e, BACKGROUND_TIMEOUT))?;
        if !response.status().is_success() {
            return Err(status_error(url, response.status()));
        }
        Ok(response)
    }
}

/// `localhost`, `127.0.0.1` or `[::1]`: the hosts the policy loader accepts plain http for.
fn is_loopback_host(url: &reqwest::Url) -> bool {
    matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"))
}

fn transport_error(url: &str, error: reqwest::Error, timeout: Duration) -> LinkError {
    let reason = if error.is_timeout() {
        format!("no answer within {} ms", timeout.as_millis())
    } else {
        aip_aat::error_chain(&error.without_url())
    };
    LinkError::Transport {
        url: url.to_owned(),
        reason,
    }
}

fn status_error(url: &str, status: reqwest::StatusCode) -> LinkError {
    let hint = match status.as_u16() {
        401 => " (check spec.registry.auth: the registry refused the token)",
        403 => " (spec.registry.auth: the token cannot read registry data; use a reader token)",
        _ => "",
    };
    LinkError::Status {
        url: url.to_owned(),
        status: status.as_u16(),
        hint,
    }
}

fn ca_error_or_config(ca_cert: Option<&Path>, error: &reqwest::Error) -> LinkError {
    match ca_cert {
        Some(path) => LinkError::CaCert {
            path: path.to_owned(),
            reason: aip_aat::error_chain(error),
        },
        None => LinkError::Config("the HTTP client could not be built"),
    }
}
