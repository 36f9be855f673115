//! Interactive delegation (spec §10 in OAuth form): the authorization-code flow up to the code.
//!
//! An agent registered with redirect URIs sends a person's browser to `GET /oauth/authorize`
//! (RFC 6749 §4.1, OAuth 2.1: PKCE S256 only, `state` required, RFC 8707 `resource` required
//! and single, `scope` = space-separated tool names). The person signs in at a trusted OpenID
//! Connect provider (the authority as relying party, `/oauth/login` → the provider →
//! `/oauth/callback`) or, where enabled, with a user API key, then approves or denies on a
//! consent page (`/oauth/consent`) that shows the agent, the tools it would get (requested ∩
//! the agent's registered capabilities ∩ the user's delegatable tools), those it cannot get,
//! and the audience. Approval sends the browser back to the redirect URI with a short-lived
//! code, `state` and `iss` (RFC 9207); the agent redeems the code at the token endpoint
//! ([`crate::service::Issuer::redeem_code`]).
//!
//! Errors found before the client and its redirect URI are known good are shown as a page and
//! never redirected; later ones go back to the redirect URI with `error`,
//! `error_description`, `state` and `iss`.
//!
//! Nothing is stored while a person signs in: the request, the sign-in's state at the
//! provider, the consent and the code are sealed ([`seal`]) under a key every replica shares,
//! each with an expiry, so any replica can continue what another began. Every form is bound
//! to the browser that began the request: the sealed request carries the SHA-256 of a random
//! cookie (HttpOnly, SameSite=Lax, Secure under TLS) that the browser must present with it.
//!
//! Pages have no scripts and no external assets, and are served with a strict content
//! security policy, `Cache-Control: no-store` and `Referrer-Policy: no-referrer` ([`pages`]).

mod code;
mod pages;

use std::sync::Arc;

use aip_aat::aid::AgentStatus;
use aip_aat::ids::AgentId;
use aip_aat::secret::SecretString;
use aip_aat::token::{AuthMethod, DelegationScope};
use aip_api::checks::{check_name, check_tool_names, redirect_uri_matches};
use aip_api::issuer::{RequestedCapabilities, UserAuthorization};
use aip_db::audit::AuditEntry;
use aip_http::routes::Routes;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use code::{CODE_TTL, CodeGrant, SignedInUser, pkce_value_ok, random_id, s256};
use pages::{error_page, escape, hidden, list, page, security_headers};

use crate::directory::DirectoryAgent;
use crate::forms::{AuthorizeConsentForm, AuthorizeLoginForm};
use crate::oidc::{OidcLogin, OidcProvider};
use crate::relying_party::Endpoints;
use crate::seal::Purpose;
use crate::service::{AuthorizedUser, Issuer, IssuerError, intersect};

/// Longest query string or form body read, in bytes.
const MAX_PARAMS_LEN: usize = 16 * 1024;
/// Longest `state` accepted, in bytes.
const MAX_STATE_LEN: usize = 1024;
/// The browser cookie's name over plain HTTP; under TLS it gets the `__Host-` prefix.
const COOKIE: &str = "aip_browser";

/// The routes of the flow: none unless `[issuer.authorize] enabled`.
pub fn routes(issuer: Arc<Issuer>) -> Routes {
    if !issuer.settings.authorize.enabled {
        return Routes::new();
    }
    own_routes().with_state(issuer)
}

/// The routes of the flow, before their state is given.
pub(crate) fn own_routes() -> Routes<Arc<Issuer>> {
    Routes::new()
        .get("/oauth/authorize", authorize)
        .post("/oauth/login", login)
        .get("/oauth/callback", callback)
        .post("/oauth/consent", consent)
}

// ---------------------------------------------------------------------------------------------
// What travels sealed
// ---------------------------------------------------------------------------------------------

/// A checked authorization request, while the person signs in and consents.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct AuthzRequest {
    agent: String,
    redirect_uri: String,
    state: String,
    challenge: String,
    resource: String,
    /// The tools asked for; `None`: the agent's registered capabilities.
    scope: Option<Vec<String>>,
    /// SHA-256 (hex) of the browser cookie.
    browser: String,
    exp: i64,
}

/// The `state` sent to an identity provider (sealed, so the PKCE verifier stays secret).
#[derive(Serialize, Deserialize)]
struct LoginState {
    request: AuthzRequest,
    provider: usize,
    nonce: String,
    verifier: String,
}

