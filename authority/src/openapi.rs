//! The authority's OpenAPI 3.1 description: the registry's and the token issuer's routes as
//! their handlers' annotations describe them, `/ready` and `/openapi.json`, the security
//! schemes, and the answers the authority's edge gives on any route (`413` for a body past
//! the limit, `429` past a rate limit). Served unauthenticated at [`OPENAPI_PATH`]; committed
//! as `docs/openapi/authority.json` (docs/registry.md, "OpenAPI description").

use std::sync::OnceLock;

use aip_api::ErrorBody;
use aip_http::routes::{Route, Routes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, ObjectBuilder, RefOr, Type};
use utoipa::{Modify, OpenApi, PartialSchema as _, ToSchema as _};

use crate::ready;

/// Where the description is served.
pub const OPENAPI_PATH: &str = "/openapi.json";

/// Paths whose requests the `[rate_limits]` count besides failed authentications
/// (`rate_limit`): they may answer `429` whatever their outcome.
const RATE_LIMITED: &[&str] = &["/v1/agents", "/v1/challenge", "/v1/token", "/oauth/token"];

/// The interactive flow's paths, which answer errors as pages (described on each).
const PAGES: &[&str] = &["/oauth/authorize", "/oauth/login", "/oauth/callback", "/oauth/consent"];

#[derive(OpenApi)]
#[openapi(
    info(
        title = "AIP identity authority",
        description = "The HTTP API of an AIP identity authority (`aip-ca serve`): the registry (agents, certificates, credentials, revocation publication) and the token issuer (AATs, its OAuth 2.1 face) on one listener. Errors are `{\"error\", \"error_description\"}` with the status given; a 401 carries `WWW-Authenticate`. JSON request bodies are parsed strictly (unknown members refused) and limited to 64 KiB.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(ready::ready, openapi_json),
    components(schemas(ErrorBody)),
    modifiers(&Edge),
)]
struct AuthorityApi;

/// The authority's description.
pub fn description() -> utoipa::openapi::OpenApi {
    let mut doc = AuthorityApi::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc.merge(aip_registry::http::openapi::RegistryApi::openapi());
    doc.merge(aip_issuer::openapi::IssuerApi::openapi());
    Edge.modify(&mut doc);
    doc
}

/// The description as served and committed: pretty JSON, with a final newline.
pub fn description_json() -> String {
    // Serializing a document of strings, maps and numbers cannot fail.
    let mut json = description().to_pretty_json().unwrap_or_default();
    json.push('\n');
    json
}

/// The route of the description, before it is merged with the others.
pub(crate) fn routes() -> Routes {
    Routes::new().get(OPENAPI_PATH, openapi_json)
}

/// Every method and path the authority routes: the registry's, the issuer's (its interactive
/// flow's included, which `[issuer.authorize]` enables), `/ready` and this description.
pub fn route_table() -> Vec<Route> {
    let mut table = aip_registry::http::route_table();
    table.extend(aip_issuer::http::route_table());
    table.extend(ready::own_routes().table());
    table.extend(routes().table());
    table.sort();
    table
}

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "service",
    summary = "This description",
    description = "The authority's OpenAPI 3.1 description. No authentication.",
    responses((status = 200, description = "The description.", body = Object, content_type = "application/json"))
)]
pub(crate) async fn openapi_json() -> Response {
    static JSON: OnceLock<String> = OnceLock::new();
    let json = JSON.get_or_init(description_json);
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        json.as_str(),
    )
        .into_response()
}

/// The security schemes, and the answers of the authority's edge on the operations they apply
/// to.
struct Edge;

impl Modify for Edge {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "accessToken",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An access token (`aip-ca access-token create`) as `Authorization: Bearer`: \
                         `admin` may do everything, `reader` may read agents and revocation data.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "registrationToken",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A registration token (`aip-ca registration-token create`) as \
                         `Authorization: Bearer`: registers agents, a limited number of times.",
                    ))
                    .build(),
            ),
        );
        components
            .schemas
            .entry(ErrorBody::name().into_owned())
            .or_insert_with(ErrorBody::schema);
        for (path, item) in doc.paths.paths.iter_mut() {
            let rate_limited = RATE_LIMITED.contains(&path.as_str());
            let pages = PAGES.contains(&path.as_str());
            for operation in [&mut item.get, &mut item.put, &mut item.post, &mut item.delete]
                .into_iter()
                .flatten()
            {
                edge_answers(operation, rate_limited, pages);
            }
        }
    }
}

/// `500` on an operation that answers errors in JSON; `413` on one with a body, `415` on one
/// with a JSON body; `429` where a limit may apply: a rate-limited path, or
/// one that can answer `401` (failed authentications are counted).
fn edge_answers(operation: &mut Operation, rate_limited: bool, pages: bool) {
    let responses = &mut operation.responses.responses;
    let refuses = responses.keys().any(|status| status.starts_with('4'));
    if refuses && !pages && !responses.contains_key("500") {
        responses.insert(
            "500".into(),
            RefOr::T(
                error_answer("Something failed on the server's side (`server_error`); details are logged, never sent.")
                    .build(),
            ),
        );
    }
    if operation.request_body.is_some() && !responses.contains_key("413") {
        responses.insert(
            "413".into(),
            RefOr::T(error_answer("The body is longer than 64 KiB (`invalid_request`).").build()),
        );
    }
    let json_body = operation
        .request_body
        .as_ref()
        .is_some_and(|body| body.content.contains_key("application/json"));
    if json_body && !responses.contains_key("415") {
        responses.insert(
            "415".into(),
            RefOr::T(error_answer("The body is not declared `application/json` (`invalid_request`).").build()),
        );
    }
    if (rate_limited || responses.contains_key("401")) && !responses.contains_key("429") {
        let answer = error_answer(
            "Past a rate limit of `[rate_limits]` (`rate_limited`): per client address, per \
             credential or agent, or of failed authentications.",
        )
        .header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::Integer))
                .description(Some("Seconds to wait before trying again."))
                .build(),
        );
        responses.insert("429".into(), RefOr::T(answer.build()));
    }
}

fn error_answer(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                ErrorBody::name(),
            ))))
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_operation_has_an_id_and_an_answer() {
        let doc = description();
        assert!(matches!(doc.openapi, utoipa::openapi::OpenApiVersion::Version31));
        for (path, item) in &doc.paths.paths {
            for operation in [&item.get, &item.put, &item.post, &item.delete].into_iter().flatten() {
                assert!(operation.operation_id.is_some(), "{path}");
                assert!(!operation.responses.responses.is_empty(), "{path}");
            }
        }
    }
}
