//! HTTP to the registry, through the authority's API client (`aip_api::client::Client`). The
//! rest of the link asks for three things — the key set (a bounded GET), the revocation list
//! (a bounded, conditional GET with ETag) and the event stream — and gets bytes, events or a
//! [`LinkError`] naming the URL, never a token.
//!
//! Plain http is accepted only for a loopback registry, URLs carrying credentials are refused,
//! redirects are not followed (they could carry the bearer token elsewhere), and with
//! `spec.registry.tls.ca_cert` the registry's CA is the only root trusted.

use std::time::Duration;

use aip_api::client::{Client, ClientError, ClientOptions, Fetched, StreamEvent};
use futures_util::Stream;

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
    client: Client,
}

impl Http {
    pub(super) fn new(settings: &RegistrySettings) -> Result<Self, LinkError> {
        let base = settings.endpoint.trim_end_matches('/').to_owned();
        let url = reqwest_url(&base).ok_or(LinkError::Config("endpoint is not a valid URL"))?;
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
        let ca_error = |reason: String| match &settings.ca_cert {
            Some(path) => LinkError::CaCert {
                path: path.clone(),
                reason,
            },
            None => LinkError::Config("the HTTP client could not be built"),
        };
        let ca_pem = match &settings.ca_cert {
            Some(path) => Some(read_bounded(path, MAX_CA_BYTES).map_err(|e| match e {
                LinkError::File { reason, .. } => ca_error(reason),
                other => other,
            })?),
            None => None,
        };
        let mut options = ClientOptions::default();
        // The registry's CA, when given, is the only root trusted for it.
        options.ca_pem = ca_pem;
        options.connect_timeout = CONNECT_TIMEOUT;
        // Each call sets its own limit; the event stream has none.
        options.timeout = None;
        // A redirect could carry the bearer token elsewhere.
        options.follow_redirects = false;
        options.user_agent = Some(concat!("aip-proxy/", env!("CARGO_PKG_VERSION")).to_owned());
        options.max_body = MAX_LIST_BYTES;
        let client = Client::with_options(&base, settings.bearer_token.clone(), &options).map_err(|e| match e {
            ClientError::Roots(roots) => ca_error(roots.to_string()),
            ClientError::Transport { reason, .. } => ca_error(reason),
            _ => LinkError::Config("the HTTP client could not be built"),
        })?;
        Ok(Self { client })
    }

    /// The endpoint, without a trailing slash.
    pub(super) fn endpoint(&self) -> &str {
        self.client.base()
    }

    /// The URL of `path` at the registry, as named in errors.
    pub(super) fn url(&self, path: &str) -> String {
        self.client.url(path)
    }

    /// The key set (`/v1/jwks`), its body bounded by [`MAX_JWKS_BYTES`]; no token is sent.
    pub(super) async fn fetch_jwks(&self, timeout: Duration) -> Result<Vec<u8>, LinkError> {
        let url = self.url("/v1/jwks");
        self.client
            .jwks_document(timeout, MAX_JWKS_BYTES)
            .await
            .map_err(|e| link_error(&url, e))
    }

    /// The revocation list (`/v1/revocations`), its body bounded by [`MAX_LIST_BYTES`]; with
    /// `etag`, conditional.
    pub(super) async fn fetch_revocations(&self, etag: Option<&str>, timeout: Duration) -> Result<Fetched, LinkError> {
        let url = self.url("/v1/revocations");
        self.client
            .revocations_since(etag, timeout, MAX_LIST_BYTES)
            .await
            .map_err(|e| link_error(&url, e))
    }

    /// Opens the event stream (`/v1/revocations/stream`) after version `from`: its events as
    /// they arrive.
    pub(super) async fn open_events(
        &self,
        from: u64,
    ) -> Result<impl Stream<Item = Result<StreamEvent, LinkError>> + use<>, LinkError> {
        use futures_util::StreamExt as _;

        let url = self.url("/v1/revocations/stream");
        let events = self
            .client
            .revocation_events(from, BACKGROUND_TIMEOUT)
            .await
            .map_err(|e| link_error(&url, e))?;
        Ok(events.map(move |event| event.map_err(|e| link_error(&url, e))))
    }
}

impl Http {
    /// The `issuer` of the authority's authorization server metadata (RFC 8414).
    pub(super) async fn authorization_server(&self, timeout: Duration) -> Result<String, LinkError> {
        let url = self.url("/.well-known/oauth-authorization-server");
        match tokio::time::timeout(timeout, self.client.authorization_server_metadata()).await {
            Ok(Ok(metadata)) => Ok(metadata.issuer),
            Ok(Err(e)) => Err(link_error(&url, e)),
            Err(_) => Err(LinkError::Transport {
                url,
                reason: format!("no answer within {} s", timeout.as_secs()),
            }),
        }
    }
}

/// The URL `text`, parsed.
fn reqwest_url(text: &str) -> Option<reqwest::Url> {
    reqwest::Url::parse(text).ok()
}

/// `localhost`, `127.0.0.1` or `[::1]`: the hosts the policy loader accepts plain http for.
fn is_loopback_host(url: &reqwest::Url) -> bool {
    matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"))
}

/// A failed request of `url`, in the link's words.
fn link_error(url: &str, error: ClientError) -> LinkError {
    match error {
        ClientError::Transport { url, reason, .. } => LinkError::Transport { url, reason },
        ClientError::TooLarge { url, limit } => LinkError::TooLarge {
            source_name: url,
            limit,
        },
        ClientError::Api { status, .. } => {
            let hint = match status {
                401 => " (check spec.registry.auth: the registry refused the token)",
                403 => " (spec.registry.auth: the token cannot read registry data; use a reader token)",
                _ => "",
            };
            LinkError::Status {
                url: url.to_owned(),
                status,
                hint,
            }
        }
        other => LinkError::Transport {
            url: url.to_owned(),
            reason: other.to_string(),
        },
    }
}
