//! The token issuer's part of the authority's OpenAPI description, from the annotations on
//! its handlers (`http`, `http::oauth`, `authorize`): `aip-authority` merges it with the
//! registry's.

use utoipa::OpenApi;

use crate::authorize;
use crate::http::{self, oauth};

/// The token issuer's routes, described.
#[derive(OpenApi)]
#[openapi(
    paths(
        http::challenge,
        http::token,
        http::revoke,
        http::create_user,
        http::list_users,
        oauth::metadata,
        oauth::token,
        oauth::introspect,
        oauth::revoke,
        authorize::authorize,
        authorize::login,
        authorize::callback,
        authorize::consent,
    ),
    tags(
        (name = "issuer", description = "Challenges, AATs, revocation and users (spec 9)."),
        (name = "oauth", description = "The issuer's OAuth 2.1 face: metadata, token, introspection, revocation and the interactive authorization-code flow."),
    )
)]
pub struct IssuerApi;
