//! The front door's part of the proxy's OpenAPI description ([`crate::openapi`]): `/mcp` and
//! the protected resource metadata, from the annotations on their handlers (`routes`), the
//! AAT's security scheme, and the table of the routes the front door serves.

use aip_api::ErrorBody;
use aip_http::routes::Route;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::routes;

/// The front door's operations, their schemas and tags.
#[derive(OpenApi)]
#[openapi(
    paths(
        routes::post_message,
        routes::open_stream,
        routes::end_session,
        routes::resource_metadata,
        routes::resource_metadata_at_root,
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "mcp", description = "`--serve` front door: MCP over Streamable HTTP."),
        (name = "metadata", description = "`--serve` front door: protected resource metadata (RFC 9728)."),
    ),
    modifiers(&Security),
)]
pub(crate) struct FrontDoorApi;

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
