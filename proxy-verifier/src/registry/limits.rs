//! The link's bounds and the timeouts more than one of its parts needs.

use std::time::Duration;

/// Largest JWKS accepted, from the registry or from a file.
pub const MAX_JWKS_BYTES: usize = 1 << 20;
/// Largest revocation list accepted, as JSON or signed.
pub const MAX_LIST_BYTES: usize = aip_aat::revocation::MAX_SIGNED_LIST_LEN;
/// Most issuer keys a key set may hold.
pub const MAX_KEYS: usize = 64;
/// Shortest time between two key refreshes caused by unknown `kid`s.
pub const KID_REFRESH_GAP: Duration = Duration::from_secs(5);
/// Longest a caller waits for the registry (an unknown `kid`, an `online` check).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Timeout of the link's own requests (first load, polls, key refreshes, stream connects).
pub(super) const BACKGROUND_TIMEOUT: Duration = Duration::from_secs(15);