/// What the consent page offers.
#[derive(Serialize, Deserialize)]
struct Consent {
    request: AuthzRequest,
    user: SignedInUser,
    tools: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Parameters, cookies, redirects
// ---------------------------------------------------------------------------------------------

/// Query or form parameters, in order.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(text: &[u8]) -> Result<Self, &'static str> {
        if text.len() > MAX_PARAMS_LEN {
            return Err("The request is too large.");
        }
        Ok(Self(
            form_urlencoded::parse(text)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        ))
    }

    fn form(headers: &HeaderMap, body: &Bytes) -> Result<Self, Refused> {
        let form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("application/x-www-form-urlencoded"));
        if !form {
            return Err(Refused(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "The form was not sent as a form.",
            ));
        }
        Self::parse(body).map_err(|m| Refused(StatusCode::PAYLOAD_TOO_LARGE, m))
    }

    /// The value of `name`: `Err` when it is given more than once (RFC 6749 §3.1).
    fn get(&self, name: &str) -> Result<Option<&str>, String> {
        let mut values = self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str());
        match (values.next(), values.next()) {
            (_, Some(_)) => Err(format!("{name} is given more than once")),
            (value, None) => Ok(value),
        }
    }
}

fn secure(issuer: &Issuer) -> bool {
    issuer.settings.issuer_id.starts_with("https://")
}

fn cookie_name(issuer: &Issuer) -> String {
    if secure(issuer) {
        format!("__Host-{COOKIE}")
    } else {
        COOKIE.to_owned()
    }
}

