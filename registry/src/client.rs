//! A client of the registry's HTTP API (used by `aip-ca` and by remote issuers).

use std::time::Duration;

use aip_aat::ids::AgentId;
use aip_aat::keys::{Jwks, SignError, Signer};
use aip_aat::request_proof::add_request_proof;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{
    AccessTokenResponse, AgentList, AgentResponse, CertificateResponse, CreateAccessTokenRequest,
    CreateRegistrationTokenRequest, Discovery, ErrorBody, PublishRevocationsRequest, PublishRevocationsResponse,
    RegisterAgentResponse, RegistrationTokenResponse, StatusRequest, StatusResponse, WhoAmI,
};
use crate::service::StatusKind;

/// `POST /v1/agents` body for `key`: `fields` (name, capabilities, …) plus the public key and
/// a request proof by `key`.
pub fn registration_body(
    key: &dyn Signer,
    mut fields: serde_json::Value,
    now: i64,
) -> Result<serde_json::Value, SignError> {
    fields["public_key"] = serde_json::to_value(key.public_key().to_jwk()).map_err(SignError::backend)?;
    add_request_proof(key, "POST", "/v1/agents", &mut fields, "proof", &["proof"], now)?;
    Ok(fields)
}

/// `POST /v1/agents/{id}/rotate-key` body: the new key proves possession over the body without
/// both proofs, the current key signs the body without its own proof.
pub fn rotation_body(
    current: &dyn Signer,
    new: &dyn Signer,
    agent_id: &AgentId,
    now: i64,
) -> Result<serde_json::Value, SignError> {
    let path = format!("/v1/agents/{agent_id}/rotate-key");
    let mut body = serde_json::json!({
        "new_public_key": serde_json::to_value(new.public_key().to_jwk()).map_err(SignError::backend)?,
    });
    add_request_proof(
        new,
        "POST",
        &path,
        &mut body,
        "new_key_proof",
        &["proof", "new_key_proof"],
        now,
    )?;
    add_request_proof(current, "POST", &path, &mut body, "proof", &["proof"], now)?;
    Ok(body)
}

/// `POST /v1/agents/{id}/certificate` body, with a proof by the current key.
pub fn renewal_body(key: &dyn Signer, agent_id: &AgentId, now: i64) -> Result<serde_json::Value, SignError> {
    let mut body = serde_json::json!({});
    add_request_proof(
        key,
        "POST",
        &format!("/v1/agents/{agent_id}/certificate"),
        &mut body,
        "proof",
        &["proof"],
        now,
    )?;
    Ok(body)
}

/// A request to the registry failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The registry answered with an error.
    #[error("{status}: {error}: {description}")]
    Api {
        /// HTTP status.
        status: u16,
        /// `error` code.
        error: String,
        /// `error_description`.
        description: String,
    },
    /// The registry could not be reached or the exchange failed.
    #[error("cannot reach the registry at {url}: {}", aip_aat::error_chain(source.as_ref()))]
    Transport {
        /// The URL.
        url: String,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The response was not what the API promises.
    #[error("unexpected response from the registry: {0}")]
    Decode(String),
}

/// The registry at a base URL, authenticating with an optional bearer token.
#[derive(Clone, Debug)]
pub struct RegistryClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl RegistryClient {
    /// A client for the registry at `base` (e.g. `http://127.0.0.1:8443`).
    pub fn new(base: &str, token: Option<String>) -> Result<Self, ClientError> {
        Self::with_roots(base, token, None)
    }

