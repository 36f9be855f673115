//! The secrets the issuer hands out: user API keys and refresh tokens, shown once and stored
//! as digests.

use aip_aat::clock::Clock;
use aip_aat::ids::Jti;
use aip_aat::secret::{SecretString, digest, random_secret};

use super::error::IssuerError;

/// Prefix of user API keys.
pub const USER_KEY_PREFIX: &str = "aip_uk_";
/// Prefix of refresh tokens.
pub const REFRESH_TOKEN_PREFIX: &str = "aip_rf_";

pub(super) fn random_token(prefix: &str) -> Result<SecretString, IssuerError> {
    random_secret(prefix).map_err(IssuerError::internal)
}

/// A new refresh token: [`REFRESH_TOKEN_PREFIX`], a UUID v7 (public and ordered by time), `.`,
/// then 256 random bits.
pub(super) fn new_refresh_token(clock: &dyn Clock) -> Result<SecretString, IssuerError> {
    let id = Jti::time_ordered(clock).map_err(IssuerError::internal)?;
    random_token(&format!("{REFRESH_TOKEN_PREFIX}{id}."))
}

/// What the database stores for a refresh token, and looks it up by: the token's time-ordered
/// id, `.`, and the SHA-256 of the whole token. New tokens thus land at one end of the table's
/// index instead of on a random page of it. Text without an id (such as a token issued
/// before ids were added) is keyed by its digest alone.
pub(super) fn refresh_key(token: &str) -> String {
    match token
        .strip_prefix(REFRESH_TOKEN_PREFIX)
        .and_then(|rest| rest.split_once('.'))
    {
        Some((id, _)) => format!("{id}.{}", digest(token)),
        None => digest(token),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_are_keyed_in_time_order() {
        let first = new_refresh_token(&aip_aat::clock::SystemClock).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = new_refresh_token(&aip_aat::clock::SystemClock).unwrap();
        let (a, b) = (refresh_key(first.expose()), refresh_key(second.expose()));
        assert!(a < b, "a later token must sort after an earlier one");
        // The key holds the public id and a digest of the whole token, never the secret.
        let secret = first.expose().rsplit_once('.').unwrap().1;
        assert_eq!(secret.len(), 43);
        assert!(!a.contains(secret));
        assert_eq!(a.split_once('.').unwrap().1, digest(first.expose()));
        // Any change to the token changes its key.
        let mut altered = first.expose().to_owned();
        altered.pop();
        altered.push(if first.expose().ends_with('A') { 'B' } else { 'A' });
        assert_ne!(refresh_key(&altered), a);
        // Text without an id is keyed by its digest alone.
        assert_eq!(refresh_key("aip_rf_unknown"), digest("aip_rf_unknown"));
    }
}
