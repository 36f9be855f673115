//! The authority as an OpenID Connect relying party, for the providers with `login`
//! settings (sign-in for `crate::authorize`): their endpoints from discovery (`{issuer}/.well-known/openid-configuration`,
//! cached), and the exchange of the code they return for an ID token at their token endpoint
//! (with PKCE, and the client secret when one is configured). The ID token is then verified by
//! [`crate::oidc::OidcVerifier::verify_login`].
//!
//! Transport errors and the providers' own error bodies are logged, never shown to people.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aip_aat::secret::SecretString;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::oidc::{OidcLogin, OidcProvider, url_scheme_allowed};

/// How long discovered endpoints are used before they are fetched again, in seconds.
const DISCOVERY_CACHE_SECS: i64 = 3_600;
/// Least time between two failed discoveries of one provider, in seconds.
const DISCOVERY_RETRY_SECS: i64 = 10;
/// Time limit of one request to a provider.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest discovery document or token response read, in bytes.
const MAX_PROVIDER_BODY: usize = 64 * 1024;

/// A provider's endpoints, from its discovery document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoints {
    pub(crate) authorization_endpoint: String,
    pub(crate) token_endpoint: String,
    /// Whether it sends `iss` with its authorization responses (RFC 9207), so one without
    /// it must be refused.
    pub(crate) sends_iss: bool,
}

/// Why sign-in through a provider failed (details are logged).
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoginError {
    /// Discovery failed or the document is unusable.
    #[error("the identity provider's configuration is unavailable")]
    Discovery,
    /// The token endpoint failed or refused the code.
    #[error("the identity provider did not complete the sign-in")]
    Exchange,
}

#[derive(Default)]
struct Cached {
    endpoints: Option<(Arc<Endpoints>, i64)>,
    failed_at: Option<i64>,
}

/// Discovery cache and HTTP client for the sign-in providers.
pub(crate) struct RelyingParty {
    http: reqwest::Client,
    cache: Mutex<HashMap<String, Cached>>,
}

impl std::fmt::Debug for RelyingParty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelyingParty").finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    #[serde(default)]
    authorization_response_iss_parameter_supported: bool,
}

#[derive(Deserialize)]
struct TokenResponse {
    id_token: String,
}

impl RelyingParty {
    /// A relying party whose requests never follow redirects.
    pub(crate) fn new() -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(PROVIDER_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The endpoints of `provider`, discovered (at most once per [`DISCOVERY_RETRY_SECS`]
    /// after a failure) or cached.
    pub(crate) async fn endpoints(&self, provider: &OidcProvider, now: i64) -> Result<Arc<Endpoints>, LoginError> {
        let mut cache = self.cache.lock().await;
        let cached = cache.entry(provider.issuer.clone()).or_default();
        if let Some((endpoints, at)) = &cached.endpoints
            && (0..DISCOVERY_CACHE_SECS).contains(&(now - at))
        {
            return Ok(endpoints.clone());
        }
        if cached
            .failed_at
            .is_some_and(|at| (0..DISCOVERY_RETRY_SECS).contains(&(now - at)))
        {
            // Keep using what was discovered before, if anything, while the provider fails.
            return cached
                .endpoints
                .as_ref()
                .map(|(e, _)| e.clone())
                .ok_or(LoginError::Discovery);
        }
        match self.discover(&provider.issuer).await {
            Ok(endpoints) => {
                let endpoints = Arc::new(endpoints);
                cached.endpoints = Some((endpoints.clone(), now));
                cached.failed_at = None;
                Ok(endpoints)
            }
            Err(reason) => {
                tracing::warn!(issuer = %provider.issuer, reason = %reason, "OpenID Connect discovery failed");
                cached.failed_at = Some(now);
                cached
                    .endpoints
                    .as_ref()
                    .map(|(e, _)| e.clone())
                    .ok_or(LoginError::Discovery)
            }
        }
    }

    async fn discover(&self, issuer: &str) -> Result<Endpoints, String> {
        let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
        let response = self
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("HTTP status {}", response.status()));
        }
        let body = read_body(response).await?;
        let document: Discovery =
            serde_json::from_slice(&body).map_err(|e| format!("not a discovery document: {e}"))?;
        // OpenID Connect Discovery §4.3: the document must name exactly this issuer.
        if document.issuer != issuer {
            return Err(format!("the document names another issuer: {:?}", document.issuer));
        }
        for endpoint in [&document.authorization_endpoint, &document.token_endpoint] {
            let parsed = reqwest::Url::parse(endpoint).map_err(|_| format!("{endpoint:?} is not a URL"))?;
            if !url_scheme_allowed(&parsed) || parsed.fragment().is_some() {
                return Err(format!(
                    "{endpoint:?} must be https (http only on loopback), without fragment"
                ));
            }
        }
        Ok(Endpoints {
            authorization_endpoint: document.authorization_endpoint,
            token_endpoint: document.token_endpoint,
            sends_iss: document.authorization_response_iss_parameter_supported,
        })
    }

    /// Exchanges the code a provider returned (RFC 6749 §4.1.3, with the PKCE verifier) for
    /// its ID token.
    pub(crate) async fn exchange(
        &self,
        provider: &OidcProvider,
        login: &OidcLogin,
        endpoints: &Endpoints,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<SecretString, LoginError> {
        let mut pairs = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ];
        let mut request = self
            .http
            .post(&endpoints.token_endpoint)
            .header(reqwest::header::ACCEPT, "application/json")
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        match &login.client_secret {
            // RFC 6749 §2.3.1: both parts form-encoded, then Basic.
            Some(secret) => {
                let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                let credentials = format!("{}:{}", encode(&login.client_id), encode(secret.expose()));
                let value = SecretString::new(format!("Basic {}", STANDARD.encode(credentials)));
                request = request.header(reqwest::header::AUTHORIZATION, value.expose());
            }
            None => pairs.push(("client_id", &login.client_id)),
        }
        // The serializer is not `Send`: the body is made before anything is awaited.
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        let response = request.body(body).send().await.map_err(|e| {
            tracing::warn!(issuer = %provider.issuer, error = %e, "the identity provider's token endpoint failed");
            LoginError::Exchange
        })?;
        let status = response.status();
        let body = read_body(response).await.map_err(|reason| {
            tracing::warn!(issuer = %provider.issuer, reason = %reason, "reading the identity provider's token response failed");
            LoginError::Exchange
        })?;
        if !status.is_success() {
            let error = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_default();
            tracing::warn!(issuer = %provider.issuer, %status, error = %error, "the identity provider refused the code");
            return Err(LoginError::Exchange);
        }
        let tokens: TokenResponse = serde_json::from_slice(&body).map_err(|_| {
            tracing::warn!(issuer = %provider.issuer, "the identity provider's token response has no id_token");
            LoginError::Exchange
        })?;
        Ok(SecretString::new(tokens.id_token))
    }
}

async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    if response
        .content_length()
        .is_some_and(|len| len > MAX_PROVIDER_BODY as u64)
    {
        return Err(format!("body larger than {MAX_PROVIDER_BODY} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("reading body: {e}"))? {
        if body.len() + chunk.len() > MAX_PROVIDER_BODY {
            return Err(format!("body larger than {MAX_PROVIDER_BODY} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
