//! The front door's OpenAPI 3.1 description, from the annotations on its handlers (`routes`):
//! `/mcp` and the protected resource metadata. Printed by `aip-proxy --openapi`; committed as
//! `docs/openapi/proxy.json` (docs/proxy.md, "OpenAPI description").

use aip_api::ErrorBody;
use aip_http::routes::Route;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "aip-proxy Streamable HTTP front door",
        description = "The HTTP API of `aip-proxy --serve ADDR` (in front of `--upstream URL` or `--target \"cmd\"`): MCP over Streamable HTTP at `/mcp`, and the protected resource metadata (RFC 9728) that leads MCP clients to the authority. Errors outside MCP are `{\"error\", \"error_description\"}`; refusals by the policy, revocation included, are JSON-RPC errors inside the session.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        routes::post_message,
        routes::open_stream,
        routes::end_session,
        routes::resource_metadata,
        routes::resource_metadata_at_root,
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "mcp", description = "MCP over Streamable HTTP."),
        (name = "metadata", description = "Protected resource metadata (RFC 9728)."),
    ),
    modifiers(&Security),
)]
struct FrontDoorApi;

/// The front door's description.
pub fn description() -> utoipa::openapi::OpenApi {
    let mut doc = FrontDoorApi::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// The description as printed and committed: pretty JSON, with a final newline.
pub fn description_json() -> String {
    // Serializing a document of strings, maps and numbers cannot fail.
    let mut json = description().to_pretty_json().unwrap_or_default();
    json.push('\n');
    json
}

/// Every method and path the front door routes, for a resource whose path is `/mcp` (another
/// path adds its own well-known metadata URL).
pub fn route_table() -> Vec<Route> {
    routes::own_routes().table()
}

/// The AAT's security scheme.
struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "aat",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("AAT")
                    .description(Some(
                        "The agent's AAT, whose audience is the front door's canonical resource URI: \
                         `Authorization: DPoP <AAT>` with a `DPoP` proof by the agent's key (RFC 9449), \
                         or `Authorization: Bearer <AAT>` only where the policy sets \
                         `aat.require_proof: false`. Without `spec.aat` in the policy no token is needed.",
                    ))
                    .build(),
            ),
        );
    }
}
