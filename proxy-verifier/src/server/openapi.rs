//! The HTTP API's part of the proxy's OpenAPI description ([`crate::openapi`]): the operations
//! of `aip-proxy --listen ADDR`, from the annotations on their handlers, the admin token's
//! security scheme, and the table of the routes the router serves.

use aip_api::ErrorBody;
use aip_http::routes::Route;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{hitl, own_routes, status, tools, validate};

/// The operations of the HTTP API, their schemas and tags.
#[derive(OpenApi)]
#[openapi(
    paths(
        status::health,
        status::metrics_text,
        validate::validate,
        hitl::list_holds,
        hitl::approve,
        hitl::deny,
        tools::accept,
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "status", description = "`--listen` HTTP API: health and Prometheus metrics, unauthenticated."),
        (name = "validation", description = "`--listen` HTTP API: a tool call evaluated with the policy in force, without making it."),
        (name = "approvals", description = "`--listen` HTTP API: the calls held for a human's answer (`action: ask`)."),
        (name = "tools", description = "`--listen` HTTP API: accepting a tool that changed since it was first listed."),
    ),
    modifiers(&AdminSecurity),
)]
pub(crate) struct HttpApi;

/// Every method and path the HTTP API routes.
pub fn route_table() -> Vec<Route> {
    own_routes().table()
}

/// The admin token's security scheme.
struct AdminSecurity;

impl Modify for AdminSecurity {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "adminToken",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The `--listen` HTTP API's admin token as `Authorization: Bearer`: the secret of \
                         `AIP_PROXY_TOKEN` (at least 32 printable ASCII characters), or else of the token \
                         file (`--token-file`, created with a random 32-byte hex secret when missing). \
                         Only `/health` and `/metrics` go without it.",
                    ))
                    .build(),
            ),
        );
    }
}