/// The browser cookie's value, when the request carries a well-formed one.
fn browser_cookie(issuer: &Issuer, headers: &HeaderMap) -> Option<String> {
    let name = cookie_name(issuer);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| v.len() == 43 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

fn digest(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

/// Whether the browser presenting `headers` is the one that began `request`.
fn same_browser(issuer: &Issuer, headers: &HeaderMap, request: &AuthzRequest) -> bool {
    use subtle::ConstantTimeEq as _;
    browser_cookie(issuer, headers).is_some_and(|c| bool::from(digest(&c).as_bytes().ct_eq(request.browser.as_bytes())))
}

/// Opens a sealed request-bound value from a form or the provider, and checks its expiry and
/// browser; the failure as a page.
fn check_bound(issuer: &Issuer, headers: &HeaderMap, request: &AuthzRequest, now: i64) -> Result<(), Refused> {
    if now > request.exp {
        return Err(Refused(
            StatusCode::BAD_REQUEST,
            "This authorization request has expired.",
        ));
    }
    if !same_browser(issuer, headers, request) {
        return Err(Refused(
            StatusCode::FORBIDDEN,
            "This authorization was started in another browser, or its cookie was lost.",
        ));
    }
    Ok(())
}

/// A refusal shown as an error page.
struct Refused(StatusCode, &'static str);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        error_page(self.0, self.1)
    }
}

/// `303 See Other` to `location`.
fn see_other(location: &str, form_targets: &[String]) -> Response {
    let mut headers = security_headers(form_targets);
    match HeaderValue::from_str(location) {
        Ok(value) => {
            headers.insert(header::LOCATION, value);
            (StatusCode::SEE_OTHER, headers).into_response()
        }
        Err(_) => error_page(StatusCode::INTERNAL_SERVER_ERROR, "The redirect could not be made."),
    }
}

/// Back to the client: `redirect_uri` with `params` and `iss` (RFC 9207) added to its query.
fn back(issuer: &Issuer, redirect_uri: &str, params: &[(&str, &str)]) -> Response {
    let Ok(mut url) = reqwest::Url::parse(redirect_uri) else {
        return error_page(StatusCode::BAD_REQUEST, "The redirect URI is not valid.");
    };
    url.query_pairs_mut()
        .extend_pairs(params)
        .append_pair("iss", &issuer.settings.issuer_id);
    see_other(url.as_str(), &[])
}

/// Back to the client with an error (RFC 6749 §4.1.2.1).
fn back_error(issuer: &Issuer, redirect_uri: &str, state: Option<&str>, error: &str, description: &str) -> Response {
    let mut params = vec![("error", error), ("error_description", description)];
    if let Some(state) = state {
        params.push(("state", state));
    }
    back(issuer, redirect_uri, &params)
}

fn origin(url: &str) -> Option<String> {
    reqwest::Url::parse(url)
        .ok()
        .map(|u| u.origin().ascii_serialization())
        .filter(|o| o != "null")
}

/// The agent, if it is registered and active; the failure as a page.
async fn active_agent(issuer: &Issuer, agent_id: &str) -> Result<Arc<DirectoryAgent>, Response> {
    let unknown = || error_page(StatusCode::BAD_REQUEST, "client_id is not a registered application.");
    let id: AgentId = agent_id.parse().map_err(|_| unknown())?;
    let agent = match issuer.directory.agent(&id).await {
        Ok(Some(agent)) => agent,
        Ok(None) => return Err(unknown()),
        Err(e) => {
            tracing::error!(error = ?e, "reading an agent for /oauth/authorize failed");
            return Err(error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "The authority cannot read its registry now; try again.",
            ));
        }
    };
    match agent.status {
        AgentStatus::Active => Ok(agent),
        status => Err(error_page(
            StatusCode::BAD_REQUEST,
            &format!("The application {} is {status} and cannot be authorized.", agent.name),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// GET /oauth/authorize
// ---------------------------------------------------------------------------------------------

#[utoipa::path(
    get,
    path = "/oauth/authorize",
    tag = "oauth",
    summary = "Authorization request",
    description = "RFC 6749 §4.1 authorization request of an agent registered with redirect URIs (only when `[issuer.authorize]` is enabled): PKCE S256 only, `state` required, `resource` (RFC 8707) required and single, `scope` = space-separated tool names. Answers the sign-in page and sets the browser cookie.",
    params(("response_type" = String, Query, description = "`code`."), ("client_id" = String, Query, description = "The agent id."), ("redirect_uri" = String, Query, description = "One of the agent's registered redirect URIs."), ("state" = String, Query, description = "The client's state (at most 1024 bytes)."), ("code_challenge" = String, Query, description = "The PKCE S256 challenge."), ("code_challenge_method" = String, Query, description = "`S256`."), ("resource" = String, Query, description = "The AAT's audience (RFC 8707)."), ("scope" = Option<String>, Query, description = "Tool names, space-separated; without it the agent's registered capabilities.")),
    responses(
        (status = 200, description = "The sign-in page.", body = String, content_type = "text/html; charset=utf-8"),
        (status = 303, description = "Back to the redirect URI with `error`, `error_description`, `state` and `iss`, for an error found once the client and its redirect URI are known good."),
        (status = 400, description = "An error found before the client and its redirect URI are known good, or a form that is not valid: a page, never a redirect.", body = String, content_type = "text/html; charset=utf-8"),
        (status = 503, description = "The agent cannot be read now: a page.", body = String, content_type = "text/html; charset=utf-8"),
    )
)]
pub(crate) async fn authorize(
    State(issuer): State<Arc<Issuer>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let now = issuer.clock.now();
    let params = match Params::parse(query.as_deref().unwrap_or("").as_bytes()) {
        Ok(params) => params,
        Err(m) => return error_page(StatusCode::BAD_REQUEST, m),
    };
    // The client and its redirect URI: until both are known good, errors are pages.
    let client_id = match params.get("client_id") {
        Ok(Some(id)) => id,
        Ok(None) => return error_page(StatusCode::BAD_REQUEST, "The request has no client_id."),
        Err(m) => return error_page(StatusCode::BAD_REQUEST, &m),
    };
    let agent = match active_agent(&issuer, client_id).await {
        Ok(agent) => agent,
        Err(page) => return page,
    };
    let redirect_uri = match params.get("redirect_uri") {
        Ok(Some(uri)) => uri,
        Ok(None) => return error_page(StatusCode::BAD_REQUEST, "The request has no redirect_uri."),
        Err(m) => return error_page(StatusCode::BAD_REQUEST, &m),
    };
    if !agent
        .redirect_uris
        .iter()
        .any(|r| redirect_uri_matches(r, redirect_uri))
    {
        return error_page(
            StatusCode::BAD_REQUEST,
            "redirect_uri is not registered for this application.",
        );
    }
    // From here on, errors go back to the client.
    let state = params
        .get("state")
        .ok()
        .flatten()
        .filter(|s| !s.is_empty() && s.len() <= MAX_STATE_LEN);
    let refuse = |error: &str, description: &str| back_error(&issuer, redirect_uri, state, error, description);
    match check_request(&params, state) {
        Ok(()) => {}
        Err((error, description)) => return refuse(error, &description),
    }
    let (Ok(Some(state)), Ok(Some(challenge)), Ok(Some(resource))) = (
        params.get("state"),
        params.get("code_challenge"),
        params.get("resource"),
    ) else {
        return refuse("invalid_request", "the request is incomplete");
    };
    let scope = match params.get("scope") {
        Ok(None) => None,
        Ok(Some(scope)) => {
            let tools: Vec<String> = scope.split(' ').filter(|t| !t.is_empty()).map(str::to_owned).collect();
            if tools.is_empty() {
                return refuse("invalid_scope", "scope names no tool");
            }
            if let Err(m) = check_tool_names("scope", &tools) {
                return refuse("invalid_scope", &m);
            }
            Some(tools)
        }
        Err(m) => return refuse("invalid_request", &m),
    };

    let (cookie, new_cookie) = match browser_cookie(&issuer, &headers) {
        Some(cookie) => (cookie, false),
        None => match random_cookie() {
            Ok(cookie) => (cookie, true),
            Err(e) => return internal(&e),
        },
    };
    let request = AuthzRequest {
        agent: agent.agent_id.to_string(),
        redirect_uri: redirect_uri.to_owned(),
        state: state.to_owned(),
        challenge: challenge.to_owned(),
        resource: resource.to_owned(),
        scope,
        browser: digest(&cookie),
        exp: now + issuer.settings.authorize.request_lifetime,
    };
    let mut response = sign_in_page(&issuer, &agent, &request, None, StatusCode::OK, now).await;
    if new_cookie {
        let mut value = format!("{}={cookie}; Path=/; HttpOnly; SameSite=Lax", cookie_name(&issuer));
        if secure(&issuer) {
            value.push_str("; Secure");
        }
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

/// A new browser cookie value: 32 random bytes, base64url.
fn random_cookie() -> Result<String, IssuerError> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    aip_aat::ids::fill_random(&mut bytes).map_err(|_| IssuerError::internal(aip_aat::keys::KeyError::Random))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn internal(e: &dyn std::fmt::Debug) -> Response {
    tracing::error!(error = ?e, "the authorization flow failed");
    error_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something failed on the authority's side.",
    )
}

/// The checks of an authorization request once its client and redirect URI are good, in
/// order; the error code and description to send back.
fn check_request(params: &Params, state: Option<&str>) -> Result<(), (&'static str, String)> {
    let invalid = |m: &str| ("invalid_request", m.to_owned());
    for name in [
        "response_type",
        "state",
        "code_challenge",
        "code_challenge_method",
        "scope",
        "nonce",
    ] {
        params.get(name).map_err(|m| invalid(&m))?;
    }
    if state.is_none() {
        return Err(invalid(&format!(
            "state is required (1-{MAX_STATE_LEN} bytes) to protect the client against forged responses"
        )));
    }
    match params.get("response_type") {
        Ok(Some("code")) => {}
        Ok(None) => return Err(invalid("response_type is required")),
        _ => {
            return Err((
                "unsupported_response_type",
                "only response_type=code is supported".into(),
            ));
        }
    }
    match params.get("code_challenge_method") {
        Ok(Some("S256")) => {}
        Ok(None) => {
            return Err(invalid(
                "PKCE is required: send code_challenge with code_challenge_method=S256",
            ));
        }
        _ => return Err(invalid("only code_challenge_method=S256 is supported")),
    }
    match params.get("code_challenge") {
        Ok(Some(challenge)) if challenge.len() == 43 && pkce_value_ok(challenge) => {}
        Ok(None) => return Err(invalid("code_challenge is required (PKCE S256)")),
        _ => {
            return Err(invalid(
                "code_challenge must be the base64url SHA-256 of the code verifier (43 characters)",
            ));
        }
    }
    // RFC 8707: exactly one resource, an absolute URI without fragment.
    let resources: Vec<&str> = params
        .0
        .iter()
        .filter(|(k, _)| k == "resource")
        .map(|(_, v)| v.as_str())
        .collect();
    let resource = match resources.as_slice() {
        [] => {
            return Err((
                "invalid_target",
                "resource is required: the URI of the server the token is for".into(),
            ));
        }
        [resource] => *resource,
        _ => return Err(("invalid_target", "give exactly one resource".into())),
    };
    check_name("resource", resource, 256).map_err(|m| ("invalid_target", m))?;
    match reqwest::Url::parse(resource) {
        Ok(url) if url.fragment().is_none() && !resource.contains('#') => {}
        _ => {
            return Err((
                "invalid_target",
                "resource must be an absolute URI without fragment".into(),
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Sign-in
// ---------------------------------------------------------------------------------------------

fn title_of(agent: &DirectoryAgent) -> String {
    format!("Authorize {}", agent.name)
}

fn describe_agent(agent: &DirectoryAgent) -> String {
    format!(
        "<p>The application <strong>{}</strong> (<code>{}</code>) asks to act on your behalf.</p>",
        escape(&agent.name),
        escape(agent.agent_id.as_str())
    )
}

async fn sign_in_page(
    issuer: &Issuer,
    agent: &DirectoryAgent,
    request: &AuthzRequest,
    error: Option<&str>,
    status: StatusCode,
    now: i64,
) -> Response {
    let sealed = match issuer.sealer.seal(Purpose::Request, request) {
        Ok(sealed) => sealed,
        Err(e) => return internal(&e),
    };
    let action = format!("{}/oauth/login", issuer.settings.issuer_id);
    let mut body = describe_agent(agent);
    body.push_str(&format!(
        "<p>It asks for access to <code>{}</code>. Sign in to see what it would be allowed to do.</p>",
        escape(&request.resource)
    ));
    if let Some(error) = error {
        body.push_str(&format!("<p class=\"error\">{}</p>", escape(error)));
    }
    // The forms post here; the answer may redirect to a provider, or back to the client.
    let mut targets: Vec<String> = origin(&issuer.settings.issuer_id)
        .into_iter()
        .chain(origin(&request.redirect_uri))
        .collect();
    for (index, provider) in issuer.settings.oidc.iter().enumerate() {
        let Some(login) = &provider.login else { continue };
        match issuer.relying_party.endpoints(provider, now).await {
            Ok(endpoints) => targets.extend(origin(&endpoints.authorization_endpoint)),
            Err(_) => targets.extend(origin(&provider.issuer)),
        }
        body.push_str(&format!(
            "<form method=\"post\" action=\"{}\">{}{}<button type=\"submit\">Sign in with {}</button></form>",
            escape(&action),
            hidden("request", &sealed),
            hidden("provider", &index.to_string()),
            escape(&login.display_name)
        ));
    }
    if issuer.settings.authorize.api_key_login {
        body.push_str(&format!(
            "<form method=\"post\" action=\"{}\">{}<p><label>User API key<br>\
             <input type=\"password\" name=\"api_key\" autocomplete=\"off\" required></label></p>\
             <button type=\"submit\">Sign in with an API key</button></form>",
            escape(&action),
            hidden("request", &sealed)
        ));
    }
    page(status, &title_of(agent), &body, &targets)
}

/// A form the authority wrote itself (sign-in, consent): its parameters and the sealed value it
/// carries for `purpose` (in the member `request` or `consent`), or the page refusing it.
fn sealed_form<T: serde::de::DeserializeOwned>(
    issuer: &Issuer,
    headers: &HeaderMap,
    body: &Bytes,
    purpose: Purpose,
) -> Result<(Params, T), Box<Response>> {
    let params = Params::form(headers, body).map_err(|refused| Box::new(refused.into_response()))?;
    let (member, what) = match purpose {
        Purpose::Consent => ("consent", "This consent form is not valid."),
        _ => ("request", "This sign-in form is not valid."),
    };
    let sealed = params
        .get(member)
        .ok()
        .flatten()
        .and_then(|sealed| issuer.sealer.open::<T>(purpose, sealed))
        .ok_or_else(|| Box::new(error_page(StatusCode::BAD_REQUEST, what)))?;
    Ok((params, sealed))
}

/// `POST /oauth/login`: sign in with an API key, or go to an identity provider.
#[utoipa::path(
    post,
    path = "/oauth/login",
    tag = "oauth",
    summary = "Sign in",
    description = "The sign-in form: with a user API key (where enabled), or on to a trusted OpenID Connect provider. Bound to the browser that began the request.",
    request_body(content = AuthorizeLoginForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The consent page (API key sign-in), or the sign-in page again with an error.", body = String, content_type = "text/html; charset=utf-8"),
        (status = 303, description = "On to the identity provider's authorization endpoint."),
        (status = 400, description = "An error found before the client and its redirect URI are known good, or a form that is not valid: a page, never a redirect.", body = String, content_type = "text/html; charset=utf-8"),
        (status = 401, description = "Sign-in with the API key failed: the sign-in page again.", body = String, content_type = "text/html; charset=utf-8"),
        (status = 403, description = "The form came from another browser than the one that began the request: a page.", body = String, content_type = "text/html; charset=utf-8"),
        (status = 413, description = "The form is too long: a page.", body = String, content_type = "text/html; charset=utf-8"),
        (status = 415, description = "The body is not `application/x-www-form-urlencoded`: a page.", body = String, content_type = "text/html; charset=utf-8"),
        (status = 503, description = "The database or the identity provider is unavailable: a page.", body = String, content_type = "text/html; charset=utf-8"),
    )
)]
pub(crate) async fn login(State(issuer): State<Arc<Issuer>>, headers: HeaderMap, body: Bytes) -> Response {
    let now = issuer.clock.now();
    let (params, request) = match sealed_form::<AuthzRequest>(&issuer, &headers, &body, Purpose::Request) {
        Ok(form) => form,
        Err(refused) => return *refused,
    };
    if let Err(refused) = check_bound(&issuer, &headers, &request, now) {
        return refused.into_response();
    }
    let agent = match active_agent(&issuer, &request.agent).await {
        Ok(agent) => agent,
        Err(page) => return page,
    };
    match (params.get("api_key"), params.get("provider")) {
        (Ok(Some(api_key)), Ok(None)) => {
            if !issuer.settings.authorize.api_key_login {
                return error_page(StatusCode::FORBIDDEN, "Sign-in with an API key is not enabled.");
            }
            let authorization = UserAuthorization::ApiKey {
                token: SecretString::new(api_key),
            };
            match issuer.authorize_user(&authorization, None, now).await {
                Ok(user) => consent_page(&issuer, &agent, request, user),
                Err(IssuerError::Token { description, .. }) => {
                    // 401, so the authority's limits count it as a failed authentication.
                    let message = format!("Sign-in failed: {description}.");
                    sign_in_page(&issuer, &agent, &request, Some(&message), StatusCode::UNAUTHORIZED, now).await
                }
                Err(e) => internal(&e),
            }
        }
        (Ok(None), Ok(Some(index))) => to_provider(&issuer, request, index, now).await,
        _ => error_page(StatusCode::BAD_REQUEST, "This sign-in form is not valid."),
    }
}

/// The provider configured for sign-in at `index`, with its login settings and its endpoints
/// (from its discovery document), or the page that says why there is none.
async fn sign_in_provider(
    issuer: &Issuer,
    index: usize,
    now: i64,
) -> Result<(&OidcProvider, &OidcLogin, Arc<Endpoints>), Box<Response>> {
    let Some((provider, login)) = issuer
        .settings
        .oidc
        .get(index)
        .and_then(|p| p.login.as_ref().map(|l| (p, l)))
    else {
        return Err(Box::new(error_page(
            StatusCode::BAD_REQUEST,
            "No such identity provider.",
        )));
    };
    match issuer.relying_party.endpoints(provider, now).await {
        Ok(endpoints) => Ok((provider, login, endpoints)),
        Err(e) => Err(Box::new(error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("Sign-in is unavailable: {e}."),
        ))),
    }
}

/// Sends the browser to the provider's authorization endpoint, with `state`, `nonce` and
/// PKCE (OpenID Connect Core §3.1.2.1).
async fn to_provider(issuer: &Issuer, request: AuthzRequest, index: &str, now: i64) -> Response {
    let Ok(index) = index.parse::<usize>() else {
        return error_page(StatusCode::BAD_REQUEST, "No such identity provider.");
    };
    let (_, login, endpoints) = match sign_in_provider(issuer, index, now).await {
        Ok(found) => found,
        Err(page) => return *page,
    };
    let (nonce, verifier) = match (random_id(), random_cookie()) {
        (Ok(nonce), Ok(verifier)) => (nonce, verifier),
        (Err(e), _) | (_, Err(e)) => return internal(&e),
    };
    let challenge = s256(&verifier);
    let state = LoginState {
        request,
        provider: index,
        nonce,
        verifier,
    };
    let sealed = match issuer.sealer.seal(Purpose::Login, &state) {
        Ok(sealed) => sealed,
        Err(e) => return internal(&e),
    };
    let Ok(mut url) = reqwest::Url::parse(&endpoints.authorization_endpoint) else {
        return error_page(StatusCode::SERVICE_UNAVAILABLE, "Sign-in is unavailable.");
    };
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &login.client_id)
        .append_pair("redirect_uri", &callback_uri(issuer))
        .append_pair("scope", &login.scope)
        .append_pair("state", &sealed)
        .append_pair("nonce", &state.nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    see_other(url.as_str(), &[])
}

fn callback_uri(issuer: &Issuer) -> String {
    format!("{}/oauth/callback", issuer.settings.issuer_id)
}

/// `GET /oauth/callback`: the provider's answer.
#[utoipa::path(
    get,
    path = "/oauth/callback",
    tag = "oauth",
    summary = "Identity provider callback",
    description = "Where the OpenID Connect provider sends the browser back: the authority, as relying party, redeems the provider's code and shows the consent page.",
    params(("code" = Option<String>, Query, description = "The provider's authorization code."), ("state" = String, Query, description = "The sealed sign-in state."), ("error" = Option<String>, Query, description = "The provider's error, if it refused."), ("iss" = Option<String>, Query, description = "The provider's issuer (RFC 9207).")),
    responses(
        (status = 200, description = "The consent page.", body = String, content_type = "text/html; charset=utf-8"),
        (status = 400, description = "An error found before the client and its redirect URI are known good, or a form that is not valid: a page, never a redirect.", body = String, content_type = "text/html; charset=utf-8"),
        (status = 502, description = "The provider could not be reached or its answer is not valid: a page.", body = String, content_type = "text/html; charset=utf-8"),
        (status = 401, description = "The provider's ID token was refused: a page.", body = String, content_type = "text/html; charset=utf-8"),
        (status = 503, description = "Sign-in is unavailable: a page.", body = String, content_type = "text/html; charset=utf-8"),
    )
)]
pub(crate) async fn callback(
    State(issuer): State<Arc<Issuer>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let now = issuer.clock.now();
    let params = match Params::parse(query.as_deref().unwrap_or("").as_bytes()) {
        Ok(params) => params,
        Err(m) => return error_page(StatusCode::BAD_REQUEST, m),
    };
    let Some(login_state) = params
        .get("state")
        .ok()
        .flatten()
        .and_then(|sealed| issuer.sealer.open::<LoginState>(Purpose::Login, sealed))
    else {
        return error_page(StatusCode::BAD_REQUEST, "This sign-in response is not valid.");
    };
    let request = login_state.request;
    if let Err(refused) = check_bound(&issuer, &headers, &request, now) {
        return refused.into_response();
    }
    let (provider, login, endpoints) = match sign_in_provider(&issuer, login_state.provider, now).await {
        Ok(found) => found,
        Err(page) => return *page,
    };
    // RFC 9207: the response must come from the provider the browser was sent to.
    match params.get("iss") {
        Ok(Some(iss)) if iss == provider.issuer => {}
        Ok(None) if !endpoints.sends_iss => {}
        _ => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "The sign-in response does not come from the identity provider it was sent to.",
            );
        }
    }
    if let Ok(Some(error)) = params.get("error") {
        let error: String = error
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        let description = format!("the sign-in at the identity provider did not complete ({error})");
        return back_error(
            &issuer,
            &request.redirect_uri,
            Some(&request.state),
            "access_denied",
            &description,
        );
    }
    let Ok(Some(code)) = params.get("code") else {
        return error_page(StatusCode::BAD_REQUEST, "The sign-in response has no code.");
    };
    let id_token = match issuer
        .relying_party
        .exchange(
            provider,
            login,
            &endpoints,
            code,
            &login_state.verifier,
            &callback_uri(&issuer),
        )
        .await
    {
        Ok(token) => token,
        Err(e) => return error_page(StatusCode::BAD_GATEWAY, &format!("Sign-in failed: {e}.")),
    };
    let identity = match issuer
        .oidc
        .verify_login(
            id_token.expose(),
            &provider.issuer,
            &login.client_id,
            &login_state.nonce,
            now,
        )
        .await
    {
        Ok(identity) => identity,
        Err(e) => {
            tracing::info!(issuer = %provider.issuer, error = %e, "a sign-in's ID token was refused");
            // 401, so the authority's limits count it as a failed authentication.
            return error_page(StatusCode::UNAUTHORIZED, &format!("Sign-in failed: {e}."));
        }
    };
    let agent = match active_agent(&issuer, &request.agent).await {
        Ok(agent) => agent,
        Err(page) => return page,
    };
    let user = AuthorizedUser {
        user_id: identity.user_id,
        method: AuthMethod::Oidc,
        auth_time: identity.auth_time,
        tools: identity.delegatable_tools,
        scope: DelegationScope::Tools,
    };
    consent_page(&issuer, &agent, request, user)
}

// ---------------------------------------------------------------------------------------------
// Consent
// ---------------------------------------------------------------------------------------------

/// The consent page for `user`, or an error back to the client when nothing can be granted.
fn consent_page(issuer: &Issuer, agent: &DirectoryAgent, request: AuthzRequest, user: AuthorizedUser) -> Response {
    let requested = request.scope.as_ref().map(|tools| RequestedCapabilities {
        tools: tools.clone(),
        ..RequestedCapabilities::default()
    });
    let (granted, denied) = intersect(requested.as_ref(), &agent.capabilities, Some(&user.tools));
    if granted.is_empty() {
        return back_error(
            issuer,
            &request.redirect_uri,
            Some(&request.state),
            "invalid_scope",
            "none of the requested tools can be granted: they are not among the application's registered tools \
             or the tools this user may delegate",
        );
    }
    let mut body = describe_agent(agent);
    body.push_str(&format!(
        "<p>Signed in as <strong>{}</strong>.</p>\
         <p>Audience: the token would be valid at <code>{}</code>.</p>\
         <h2>Tools it would be allowed to use</h2>{}",
        escape(&user.user_id),
        escape(&request.resource),
        list(&granted)
    ));
    if !denied.is_empty() {
        body.push_str(&format!(
            "<h2>Asked for, but cannot be granted</h2>{}\
             <p class=\"muted\">Not among the application's registered tools, or not among the tools you may delegate.</p>",
            list(&denied)
        ));
    }
    let consent = Consent {
        request,
        user: user.into(),
        tools: granted,
    };
    let sealed = match issuer.sealer.seal(Purpose::Consent, &consent) {
        Ok(sealed) => sealed,
        Err(e) => return internal(&e),
    };
    body.push_str(&format!(
        "<form method=\"post\" action=\"{}/oauth/consent\">{}\
         <button type=\"submit\" name=\"decision\" value=\"approve\">Approve</button>\
         <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form>",
        escape(&issuer.settings.issuer_id),
        hidden("consent", &sealed)
    ));
    // The answer redirects to the client: its origin must be a permitted form target.
    let targets: Vec<String> = origin(&consent.request.redirect_uri)
        .into_iter()
        .chain(origin(&issuer.settings.issuer_id))
        .collect();
    page(StatusCode::OK, &title_of(agent), &body, &targets)
}

/// `POST /oauth/consent`: the person's decision.
#[utoipa::path(
    post,
    path = "/oauth/consent",
    tag = "oauth",
    summary = "Consent",
    description = "The person's decision. Approval sends the browser back to the redirect URI with a short-lived code, `state` and `iss` (RFC 9207); denial with `error=access_denied`.",
    request_body(content = AuthorizeConsentForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Back to the redirect URI with the code (or the error), `state` and `iss`."),
        (status = 400, description = "An error found before the client and its redirect URI are known good, or a form that is not valid: a page, never a redirect.", body = String, content_type = "text/html; charset=utf-8"),
        (status = 403, description = "The form came from another browser than the one that began the request: a page.", body = String, content_type = "text/html; charset=utf-8"),
        (status = 413, description = "The form is too long: a page.", body = String, content_type = "text/html; charset=utf-8"),
        (status = 415, description = "The body is not `application/x-www-form-urlencoded`: a page.", body = String, content_type = "text/html; charset=utf-8"),
        (status = 503, description = "The database or the identity provider is unavailable: a page.", body = String, content_type = "text/html; charset=utf-8"),
    )
)]
pub(crate) async fn consent(State(issuer): State<Arc<Issuer>>, headers: HeaderMap, body: Bytes) -> Response {
    let now = issuer.clock.now();
    let (params, consent) = match sealed_form::<Consent>(&issuer, &headers, &body, Purpose::Consent) {
        Ok(form) => form,
        Err(refused) => return *refused,
    };
    let request = &consent.request;
    if let Err(refused) = check_bound(&issuer, &headers, request, now) {
        return refused.into_response();
    }
    let refuse = |error: &str, description: &str| {
        back_error(&issuer, &request.redirect_uri, Some(&request.state), error, description)
    };
    match params.get("decision") {
        Ok(Some("approve")) => {}
        Ok(Some("deny")) => return refuse("access_denied", "the user denied the request"),
        _ => return error_page(StatusCode::BAD_REQUEST, "This consent form is not valid."),
    }
    let agent = match active_agent(&issuer, &request.agent).await {
        Ok(agent) => agent,
        Err(page) => return page,
    };
    // The agent's capabilities may have changed since the page was shown.
    let offered = RequestedCapabilities {
        tools: consent.tools.clone(),
        ..RequestedCapabilities::default()
    };
    let (tools, _) = intersect(Some(&offered), &agent.capabilities, None);
    if tools.is_empty() {
        return refuse("invalid_scope", "none of the consented tools can be granted any more");
    }
    let grant = match random_id() {
        Ok(id) => CodeGrant {
            id,
            agent: request.agent.clone(),
            redirect_uri: request.redirect_uri.clone(),
            challenge: request.challenge.clone(),
            user: consent.user.clone(),
            tools,
            audience: request.resource.clone(),
            exp: now + CODE_TTL,
        },
        Err(e) => return internal(&e),
    };
    let code = match issuer.issue_code(&grant) {
        Ok(code) => code,
        Err(e) => return internal(&e),
    };
    let entry = AuditEntry {
        actor: format!("user:{}", grant.user.id),
        action: "authorization.consent",
        subject: request.agent.clone(),
        details: json!({
            "agent_id": request.agent,
            "user_id": grant.user.id,
            "auth_method": grant.user.method,
            "tools": grant.tools,
            "audience": grant.audience,
            "redirect_uri": grant.redirect_uri,
            "code_expires_at": grant.exp,
        }),
    };
    if let Err(e) = issuer.ledger.audit(entry, now).await {
        tracing::error!(error = ?e, "could not audit a consent");
        return error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "The authority cannot record the consent now; try again.",
        );
    }
    back(
        &issuer,
        &request.redirect_uri,
        &[("code", code.as_str()), ("state", request.state.as_str())],
    )
}
