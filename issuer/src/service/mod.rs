//! The issuer's operations, grouped by concern:
//!
//! - [`state`]: the [`Issuer`] itself, challenges, and its background work;
//! - [`grant`]: `POST /v1/token` — the request's checks, then the grant;
//! - [`users`]: user authorization (API keys, OpenID Connect, loopback users) and API-key
//!   users;
//! - [`refresh`]: the `aat_refresh` grant, with refresh-token rotation and reuse detection;
//! - [`mint`]: minting an AAT, recording it through the ledger, auditing denials;
//! - [`revocation`]: revoking tokens, sessions, users and agents;
//! - [`oauth`]: the OAuth 2.1 face: `POST /oauth/token` (client authentication by
//!   `private_key_jwt`, DPoP, its grants), introspection and revocation;
//! - [`capabilities`] and [`tokens`]: capability intersection, and the secrets handed out.
//!
//! Order of checks for a token request: the body's shape, the agent's existence, the proof of
//! possession (challenge, signature), and only then the agent's status, the user and the
//! capabilities. So an unauthenticated caller learns no more than whether an agent id exists;
//! denials after a valid proof are written to the audit log, earlier failures only to the
//! service log and metrics (no one can fill the audit log without an agent key).
//!
//! HTTP lives in [`crate::http`].

mod capabilities;
mod error;
mod grant;
mod mint;
mod oauth;
mod refresh;
mod revocation;
mod state;
mod tokens;
mod users;

pub use capabilities::intersect;
pub use error::IssuerError;
pub use oauth::{AUTHORIZE_PATH, INTROSPECT_PATH, METADATA_PATH, OAuthForm, REVOKE_PATH, TOKEN_PATH};
pub use state::Issuer;
pub use tokens::{REFRESH_TOKEN_PREFIX, USER_KEY_PREFIX};
pub(crate) use users::AuthorizedUser;