    /// As [`RegistryClient::new`], but trusting exactly the PEM CA certificates in `ca_pem` for
    /// TLS instead of the system's roots (for an authority behind a private CA).
    pub fn with_roots(base: &str, token: Option<String>, ca_pem: Option<&[u8]>) -> Result<Self, ClientError> {
        let transport = |e: reqwest::Error| ClientError::Transport {
            url: base.to_owned(),
            source: Box::new(e),
        };
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10));
        if let Some(pem) = ca_pem {
            builder = builder.tls_certs_only(reqwest::Certificate::from_pem_bundle(pem).map_err(transport)?);
        }
        let http = builder.build().map_err(transport)?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    async fn send(&self, builder: reqwest::RequestBuilder, path: &str) -> Result<reqwest::Response, ClientError> {
        let response = builder.send().await.map_err(|e| ClientError::Transport {
            url: format!("{}{path}", self.base),
            source: Box::new(e),
        })?;
        if response.status().is_success() || response.status() == StatusCode::NOT_MODIFIED {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let (error, description) = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => (body.error, body.error_description),
            Err(_) => ("http_error".to_owned(), text.chars().take(200).collect()),
        };
        Err(ClientError::Api {
            status,
            error,
            description,
        })
    }

    async fn json<T: DeserializeOwned>(&self, builder: reqwest::RequestBuilder, path: &str) -> Result<T, ClientError> {
        let response = self.send(builder, path).await?;
        response.json().await.map_err(|e| ClientError::Decode(e.to_string()))
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        self.json(self.request(Method::POST, path).json(body), path).await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.json(self.request(Method::GET, path), path).await
    }

    async fn bytes(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let response = self.send(self.request(Method::GET, path), path).await?;
        Ok(response
            .bytes()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))?
            .to_vec())
    }

    /// `POST` a JSON body to another endpoint of the authority (such as the token issuer's).
    pub async fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.post(path, body).await
    }

    /// `GET` another endpoint of the authority, with query parameters.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Result<T, ClientError> {
        self.json(self.request(Method::GET, path).query(query), path).await
    }

    /// `POST /v1/agents` with a body already carrying its proof.
    pub async fn register_agent(&self, body: &serde_json::Value) -> Result<RegisterAgentResponse, ClientError> {
        self.post("/v1/agents", body).await
    }

    /// `GET /v1/agents/{id}`.
    pub async fn agent(&self, agent_id: &AgentId) -> Result<AgentResponse, ClientError> {
        self.get(&format!("/v1/agents/{agent_id}")).await
    }

    /// `GET /v1/agents`.
    pub async fn agents(
        &self,
        status: Option<&str>,
        after: Option<&AgentId>,
        limit: u32,
    ) -> Result<AgentList, ClientError> {
        let mut query = vec![("limit", limit.to_string())];
        if let Some(status) = status {
            query.push(("status", status.to_owned()));
        }
        if let Some(after) = after {
            query.push(("after", after.to_string()));
        }
        self.json(self.request(Method::GET, "/v1/agents").query(&query), "/v1/agents")
            .await
    }

    /// Suspends, reactivates or revokes an agent.
    pub async fn change_status(
        &self,
        agent_id: &AgentId,
        kind: StatusKind,
        request: &StatusRequest,
    ) -> Result<StatusResponse, ClientError> {
        let verb = match kind {
            StatusKind::Suspend => "suspend",
            StatusKind::Reactivate => "reactivate",
            StatusKind::Revoke => "revoke",
        };
        self.post(&format!("/v1/agents/{agent_id}/{verb}"), request).await
    }

    /// `POST /v1/agents/{id}/rotate-key` with a body carrying both proofs.
    pub async fn rotate_key(
        &self,
        agent_id: &AgentId,
        body: &serde_json::Value,
    ) -> Result<CertificateResponse, ClientError> {
        self.post(&format!("/v1/agents/{agent_id}/rotate-key"), body).await
    }

    /// `POST /v1/agents/{id}/certificate` with a body carrying its proof.
    pub async fn renew_certificate(
        &self,
        agent_id: &AgentId,
        body: &serde_json::Value,
    ) -> Result<CertificateResponse, ClientError> {
        self.post(&format!("/v1/agents/{agent_id}/certificate"), body).await
    }

    /// `POST /v1/registration-tokens`.
    pub async fn create_registration_token(
        &self,
        request: &CreateRegistrationTokenRequest,
    ) -> Result<RegistrationTokenResponse, ClientError> {
        self.post("/v1/registration-tokens", request).await
    }

    /// `POST /v1/access-tokens`.
    pub async fn create_access_token(
        &self,
        request: &CreateAccessTokenRequest,
    ) -> Result<AccessTokenResponse, ClientError> {
        self.post("/v1/access-tokens", request).await
    }

    /// `POST /v1/revocations` (admin).
    pub async fn publish_revocations(
        &self,
        request: &PublishRevocationsRequest,
    ) -> Result<PublishRevocationsResponse, ClientError> {
        self.post("/v1/revocations", request).await
    }

    /// `GET /v1/whoami`: the id and role of the client's token.
    pub async fn whoami(&self) -> Result<WhoAmI, ClientError> {
        self.get("/v1/whoami").await
    }

    /// `GET /v1/crl` (DER).
    pub async fn crl(&self) -> Result<Vec<u8>, ClientError> {
        self.bytes("/v1/crl").await
    }

    /// `GET /v1/jwks`.
    pub async fn jwks(&self) -> Result<Jwks, ClientError> {
        self.get("/v1/jwks").await
    }

    /// `GET /.well-known/aip-configuration`.
    pub async fn discovery(&self) -> Result<Discovery, ClientError> {
        self.get("/.well-known/aip-configuration").await
    }
}
