//! The registry's part of the authority's OpenAPI description, from the annotations on its
//! handlers: `aip-authority` merges it with the token issuer's.

use utoipa::OpenApi;

use super::{agents, credentials, publication, service, stream};

/// The registry's routes, described.
#[derive(OpenApi)]
#[openapi(
    paths(
        agents::register,
        agents::list_agents,
        agents::agent,
        agents::delete_agent,
        agents::rotate_key,
        agents::set_redirect_uris,
        agents::renew_certificate,
        agents::suspend,
        agents::reactivate,
        agents::revoke_agent,
        credentials::create_registration_token,
        credentials::list_registration_tokens,
        credentials::revoke_registration_token,
        credentials::create_access_token,
        credentials::list_access_tokens,
        credentials::revoke_access_token,
        credentials::whoami,
        publication::jwks,
        publication::crl_der,
        publication::crl_pem,
        publication::issuer_crl,
        publication::revocations,
        publication::publish_revocations,
        publication::revocations_jws,
        publication::discovery,
        stream::revocation_stream,
        service::health,
        service::metrics_text,
    ),
    tags(
        (name = "agents", description = "Agent registration, records, keys, certificates and status."),
        (name = "credentials", description = "Access tokens and registration tokens."),
        (name = "publication", description = "Keys, certificate revocation lists, revocation lists and events, discovery."),
        (name = "service", description = "Liveness, readiness, metrics and this description."),
    )
)]
pub struct RegistryApi;
